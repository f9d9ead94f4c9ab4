package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrConflict is returned when a claimed value already belongs to someone else.
var ErrConflict = errors.New("already claimed by another user")

// ErrNotFound is returned when the row asked for does not exist.
var ErrNotFound = errors.New("not found")

// Registration is one user's registration with one bridge.
type Registration struct {
	Domain  string
	JID     string
	Fields  map[string]string
	Claims  []string
	Created time.Time
	Updated time.Time
}

// PutRegistration creates or replaces the registration of jid with domain,
// and makes claims (foreign addresses) that user's and only that user's.
// A claim held by another user fails the whole call with ErrConflict.
func (s *Store) PutRegistration(ctx context.Context, domain, jid string, fields map[string]string, claims []string) error {
	b, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	t := now()
	_, err = tx.ExecContext(ctx, `INSERT INTO registrations (domain, jid, fields, created, updated)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (domain, jid) DO UPDATE SET fields = excluded.fields, updated = excluded.updated`,
		domain, jid, string(b), t, t)
	if err != nil {
		return fmt.Errorf("failed to store registration: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM claims WHERE domain = ? AND jid = ?`, domain, jid); err != nil {
		return err
	}
	for _, c := range claims {
		_, err := tx.ExecContext(ctx, `INSERT INTO claims (domain, value, jid) VALUES (?, ?, ?)`, domain, c, jid)
		if isUniqueViolation(err) {
			return fmt.Errorf("%q: %w", c, ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("failed to store claim: %w", err)
		}
	}
	return tx.Commit()
}

// GetRegistration returns jid's registration with domain, or ErrNotFound.
func (s *Store) GetRegistration(ctx context.Context, domain, jid string) (*Registration, error) {
	r := &Registration{Domain: domain, JID: jid}
	var fields string
	var created, updated int64
	err := s.db.QueryRowContext(ctx, `SELECT fields, created, updated FROM registrations WHERE domain = ? AND jid = ?`,
		domain, jid).Scan(&fields, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read registration: %w", err)
	}
	if err := json.Unmarshal([]byte(fields), &r.Fields); err != nil {
		return nil, fmt.Errorf("corrupt registration of %s: %w", jid, err)
	}
	r.Created, r.Updated = time.Unix(created, 0), time.Unix(updated, 0)
	rows, err := s.db.QueryContext(ctx, `SELECT value FROM claims WHERE domain = ? AND jid = ? ORDER BY value`, domain, jid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		r.Claims = append(r.Claims, v)
	}
	return r, rows.Err()
}

// DeleteRegistration removes jid's registration with domain and everything
// kept for that user there: claims, settings, queued jobs, message ids and
// contacts.
// It reports whether a registration existed.
func (s *Store) DeleteRegistration(ctx context.Context, domain, jid string) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM registrations WHERE domain = ? AND jid = ?`, domain, jid)
	if err != nil {
		return false, fmt.Errorf("failed to delete registration: %w", err)
	}
	n, _ := res.RowsAffected()
	for _, q := range []string{
		`DELETE FROM claims WHERE domain = ? AND jid = ?`,
		`DELETE FROM settings WHERE domain = ? AND jid = ?`,
		`DELETE FROM jobs WHERE domain = ? AND jid = ?`,
		`DELETE FROM message_ids WHERE domain = ? AND jid = ?`,
		`DELETE FROM contacts WHERE domain = ? AND jid = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, domain, jid); err != nil {
			return false, fmt.Errorf("failed to delete user data: %w", err)
		}
	}
	return n > 0, tx.Commit()
}

// ListRegistrations returns the bare JIDs registered with domain, sorted.
func (s *Store) ListRegistrations(ctx context.Context, domain string) ([]string, error) {
	return s.strings(ctx, `SELECT jid FROM registrations WHERE domain = ? ORDER BY jid`, domain)
}

// ClaimOwner returns the bare JID that claimed value on domain, or ErrNotFound.
func (s *Store) ClaimOwner(ctx context.Context, domain, value string) (string, error) {
	var jid string
	err := s.db.QueryRowContext(ctx, `SELECT jid FROM claims WHERE domain = ? AND value = ?`, domain, value).Scan(&jid)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return jid, err
}

