package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// OutboxItem is a stanza waiting to be written to the XMPP server.
type OutboxItem struct {
	ID     int64
	Stanza string
}

// EnqueueStanzas stores several stanzas for domain's component stream in
// one transaction: all of them or none.
func (s *Store) EnqueueStanzas(ctx context.Context, domain string, stanzas []string) error {
	_, err := s.Deliver(ctx, domain, Delivery{Stanzas: stanzas})
	return err
}

// PendingStanzas returns up to limit queued stanzas of domain, oldest first.
func (s *Store) PendingStanzas(ctx context.Context, domain string, limit int) ([]OutboxItem, error) {
	return s.PendingStanzasAfter(ctx, domain, 0, limit)
}

// PendingStanzasAfter returns up to limit queued stanzas of domain whose id
// is above after, oldest first. Ids grow with each commit and are never
// reused, so a reader that has seen the stanzas up to after sees the next
// ones here. On PostgreSQL these are this instance's stanzas (see
// AdoptStanzas): its outbox writes are committed one group at a time, so
// their ids grow with each commit there too.
func (s *Store) PendingStanzasAfter(ctx context.Context, domain string, after int64, limit int) ([]OutboxItem, error) {
	var rows *sql.Rows
	var err error
	if s.pg {
		// Only this instance's: another's go out through its own streams.
		rows, err = s.db.QueryContext(ctx, `SELECT id, stanza FROM outbox WHERE owner = ? AND domain = ? AND id > ? ORDER BY id LIMIT ?`, s.Instance(), domain, after, limit)
	} else {
		rows, err = s.db.QueryContext(ctx, `SELECT id, stanza FROM outbox WHERE domain = ? AND id > ? ORDER BY id LIMIT ?`, domain, after, limit)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OutboxItem
	for rows.Next() {
		var it OutboxItem
		if err := rows.Scan(&it.ID, &it.Stanza); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// StanzasSentThrough removes domain's queued stanzas whose id is last or
// less (on PostgreSQL, this instance's), in one statement: once the server has confirmed everything up to
// last. The component sends its outbox oldest first and has those
// confirmed in order, so these are the stanzas it sent.
//
// It is one of the group's writes (see inGroup): beside the groups of
// deliveries, a write of its own would wait in SQLite's busy handler, which
// polls with growing sleeps, while the groups hold the lock one after the
// other.
func (s *Store) StanzasSentThrough(ctx context.Context, domain string, last int64) error {
	err := s.inGroup(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if s.pg {
			_, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE owner = ? AND domain = ? AND id <= ?`, s.Instance(), domain, last)
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE domain = ? AND id <= ?`, domain, last)
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to remove sent stanzas: %w", err)
	}
	return nil
}

// CountStanzas returns the number of queued stanzas of domain.
func (s *Store) CountStanzas(ctx context.Context, domain string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE domain = ?`, domain).Scan(&n)
	return n, err
}

// Job is a delivery to a foreign network, retried until done or failed.
type Job struct {
	ID        int64
	Domain    string
	JID       string
	Kind      string
	Payload   []byte
	Attempts  int
	NextTry   time.Time
	LastError string
	Created   time.Time
}

const insertJob = `INSERT INTO jobs (domain, jid, kind, payload, next_try, created) VALUES (?, ?, ?, ?, ?, ?)`

// EnqueueJob stores a job due now and returns its id.
func (s *Store) EnqueueJob(ctx context.Context, domain, jid, kind string, payload []byte) (int64, error) {
	t := time.Now()
	var id int64
	// RETURNING rather than LastInsertId, which PostgreSQL does not have.
	if err := s.db.QueryRowContext(ctx, insertJob+` RETURNING id`,
		domain, jid, kind, payload, t.UnixMilli(), t.Unix()).Scan(&id); err != nil {
		return 0, fmt.Errorf("failed to queue job: %w", err)
	}
	return id, nil
}

// EnqueueJobs stores several jobs due now in one transaction: all of them
// or none, and nobody sees some without the others.
func (s *Store) EnqueueJobs(ctx context.Context, domain, jid, kind string, payloads [][]byte) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to queue jobs: %w", err)
	}
	defer tx.Rollback()
	t := time.Now()
	for _, p := range payloads {
		if _, err := tx.ExecContext(ctx, insertJob,
			domain, jid, kind, p, t.UnixMilli(), t.Unix()); err != nil {
			return fmt.Errorf("failed to queue jobs: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("failed to queue jobs: %w", err)
	}
	return nil
}

// DueJobs returns up to limit jobs of domain whose next try is not after t.
// On PostgreSQL it claims them (see claimJobs).
func (s *Store) DueJobs(ctx context.Context, domain string, t time.Time, limit int) ([]Job, error) {
	if s.pg {
		return s.claimJobs(ctx, domain, t, limit)
	}
	return s.jobs(ctx, `SELECT `+jobColumns+` FROM jobs WHERE domain = ? AND next_try <= ? ORDER BY next_try, id LIMIT ?`,
		domain, t.UnixMilli(), limit)
}

// UserJobs returns all the queued jobs of jid on domain, oldest first.
func (s *Store) UserJobs(ctx context.Context, domain, jid string) ([]Job, error) {
	return s.jobs(ctx, `SELECT `+jobColumns+` FROM jobs WHERE domain = ? AND jid = ? ORDER BY id`, domain, jid)
}

const jobColumns = `id, domain, jid, kind, payload, attempts, next_try, last_error, created`

func (s *Store) jobs(ctx context.Context, query string, args ...any) ([]Job, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *j)
	}
	return out, rows.Err()
}

func scanJob(r interface{ Scan(...any) error }) (*Job, error) {
	var j Job
	var next, created int64
	if err := r.Scan(&j.ID, &j.Domain, &j.JID, &j.Kind, &j.Payload, &j.Attempts, &next, &j.LastError, &created); err != nil {
		return nil, err
	}
	j.NextTry, j.Created = time.UnixMilli(next), time.Unix(created, 0)
	return &j, nil
}

// NextJobTime returns when the earliest job of domain is due (ok false: none).
func (s *Store) NextJobTime(ctx context.Context, domain string) (t time.Time, ok bool, err error) {
	var next sql.NullInt64
	err = s.db.QueryRowContext(ctx, `SELECT min(next_try) FROM jobs WHERE domain = ?`, domain).Scan(&next)
	if err != nil || !next.Valid {
		return time.Time{}, false, err
	}
	return time.UnixMilli(next.Int64), true, nil
}

// RetryJob records a temporary failure and schedules the next try.
func (s *Store) RetryJob(ctx context.Context, id int64, next time.Time, lastErr string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE jobs SET attempts = attempts + 1, next_try = ?, last_error = ? WHERE id = ?`,
		next.UnixMilli(), lastErr, id)
	return err
}

// DelayJob moves a job's next try to next without counting an attempt.
func (s *Store) DelayJob(ctx context.Context, id int64, next time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE jobs SET next_try = ? WHERE id = ?`, next.UnixMilli(), id)
	return err
}

// DeleteJob removes a job (done, or failed for good).
func (s *Store) DeleteJob(ctx context.Context, id int64) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM jobs WHERE id = ?`, id)
	return err
}

// GetJob returns one job, or ErrNotFound.
func (s *Store) GetJob(ctx context.Context, id int64) (*Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return j, err
}

// CountJobs returns the number of queued jobs of domain.
func (s *Store) CountJobs(ctx context.Context, domain string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM jobs WHERE domain = ?`, domain).Scan(&n)
	return n, err
}
