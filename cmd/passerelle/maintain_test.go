package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/store"
)

// logLines collects what a logger writes, safe for concurrent use.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// waitFor waits until the log has a line containing every one of parts.
func (l *logLines) waitFor(t *testing.T, parts ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		out := l.b.String()
		l.mu.Unlock()
	lines:
		for _, line := range strings.Split(out, "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", parts, out)
		}
	}
}

// runPrune runs pruneMessageIDs until the test ends, and checks it returns
// once its context is cancelled.
func runPrune(t *testing.T, st *store.Store, every time.Duration) *logLines {
	var out logLines
	log := slog.New(slog.NewTextHandler(&out, nil))
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
	return &out
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
	out.waitFor(t, "pruned old message ids", "deleted=2")
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
	out.waitFor(t, "level=WARN", "cannot prune old message ids", "database is closed")
	out.mu.Lock()
	n := strings.Count(out.b.String(), "cannot prune old message ids")
	out.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out.mu.Lock()
		m := strings.Count(out.b.String(), "cannot prune old message ids")
		out.mu.Unlock()
		if m > n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop did not try again after a failure")
		}
	}
}