// SetSetting stores a per-user setting.
func (s *Store) SetSetting(ctx context.Context, domain, jid, key, value string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO settings (domain, jid, key, value) VALUES (?, ?, ?, ?)
		ON CONFLICT (domain, jid, key) DO UPDATE SET value = excluded.value`, domain, jid, key, value)
	return err
}

// Settings returns all of a user's settings on domain.
func (s *Store) Settings(ctx context.Context, domain, jid string) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key, value FROM settings WHERE domain = ? AND jid = ?`, domain, jid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// PutIdentity remembers the foreign spelling of the identity whose JID
// localpart (as the XMPP server will deliver it back) is local.
func (s *Store) PutIdentity(ctx context.Context, domain, local, foreign string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO identities (domain, local, foreign_id) VALUES (?, ?, ?)
		ON CONFLICT (domain, local) DO UPDATE SET foreign_id = excluded.foreign_id`, domain, local, foreign)
	return err
}

// Identity returns the foreign spelling stored for local, or ErrNotFound.
func (s *Store) Identity(ctx context.Context, domain, local string) (string, error) {
	var f string
	err := s.db.QueryRowContext(ctx, `SELECT foreign_id FROM identities WHERE domain = ? AND local = ?`, domain, local).Scan(&f)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return f, err
}

// MessageID links an XMPP message id to a foreign message id.
type MessageID struct {
	Domain, JID, XMPPID, ForeignID, Peer, Thread, Extra string
}

// PutMessageID stores the link (replacing an earlier one for the same XMPP id).
func (s *Store) PutMessageID(ctx context.Context, m MessageID) error {
	_, err := s.db.ExecContext(ctx, putMessageID, m.Domain, m.JID, m.XMPPID, m.ForeignID, m.Peer, m.Thread, m.Extra, now())
	return err
}

const putMessageID = `INSERT INTO message_ids (domain, jid, xmpp_id, foreign_id, peer, thread, extra, created)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (domain, jid, xmpp_id) DO UPDATE SET foreign_id = excluded.foreign_id,
		peer = excluded.peer, thread = excluded.thread, extra = excluded.extra`

// pruneBatch bounds the links one statement of PruneMessageIDs deletes, so
// that other writers wait for it at most a moment.
const pruneBatch = 2000

// PruneMessageIDs deletes the links stored before before, and the keys of
// the deliveries committed before it (see Deliver), a batch at a time, and
// returns how many rows it deleted.
func (s *Store) PruneMessageIDs(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for _, table := range []string{"message_ids", "deliveries"} {
		for {
			// table is one of the two constants above.
			res, err := s.db.ExecContext(ctx, `DELETE FROM `+table+` WHERE rowid IN
				(SELECT rowid FROM `+table+` WHERE created < ? LIMIT ?)`, before.Unix(), pruneBatch)
			if err != nil {
				return total, fmt.Errorf("failed to prune message ids: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return total, fmt.Errorf("failed to prune message ids: %w", err)
			}
			total += n
			if n < pruneBatch {
				break
			}
		}
	}
	return total, nil
}

// MessageByXMPPID looks a link up by the user's XMPP id.
func (s *Store) MessageByXMPPID(ctx context.Context, domain, jid, xmppID string) (*MessageID, error) {
	return s.messageBy(ctx, `domain = ? AND jid = ? AND xmpp_id = ?`, domain, jid, xmppID)
}

// MessageByForeignID looks a link up by the foreign id.
func (s *Store) MessageByForeignID(ctx context.Context, domain, foreignID string) (*MessageID, error) {
	return s.messageBy(ctx, `domain = ? AND foreign_id = ? ORDER BY created DESC`, domain, foreignID)
}

// MessageByThread returns the latest link in a thread of jid's.
func (s *Store) MessageByThread(ctx context.Context, domain, jid, thread string) (*MessageID, error) {
	return s.messageBy(ctx, `domain = ? AND jid = ? AND thread = ? ORDER BY created DESC, rowid DESC`, domain, jid, thread)
}

func (s *Store) messageBy(ctx context.Context, where string, args ...any) (*MessageID, error) {
	m := &MessageID{}
	err := s.db.QueryRowContext(ctx, `SELECT domain, jid, xmpp_id, foreign_id, peer, thread, extra FROM message_ids WHERE `+where+` LIMIT 1`,
		args...).Scan(&m.Domain, &m.JID, &m.XMPPID, &m.ForeignID, &m.Peer, &m.Thread, &m.Extra)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}
