package store

// Instances sharing one PostgreSQL database. Each Store is an instance,
// named by Instance. An instance is live while its row is in the
// instances table: it renews the row's lease before it ends
// (RenewInstance); a stopped instance deletes its row (LeaveInstances),
// and any instance deletes the rows whose lease ended (ReapInstances).
// What a dead instance held is free once its row is gone, never before:
// the row's deletion is what orders a takeover after the holder's last
// renewal (a renewal finds no row and tells its instance to let go).
//
// An instance holds:
//   - the outbox rows it wrote (outbox.owner): only its streams send
//     them, oldest first, so a user's stanzas keep their order; when the
//     writer is gone, a live instance adopts them (AdoptStanzas);
//   - leases on users (user_leases), one per bridge domain and user: the
//     holder alone keeps that user's foreign connections (IRC, mailbox
//     watchers). An instance that gets a user's stanzas while another
//     live one holds the user asks for it (ClaimUser sets wanted); the
//     holder lets go at its next renewal (WantedUsers, ReleaseUser),
//     which hands the lease to the asker.
//
// SQLite serves one process: the gateway uses none of this there (the
// outbox queries and the column's default are SQLite's own), but the
// statements work on both engines.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func ptr[T any](v T) *T { return &v }

// newInstanceID names an instance: its host, its process and a random
// part (a restarted process, or a second Store in one, is another
// instance).
func newInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	var b [4]byte
	rand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// node names the kernel and the process namespace this process runs in,
// where its process ids mean something: Linux's boot id and the pid
// namespace ("" elsewhere, or when unreadable).
var node = sync.OnceValue(func() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + "/" + ns
})

// Instance names this Store among the instances sharing its database.
// It changes only with RejoinInstances.
func (s *Store) Instance() string { return *s.instance.Load() }

// Shared reports whether several instances may share the database
// (PostgreSQL); an SQLite file belongs to one process.
func (s *Store) Shared() bool { return s.pg }

// JoinInstances records this instance as live until lease from now.
func (s *Store) JoinInstances(ctx context.Context, lease time.Duration) error {
	t := time.Now()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO instances (id, node, pid, started, expires) VALUES (?, ?, ?, ?, ?)`,
		s.Instance(), node(), os.Getpid(), t.UnixMilli(), t.Add(lease).UnixMilli()); err != nil {
		return fmt.Errorf("failed to record the instance: %w", err)
	}
	return nil
}

// RenewInstance extends this instance's lease to lease from now. It
// reports false when the instance's row is gone: its lease ended and
// another instance may have taken what it held (RejoinInstances starts
// again under a new name).
func (s *Store) RenewInstance(ctx context.Context, lease time.Duration) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE instances SET expires = ? WHERE id = ?`,
		time.Now().Add(lease).UnixMilli(), s.Instance())
	if err != nil {
		return false, fmt.Errorf("failed to renew the instance's lease: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("failed to renew the instance's lease: %w", err)
	}
	return n > 0, nil
}

// RejoinInstances gives this Store a new name and records it as live:
// for an instance that let go of everything it held (its lease ended, or
// it could not renew it). What the old name held is free at once (its
// row is deleted), for any instance to take, this one too.
func (s *Store) RejoinInstances(ctx context.Context, lease time.Duration) error {
	old := s.Instance()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM instances WHERE id = ?`, old); err != nil {
		return fmt.Errorf("failed to remove the instance's old record: %w", err)
	}
	s.instance.Store(ptr(newInstanceID()))
	if err := s.JoinInstances(ctx, lease); err != nil {
		s.instance.Store(&old)
		return err
	}
	return nil
}

// LeaveInstances removes this instance's row: at a clean stop, what it
// held (its queued stanzas, its users) is free at once.
func (s *Store) LeaveInstances(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM instances WHERE id = ?`, s.Instance()); err != nil {
		return fmt.Errorf("failed to remove the instance's record: %w", err)
	}
	return nil
}

