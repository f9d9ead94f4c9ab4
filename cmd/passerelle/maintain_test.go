package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"passerelle/store"
)

// lockedOutput collects what is written to it (a process's output, a
// logger's lines), safe for concurrent use.
type lockedOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *lockedOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *lockedOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// count is how many lines contain every one of parts.
func (o *lockedOutput) count(parts ...string) int { return linesWith(o.String(), parts...) }

// waitCount waits until at least n lines contain every one of parts.
func (o *lockedOutput) waitCount(t *testing.T, n int, parts ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); o.count(parts...) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d lines with %q in:\n%s", n, parts, o.String())
		}
	}
}

// runPrune runs pruneMessageIDs until the test ends, and checks it returns
// once its context is cancelled.
func runPrune(t *testing.T, st *store.Store, every time.Duration) *lockedOutput {
	out := &lockedOutput{}
	log := slog.New(slog.NewTextHandler(out, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pruneMessageIDs(ctx, st, log, every, messageIDsKept)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("pruneMessageIDs did not return after its context ended")
		}
	})
	return out
}

func TestPruneMessageIDsLoop(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, id := range []string{"old1", "old2", "new"} {
		if err := st.PutMessageID(ctx, store.MessageID{Domain: "d", JID: "u@x", XMPPID: id, ForeignID: "<" + id + "@b>"}); err != nil {
			t.Fatal(err)
		}
	}
	stale := time.Now().Add(-messageIDsKept - time.Hour).Unix()
	if _, err := st.DB().ExecContext(ctx, `UPDATE message_ids SET created = ? WHERE xmpp_id LIKE 'old%'`, stale); err != nil {
		t.Fatal(err)
	}
	// The first pass runs at once, not after the first period.
	out := runPrune(t, st, time.Hour)
	out.waitCount(t, 1, "pruned old message ids", "deleted=2")
	if _, err := st.MessageByXMPPID(ctx, "d", "u@x", "new"); err != nil {
		t.Fatalf("a recent link was pruned: %v", err)
	}
}

// A store that fails is reported, and the loop goes on trying.
func TestPruneMessageIDsFailure(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	out := runPrune(t, st, 10*time.Millisecond)
	// A first failure, then another at the next tick.
	out.waitCount(t, 1, "level=WARN", "cannot prune old message ids", "database is closed")
	out.waitCount(t, 2, "level=WARN", "cannot prune old message ids")
}
