package store

import (
	"context"
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
	ran := func(name string) func(groupTx) error {
		return func(g groupTx) error {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			return g.exec(`INSERT INTO outbox (domain, stanza, created) VALUES (?, ?, ?)`, "d", name, now())
		}
	}
	hold, holding := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 8)
	go func() {
		errs <- s.inGroup(ctx, func(g groupTx) error {
			close(holding)
			<-hold // the group stays under way while the others queue
			return ran("a")(g)
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