// ReapInstances deletes the rows of the instances whose lease ended, and
// those of instances on this node whose process is gone (killed: its
// restart takes over at once instead of after the lease), and returns
// how many there were.
func (s *Store) ReapInstances(ctx context.Context) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM instances WHERE expires < ?`, time.Now().UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("failed to remove the instances whose lease ended: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil || node() == "" {
		return int(n), err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, pid FROM instances WHERE node = ? AND id <> ?`, node(), s.Instance())
	if err != nil {
		return int(n), fmt.Errorf("failed to read the instances of this node: %w", err)
	}
	var gone []string
	for rows.Next() {
		var id string
		var pid int
		if err := rows.Scan(&id, &pid); err != nil {
			rows.Close()
			return int(n), fmt.Errorf("failed to read the instances of this node: %w", err)
		}
		if processGone(pid) {
			gone = append(gone, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return int(n), fmt.Errorf("failed to read the instances of this node: %w", err)
	}
	for _, id := range gone {
		res, err := s.db.ExecContext(ctx, `DELETE FROM instances WHERE id = ? AND node = ?`, id, node())
		if err != nil {
			return int(n), fmt.Errorf("failed to remove an instance whose process is gone: %w", err)
		}
		k, _ := res.RowsAffected()
		n += k
	}
	return int(n), nil
}

// LiveInstances returns the names of the instances whose row is here.
func (s *Store) LiveInstances(ctx context.Context) ([]string, error) {
	return s.strings(ctx, `SELECT id FROM instances ORDER BY id`)
}

// AdoptStanzas makes this instance the owner of the queued stanzas of
// domain whose owner is gone, and returns how many there were. They keep
// their order, under new ids above this instance's earlier ones (its
// stream reads its outbox by growing id), in the group commit like the
// instance's other outbox writes. On SQLite, where the process owns the
// whole outbox, there is nothing to adopt.
func (s *Store) AdoptStanzas(ctx context.Context, domain string) (int, error) {
	if !s.pg {
		return 0, nil
	}
	var n int64
	me := s.Instance()
	err := s.inGroup(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `WITH moved AS (
			DELETE FROM outbox WHERE domain = ? AND owner <> ? AND owner NOT IN (SELECT id FROM instances)
			RETURNING id, domain, stanza, created)
			INSERT INTO outbox (domain, stanza, created, owner) SELECT domain, stanza, created, ? FROM moved ORDER BY id`,
			domain, me, me)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("failed to adopt the stanzas of stopped instances: %w", err)
	}
	return int(n), nil
}

