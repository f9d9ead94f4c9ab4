package store

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
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
	if err := s.inGroup(ctx, deliverWrite(domain, d, &ok)); err != nil {
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
func (s *Store) inGroup(ctx context.Context, write func(g groupTx) error) error {
	r := &groupWrite{ctx: ctx, write: write, wake: make(chan struct{}, 1), first: ctx.Value(firstKey{}) != nil}
	g := &s.group
	g.mu.Lock()
	g.enqueue(r)
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if !lead {
		<-r.wake // committed by another caller, or its turn to commit
		if r.finished {
			return r.err
		}
	}
	g.gather(r)
	g.mu.Lock()
	batch := g.queue[:min(len(g.queue), maxGroup):min(len(g.queue), maxGroup)]
	g.queue = g.queue[len(batch):]
	g.commits++
	g.writes += len(batch)
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

// gather lets the goroutines that are ready to run queue their writes
// before r's caller takes its group, as long as they add to it (up to
// maxGathers turns). On one processor (GOMAXPROCS=1) the caller would
// otherwise take its write alone: the others woken with it (the users
// of a channel, each handed the same line by their own IRC connection)
// have not run yet, and a fan-out would cost a commit per user (1.6-2.0
// writes per commit in the IRC benchmark's fan-out at 500 users, against
// 43-63 with it). On more processors they run beside the commit and the
// groups grow the same way; gathering still lets those waiting for a
// processor in.
// A write that goes first (see First) does not wait for the others:
// neither when it commits the group nor when it is queued in it.
func (g *groupCommit) gather(r *groupWrite) {
	if r.first {
		return
	}
	still := 0 // turns in a row that added nothing
	for range maxGathers {
		g.mu.Lock()
		n := len(g.queue)
		waiting := n > 1 && g.queue[1].first // see enqueue
		g.mu.Unlock()
		if n >= maxGroup || waiting {
			return
		}
		runtime.Gosched()
		g.mu.Lock()
		grew := len(g.queue) > n
		g.mu.Unlock()
		// Two turns: now and then the scheduler runs a goroutine that
		// yielded again before those that were waiting.
		if grew {
			still = 0
		} else if still++; still == 2 {
			return
		}
	}
}

// maxGathers bounds the turns gather gives the other goroutines.
const maxGathers = 8

// maxGroup is the most writes committed together: a larger group (a line
// to 500 users) would hold back what it carries until all of it is
// written, where a few smaller ones let the first ones go out sooner.
const maxGroup = 64

// First marks the writes made with ctx to go ahead of the writes queued
// for a group that are not so marked (after those that are): what a user
// is waiting for in person (the room's echo of their own message) is not
// queued behind a fan-out to hundreds of others. It changes the order in
// which writes are committed, not whether: each caller still returns once
// its write is committed.
func First(ctx context.Context) context.Context { return context.WithValue(ctx, firstKey{}, true) }

type firstKey struct{}

// enqueue queues r: at the end, or, when r goes first, after the queued
// writes that go first. A write at the head of the queue may be the
// next group's committer, already woken: r goes behind it.
func (g *groupCommit) enqueue(r *groupWrite) {
	i := len(g.queue)
	if r.first {
		i = 0
		for i < len(g.queue) && (g.queue[i].first || (i == 0 && g.running)) {
			i++
		}
	}
	g.queue = slices.Insert(g.queue, i, r)
}

// groupCommit queues the writes waiting for a commit.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*groupWrite
	running bool // a caller is committing
	// commits and writes count the groups taken and the writes in them.
	commits, writes int
}

// groupWrite is one caller's write, with its result once finished.
type groupWrite struct {
	ctx   context.Context
	write func(g groupTx) error
	wake  chan struct{}
	first bool // see First

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
	if s.pg {
		if err := s.sendGroup(ctx, batch); err != nil {
			return fail(err)
		}
	} else {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fail(fmt.Errorf("failed to begin a transaction: %w", err))
		}
		defer tx.Rollback()
		g := groupTx{ctx: ctx, tx: tx}
		for _, r := range batch {
			if err := r.write(g); err != nil {
				return fail(err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fail(fmt.Errorf("failed to commit: %w", err))
		}
		s.ckpt.committed()
	}
	for _, r := range batch {
		r.err = nil
	}
	return nil
}

// sendGroup runs batch's writes on PostgreSQL: their statements go out
// together, in one pipeline (pgx.Batch) that the server runs as one
// implicit transaction, so a group costs one round trip however many
// writes and stanzas it holds. The statements' results reach the writes
// (their callbacks) once the server has answered.
func (s *Store) sendGroup(ctx context.Context, batch []*groupWrite) error {
	g := groupTx{ctx: ctx, batch: &pgx.Batch{}, outbox: &outboxRows{}, owner: s.Instance()}
	for _, r := range batch {
		if err := r.write(g); err != nil {
			return err
		}
	}
	if o := g.outbox; len(o.stanzas) > 0 {
		g.batch.Queue(pgInsertOutbox, o.domains, o.stanzas, o.created, g.owner)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("failed to begin a transaction: %w", err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		return dc.(pgConn).Conn.Conn().SendBatch(ctx, g.batch).Close()
	})
	if err != nil {
		return fmt.Errorf("failed to commit: %w", err)
	}
	return nil
}

// groupTx is the transaction of a group's writes. On SQLite each
// statement runs as the write makes it, in a database/sql transaction; on
// PostgreSQL it is queued, and all of the group's statements are sent
// together at the commit (sendGroup), where their results come back: a
// write must not depend on a result before the commit (deliverWrite's
// key check is one statement on PostgreSQL for that reason).
type groupTx struct {
	ctx    context.Context
	tx     *sql.Tx     // SQLite
	batch  *pgx.Batch  // PostgreSQL
	outbox *outboxRows // PostgreSQL: the group's stanzas, inserted by one statement after the others
	owner  string      // PostgreSQL: the instance that owns the stanzas written (see AdoptStanzas)
}

// outboxRows are outbox rows, by column.
type outboxRows struct {
	domains, stanzas []string
	created          []int64
}

// exec runs or queues a statement.
func (g groupTx) exec(query string, args ...any) error {
	if g.batch != nil {
		// A copy: args stays on the caller's stack on SQLite's path.
		g.batch.Queue(rebound(query), slices.Clone(args)...)
		return nil
	}
	_, err := g.tx.ExecContext(g.ctx, query, args...)
	return err
}

// queryRow runs or queues a statement that returns one row, scanned into
// dest (on PostgreSQL, at the commit).
func (g groupTx) queryRow(dest []any, query string, args ...any) error {
	if g.batch != nil {
		// Copies, as in exec.
		dest := slices.Clone(dest)
		g.batch.Queue(rebound(query), slices.Clone(args)...).QueryRow(func(r pgx.Row) error { return r.Scan(dest...) })
		return nil
	}
	return g.tx.QueryRowContext(g.ctx, query, args...).Scan(dest...)
}

// deliverWrite is the group's write of d, which sets ok to whether d was
// committed rather than refused by its key.
func deliverWrite(domain string, d Delivery, ok *bool) func(g groupTx) error {
	return func(g groupTx) error {
		created := now()
		*ok = true
		if d.Key != "" {
			if g.batch != nil {
				return deliverOnce(g, domain, d, created, ok)
			}
			res, err := g.tx.ExecContext(g.ctx, `INSERT INTO deliveries (domain, key, created) VALUES (?, ?, ?)
				ON CONFLICT (domain, key) DO NOTHING`, domain, d.Key, created)
			if err != nil {
				return fmt.Errorf("failed to record a delivery: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("failed to record a delivery: %w", err)
			} else if n == 0 {
				*ok = false
				return nil
			}
		}
		for _, m := range d.Links {
			if err := g.exec(putMessageID,
				m.Domain, m.JID, m.XMPPID, m.ForeignID, m.Peer, m.Thread, m.Extra, created); err != nil {
				return fmt.Errorf("failed to store a message link: %w", err)
			}
		}
		if o := g.outbox; o != nil {
			for _, st := range d.Stanzas {
				o.domains, o.stanzas, o.created = append(o.domains, domain), append(o.stanzas, st), append(o.created, created)
			}
			return nil
		}
		for _, st := range d.Stanzas {
			if err := g.exec(insertOutbox, domain, st, created); err != nil {
				return fmt.Errorf("failed to queue stanzas: %w", err)
			}
		}
		return nil
	}
}

const insertOutbox = `INSERT INTO outbox (domain, stanza, created) VALUES (?, ?, ?)`

// deliverOnce queues d, whose key decides whether its links and stanzas
// are written, as one PostgreSQL statement (pgDeliverOnce): the statements
// of a group are sent before any result comes back.
func deliverOnce(g groupTx, domain string, d Delivery, created int64, ok *bool) error {
	var cols [7][]string
	// One statement may not update a link twice: the last of a key's
	// links wins, as when they are written one after the other.
	last := make(map[[3]string]int, len(d.Links))
	for i, m := range d.Links {
		last[[3]string{m.Domain, m.JID, m.XMPPID}] = i
	}
	for i, m := range d.Links {
		if last[[3]string{m.Domain, m.JID, m.XMPPID}] != i {
			continue
		}
		for c, v := range []string{m.Domain, m.JID, m.XMPPID, m.ForeignID, m.Peer, m.Thread, m.Extra} {
			cols[c] = append(cols[c], v)
		}
	}
	stanzas := d.Stanzas
	if stanzas == nil {
		stanzas = []string{}
	}
	args := []any{domain, d.Key, created, stanzas, g.owner}
	for _, c := range cols {
		if c == nil {
			c = []string{}
		}
		args = append(args, c)
	}
	return g.queryRow([]any{ok}, pgDeliverOnce, args...)
}
