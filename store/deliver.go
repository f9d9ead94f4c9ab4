package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// Delivery is what one event from a foreign network (an inbound text or
// mail, a delivery report) gives the XMPP side, committed together by
// Deliver.
type Delivery struct {
	// Key names the event, uniquely in the domain (an inbound text's
	// MessageSid): a delivery whose key was committed before commits
	// nothing. Empty: no such check.
	Key string
	// Links are the message-id links of the stanzas (each stored as
	// PutMessageID does).
	Links []MessageID
	// Stanzas go to the domain's outbox, in order.
	Stanzas []string
}

// Deliver commits d for domain's component stream: its key, its links and
// its stanzas, all of them or, on error, none. When d.Key was committed
// before (the foreign side sent the event again, maybe at the same
// moment), it commits nothing and reports false. It returns once d is
// committed, in a group (see inGroup): a fan-out to many users costs one
// commit, not one per user.
func (s *Store) Deliver(ctx context.Context, domain string, d Delivery) (bool, error) {
	var ok bool
	err := s.inGroup(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		ok, err = deliver(ctx, tx, domain, d, now(), s.outboxInsert())
		return err
	})
	if err != nil {
		return false, err
	}
	return ok, nil
}

// inGroup runs write in a transaction and returns once that is committed
// (or write failed, or the commit). The writes of all callers are committed
// in groups: one caller at a time commits, in one transaction, every write
// queued while the previous group was committing (a write that fails
// fails alone: see commitGroup). So the hot path's
// writes wait for one another in this queue rather than in SQLite's busy
// handler, and share a commit. A caller's ctx is checked before its write
// runs, not while it waits for the group's commit: what is committed is
// reported as committed. write gets the group's context, not the
// caller's: one caller gone does not roll back the others.
func (s *Store) inGroup(ctx context.Context, write func(ctx context.Context, tx *sql.Tx) error) error {
	r := &groupWrite{ctx: ctx, write: write, wake: make(chan struct{}, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, r)
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if !lead {
		<-r.wake // committed by another caller, or its turn to commit
		if r.finished {
			return r.err
		}
	}
	g.mu.Lock()
	batch := g.queue[:min(len(g.queue), maxGroup):min(len(g.queue), maxGroup)]
	g.queue = g.queue[len(batch):]
	g.mu.Unlock()
	s.commitGroup(batch)
	for _, o := range batch {
		o.finished = true
		if o != r {
			o.wake <- struct{}{}
		}
	}
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.running = false
	} else {
		g.queue[0].wake <- struct{}{} // the next group's committer
	}
	g.mu.Unlock()
	return r.err
}

// maxGroup is the most writes committed together: a larger group (a line
// to 500 users) would hold back what it carries until all of it is
// written, where a few smaller ones let the first ones go out sooner.
const maxGroup = 64

// groupCommit queues the writes waiting for a commit.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*groupWrite
	running bool // a caller is committing
}

// groupWrite is one caller's write, with its result once finished.
type groupWrite struct {
	ctx   context.Context
	write func(ctx context.Context, tx *sql.Tx) error
	wake  chan struct{}

	finished bool
	err      error
}

// commitGroup commits batch in one transaction and sets each write's
// result. When a write of a group fails, the group is rolled back and each
// of its writes is committed on its own, so that the one that failed is
// the only one to fail (a failure costs that; a group that works pays
// nothing for it, where a savepoint per write would cost two statements
// each).
func (s *Store) commitGroup(batch []*groupWrite) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
		} else {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	if err := s.commitTx(live); err != nil && len(live) > 1 {
		for _, r := range live {
			r.err = s.commitTx([]*groupWrite{r})
		}
	}
}

// commitTx runs batch's writes in one transaction and commits it. On an
// error, nothing is committed and each write's err is set.
func (s *Store) commitTx(batch []*groupWrite) error {
	fail := func(err error) error {
		for _, r := range batch {
			r.err = err
		}
		return err
	}
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fail(fmt.Errorf("failed to begin a transaction: %w", err))
	}
	defer tx.Rollback()
	for _, r := range batch {
		if err := r.write(ctx, tx); err != nil {
			return fail(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fail(fmt.Errorf("failed to commit: %w", err))
	}
	for _, r := range batch {
		r.err = nil
	}
	return nil
}

// deliver writes d in tx.
func deliver(ctx context.Context, tx *sql.Tx, domain string, d Delivery, created int64, ins outboxInsert) (bool, error) {
	if d.Key != "" {
		res, err := tx.ExecContext(ctx, `INSERT INTO deliveries (domain, key, created) VALUES (?, ?, ?)
			ON CONFLICT (domain, key) DO NOTHING`, domain, d.Key, created)
		if err != nil {
			return false, fmt.Errorf("failed to record a delivery: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return false, fmt.Errorf("failed to record a delivery: %w", err)
		} else if n == 0 {
			return false, nil
		}
	}
	for _, m := range d.Links {
		if _, err := tx.ExecContext(ctx, putMessageID,
			m.Domain, m.JID, m.XMPPID, m.ForeignID, m.Peer, m.Thread, m.Extra, created); err != nil {
			return false, fmt.Errorf("failed to store a message link: %w", err)
		}
	}
	for _, st := range d.Stanzas {
		if _, err := ins.exec(ctx, tx, domain, st, created); err != nil {
			return false, fmt.Errorf("failed to queue stanzas: %w", err)
		}
	}
	return true, nil
}

// outboxInsert writes a stanza to the outbox: on PostgreSQL, owned by
// the instance that writes it (see AdoptStanzas).
type outboxInsert struct{ owner string }

func (s *Store) outboxInsert() outboxInsert {
	if s.pg {
		return outboxInsert{owner: s.Instance()}
	}
	return outboxInsert{}
}

func (o outboxInsert) exec(ctx context.Context, tx *sql.Tx, domain, stanza string, created int64) (sql.Result, error) {
	if o.owner == "" {
		return tx.ExecContext(ctx, `INSERT INTO outbox (domain, stanza, created) VALUES (?, ?, ?)`, domain, stanza, created)
	}
	return tx.ExecContext(ctx, `INSERT INTO outbox (domain, stanza, created, owner) VALUES (?, ?, ?, ?)`, domain, stanza, created, o.owner)
}