// CountOwnStanzas returns the number of queued stanzas of domain this
// instance sends (on SQLite, all of them).
func (s *Store) CountOwnStanzas(ctx context.Context, domain string) (int, error) {
	if !s.pg {
		return s.CountStanzas(ctx, domain)
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE owner = ? AND domain = ?`, s.Instance(), domain).Scan(&n)
	return n, err
}

// free is the condition that a lease's holder is gone (or is this
// instance, the excluded row's).
const free = `(user_leases.instance = excluded.instance OR user_leases.instance NOT IN (SELECT id FROM instances))`

// ClaimUser takes the lease on jid at domain for this instance when no
// live instance holds it, and reports whether this instance holds it
// now. When another live instance holds it, it records that this one
// wants it (the holder hands it over at its next renewal: ClaimUser
// then reports true).
func (s *Store) ClaimUser(ctx context.Context, domain, jid string) (bool, error) {
	me := s.Instance()
	var holder string
	err := s.db.QueryRowContext(ctx, `INSERT INTO user_leases (domain, jid, instance) VALUES (?, ?, ?)
		ON CONFLICT (domain, jid) DO UPDATE SET
			instance = CASE WHEN `+free+` THEN excluded.instance ELSE user_leases.instance END,
			wanted = CASE WHEN `+free+` THEN '' ELSE excluded.instance END,
			handed = CASE WHEN `+free+` THEN 0 ELSE user_leases.handed END
		RETURNING instance`, domain, jid, me).Scan(&holder)
	if err != nil {
		return false, fmt.Errorf("failed to claim the user: %w", err)
	}
	return holder == me, nil
}

// claimChunk is the most users one statement of ClaimUsers claims.
const claimChunk = 500

// ClaimUsers takes the leases on the users of jids at domain that no live
// instance holds (or this one does), and returns them: the users whose
// work an instance starts. It asks for none of the others.
func (s *Store) ClaimUsers(ctx context.Context, domain string, jids []string) ([]string, error) {
	seen := make(map[string]bool, len(jids))
	uniq := make([]string, 0, len(jids))
	for _, j := range jids {
		if !seen[j] {
			seen[j] = true
			uniq = append(uniq, j)
		}
	}
	me := s.Instance()
	var got []string
	for len(uniq) > 0 {
		chunk := uniq[:min(len(uniq), claimChunk)]
		uniq = uniq[len(chunk):]
		args := make([]any, 0, 3*len(chunk))
		for _, j := range chunk {
			args = append(args, domain, j, me)
		}
		q := `INSERT INTO user_leases (domain, jid, instance) VALUES (?, ?, ?)` + strings.Repeat(`, (?, ?, ?)`, len(chunk)-1) + `
			ON CONFLICT (domain, jid) DO UPDATE SET instance = excluded.instance, wanted = '', handed = 0
			WHERE ` + free + ` RETURNING jid`
		js, err := s.strings(ctx, q, args...)
		if err != nil {
			return got, fmt.Errorf("failed to claim users: %w", err)
		}
		got = append(got, js...)
	}
	return got, nil
}

// WantedUsers returns the users of domain this instance holds and another
// live instance asked for (ClaimUser).
func (s *Store) WantedUsers(ctx context.Context, domain string) ([]string, error) {
	js, err := s.strings(ctx, `SELECT jid FROM user_leases WHERE instance = ? AND domain = ? AND wanted <> '' ORDER BY jid`, s.Instance(), domain)
	if err != nil {
		return nil, fmt.Errorf("failed to read the users other instances ask for: %w", err)
	}
	return js, nil
}

// ReleaseUser lets go of this instance's lease on jid at domain, once the
// instance closed the user's foreign connections: the lease goes to the
// instance that asked for it, if one did (it takes the user up with
// ClaimUser or AdoptUsers), else to whichever live instance adopts it.
func (s *Store) ReleaseUser(ctx context.Context, domain, jid string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE user_leases SET
			instance = wanted, handed = CASE WHEN wanted <> '' THEN 1 ELSE 0 END, wanted = ''
		WHERE domain = ? AND jid = ? AND instance = ?`, domain, jid, s.Instance())
	if err != nil {
		return fmt.Errorf("failed to release the user: %w", err)
	}
	return nil
}

// AdoptUsers takes up the leases of domain whose holder is gone and those
// handed over to this instance, and returns their users: an instance
// starts their work (persistent channels, mailbox watchers).
func (s *Store) AdoptUsers(ctx context.Context, domain string) ([]string, error) {
	me := s.Instance()
	js, err := s.strings(ctx, `UPDATE user_leases SET instance = ?, wanted = '', handed = 0
		WHERE domain = ? AND ((instance = ? AND handed = 1) OR instance NOT IN (SELECT id FROM instances))
		RETURNING jid`, me, domain, me)
	if err != nil {
		return nil, fmt.Errorf("failed to adopt users: %w", err)
	}
	return js, nil
}

// CountUserLeases returns the number of users of domain whose lease this
// instance holds.
func (s *Store) CountUserLeases(ctx context.Context, domain string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM user_leases WHERE instance = ? AND domain = ?`, s.Instance(), domain).Scan(&n)
	return n, err
}

// UserHolder returns the instance holding the lease on jid at domain ("":
// none recorded).
func (s *Store) UserHolder(ctx context.Context, domain, jid string) (string, error) {
	var h string
	err := s.db.QueryRowContext(ctx, `SELECT instance FROM user_leases WHERE domain = ? AND jid = ?`, domain, jid).Scan(&h)
	if err == sql.ErrNoRows {
		return "", nil
	}
	return h, err
}

// strings runs a query of one text column.
func (s *Store) strings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
