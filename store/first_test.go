package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// A write marked First, queued while a group is committing, is committed
// before the unmarked writes queued ahead of it (behind only the head of
// the queue, which may already be the next group's committer), and every
// caller still returns once its own write is committed.
func TestGroupFirst(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	var mu sync.Mutex
	var order []string
	ran := func(name string) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			_, err := tx.ExecContext(ctx, `INSERT INTO outbox (domain, stanza, created) VALUES (?, ?, ?)`, "d", name, now())
			return err
		}
	}
	hold, holding := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 8)
	go func() {
		errs <- s.inGroup(ctx, func(ctx context.Context, tx *sql.Tx) error {
			close(holding)
			<-hold // the group stays under way while the others queue
			return ran("a")(ctx, tx)
		})
	}()
	<-holding
	queued := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			s.group.mu.Lock()
			l := len(s.group.queue)
			s.group.mu.Unlock()
			if l == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue holds %d writes, want %d", l, n)
			}
		}
	}
	for i, w := range []struct {
		name  string
		first bool
	}{{"b", false}, {"c", false}, {"d", false}, {"e", true}, {"f", true}} {
		go func() {
			wctx := ctx
			if w.first {
				wctx = First(ctx)
			}
			errs <- s.inGroup(wctx, ran(w.name))
		}()
		queued(i + 1)
	}
	close(hold)
	for range 6 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"a", "b", "e", "f", "c", "d"}; !slices.Equal(order, want) {
		t.Fatalf("writes ran in the order %v, want %v", order, want)
	}
	if n, err := s.CountStanzas(ctx, "d"); err != nil || n != 6 {
		t.Fatalf("%d stanzas committed (%v), want 6", n, err)
	}
}

// The checkpointer copies the log after commits, and one that fails
// (here: its connection is closed) is counted and retried on the next
// commit rather than stopping it.
func TestCheckpointer(t *testing.T) {
	sqliteOnly(t)
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	if err := s.EnqueueStanzas(ctx, "d", []string{"<x/>"}); err != nil {
		t.Fatal(err)
	}
	waitFor("a checkpoint", func() bool { return s.ckpt.runs.Load() >= 1 })
	if f := s.ckpt.failed.Load(); f != 0 {
		t.Fatalf("%d checkpoints failed", f)
	}
	// The log is empty once copied: a new checkpoint has nothing to copy.
	var busy, logPages, copied int
	if err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logPages, &copied); err != nil {
		t.Fatal(err)
	}
	if logPages != copied {
		t.Fatalf("the log holds %d pages, %d of them copied", logPages, copied)
	}

	s.ckpt.db.Close()
	runs := s.ckpt.runs.Load()
	for range 2 {
		if err := s.EnqueueStanzas(ctx, "d", []string{"<x/>"}); err != nil {
			t.Fatal(err)
		}
		waitFor("another checkpoint", func() bool { return s.ckpt.runs.Load() > runs })
		runs = s.ckpt.runs.Load()
	}
	if f := s.ckpt.failed.Load(); f != 2 {
		t.Fatalf("%d checkpoints failed, want 2", f)
	}
	if err := checkpoint(s.ckpt.db); err == nil {
		t.Fatalf("checkpoint on a closed database: %v, want an error", err)
	}
	if n, err := s.CountStanzas(ctx, "d"); err != nil || n != 3 {
		t.Fatalf("%d stanzas committed (%v), want 3", n, err)
	}
}
