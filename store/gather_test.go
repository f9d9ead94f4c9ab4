package store

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
)

// groupStats returns the groups committed and the writes in them.
func (s *Store) groupStats() (commits, writes int) {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return s.group.commits, s.group.writes
}

// On one processor, writes from goroutines that are ready to run when a
// group is taken join it: n users handed one line commit once, not n
// times. A write marked First is taken at once, alone, without waiting
// for the others.
func TestGroupGathers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	// No collection under way: a goroutine held for a collection's
	// assist would not be ready to run when its turn comes.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	ctx := context.Background()
	const n = 20
	deliver := func(t *testing.T, s *Store, ctx context.Context, i int) {
		if _, err := s.Deliver(ctx, "d", Delivery{Stanzas: []string{fmt.Sprintf("<m n='%d'/>", i)}}); err != nil {
			t.Error(err)
		}
	}
	for _, first := range []bool{false, true} {
		t.Run(fmt.Sprintf("first=%v", first), func(t *testing.T) {
			s := openTest(t)
			var wg sync.WaitGroup
			// The others are started by the first writer, just before
			// its write: ready to run, they cannot run before it yields
			// the one processor.
			wg.Go(func() {
				for i := 1; i < n; i++ {
					wg.Go(func() { deliver(t, s, ctx, i) })
				}
				wctx := ctx
				if first {
					wctx = First(ctx)
				}
				deliver(t, s, wctx, 0)
			})
			wg.Wait()
			commits, writes := s.groupStats()
			want := 1
			if first {
				want = 2
			}
			if commits != want || writes != n {
				t.Fatalf("%d writes in %d commits, want %d writes in %d", writes, commits, n, want)
			}
			if c, err := s.CountStanzas(ctx, "d"); err != nil || c != n {
				t.Fatalf("%d stanzas committed (%v), want %d", c, err, n)
			}
		})
	}
}
