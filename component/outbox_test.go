package component

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// logBuffer collects a component's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) count(substr string) int { return strings.Count(l.String(), substr) }

// failingStore makes the component retry the store quickly and log into lb.
func failingStore(lb *logBuffer) func(*Component) {
	return func(c *Component) {
		c.opts.RetryMaxDelay = 20 * time.Millisecond
		c.log = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hasID(id string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool { return e.Attr("id") == id }
}

// A batch the server confirmed but the store will not remove is not sent
// again, on that stream or the next: the pump retries the removal with
// backoff, sends nothing else meanwhile, logs one error for the run of
// failures (and a warning every storeWarnEvery), and carries on once the
// store works.
func TestOutboxNotResentWhenStoreRefusesRemoval(t *testing.T) {
	srv := newFakeServer(t, "s")
	var lb logBuffer
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s", failingStore(&lb))
	fc := srv.accept(t)
	if _, err := st.DB().Exec(`CREATE TRIGGER refuse BEFORE DELETE ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.SendMessage(ctx, stanza.Message("", "u@example.org", "chat", "m1", "once")); err != nil {
		t.Fatal(err)
	}
	fc.expect(t, "m1", hasID("m1"))
	waitFor(t, "failed removals", func() bool { return c.m.OutboxStoreErrors.Load() >= storeWarnEvery })

	// A new stream does not send m1 again, nor m2 while m1 cannot be removed.
	fc.nc.Close()
	fc = srv.accept(t)
	if err := c.SendMessage(ctx, stanza.Message("", "u@example.org", "chat", "m2", "after")); err != nil {
		t.Fatal(err)
	}
	n := c.m.OutboxStoreErrors.Load()
	waitFor(t, "more failed removals", func() bool { return c.m.OutboxStoreErrors.Load() >= n+2 })
	if _, err := st.DB().Exec(`DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	got := fc.expect(t, "a message", func(e *xmlel.Element) bool { return e.Local == "message" })
	if got.Attr("id") != "m2" {
		t.Fatalf("first message on the new stream: %s, want m2", got)
	}
	waitFor(t, "an empty outbox", func() bool { n, err := st.CountStanzas(ctx, c.Domain()); return err == nil && n == 0 })
	if n := lb.count("level=ERROR"); n != 1 {
		t.Errorf("%d ERROR lines for one run of failures, want 1:\n%s", n, lb.String())
	}
	if lb.count("level=WARN msg=\"cannot remove sent stanzas") == 0 {
		t.Errorf("no warning after %d failures", storeWarnEvery)
	}
	if lb.count(`msg="the outbox works again"`) != 1 {
		t.Errorf("no line saying the store works again:\n%s", lb.String())
	}
}

// An outbox the store will not read is retried after a backoff, without a
// wake-up from a new stanza.
func TestOutboxReadRetried(t *testing.T) {
	srv := newFakeServer(t, "s")
	var lb logBuffer
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s", failingStore(&lb), func(c *Component) {
		if _, err := c.store.DB().Exec(`ALTER TABLE outbox RENAME TO outbox_away`); err != nil {
			t.Fatal(err)
		}
	})
	srv.accept(t)
	waitFor(t, "a failed read", func() bool { return c.m.OutboxStoreErrors.Load() >= 1 })
	if _, err := st.DB().Exec(`ALTER TABLE outbox_away RENAME TO outbox`); err != nil {
		t.Fatal(err)
	}
	// Queued behind the pump's back: only its retry finds it.
	if err := st.EnqueueStanzas(context.Background(), c.Domain(), []string{stanza.Message(c.Domain(), "u@example.org", "chat", "r1", "read").String()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an empty outbox", func() bool { n, err := st.CountStanzas(context.Background(), c.Domain()); return err == nil && n == 0 })
	if n := lb.count("level=ERROR"); n != 1 {
		t.Errorf("%d ERROR lines, want 1:\n%s", n, lb.String())
	}
}

// The pump does not wait for a batch's confirmation before it sends the
// next: with no ping answered, every stanza of several batches reaches the
// server, and none leaves the store. Unconfirmed, they are all sent again
// on the next stream; confirmed, they leave the store and are not sent on
// the stream after.
func TestOutboxPipelined(t *testing.T) {
	const total = 2*outboxBatch + outboxBatch/2
	srv := newFakeServer(t, "s")
	srv.holdSelfPings.Store(true)
	ctx := context.Background()
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s", func(c *Component) {
		raw := make([]string, total)
		for i := range raw {
			raw[i] = stanza.Message(c.Domain(), "u@example.org", "chat", fmt.Sprintf("m%d", i), "body").String()
		}
		if err := c.store.EnqueueStanzas(ctx, c.Domain(), raw); err != nil {
			t.Fatal(err)
		}
	})
	isPing := func(e *xmlel.Element) bool { return e.Local == "iq" && e.Attr("to") == c.Domain() }
	// every reads the next total messages, in order, and the pings
	// between them.
	every := func(fc *fakeConn) (pings []*xmlel.Element) {
		t.Helper()
		for i := 0; i < total; {
			e := fc.expect(t, fmt.Sprintf("m%d or a ping", i), func(e *xmlel.Element) bool { return e.Local == "message" || isPing(e) })
			if isPing(e) {
				pings = append(pings, e)
				continue
			}
			if e.Attr("id") != fmt.Sprintf("m%d", i) {
				t.Fatalf("got %s, want m%d", e, i)
			}
			i++
		}
		return pings
	}

	fc := srv.accept(t)
	every(fc)
	fc.expect(t, "the last batch's ping", isPing)
	if n, err := st.CountStanzas(ctx, c.Domain()); err != nil || n != total {
		t.Fatalf("%d stanzas in the outbox before any confirmation (%v), want %d", n, err, total)
	}

	// Unconfirmed: all sent again on the next stream, where the server
	// confirms them.
	srv.holdSelfPings.Store(false)
	fc.nc.Close()
	fc = srv.accept(t)
	every(fc)
	waitFor(t, "an empty outbox", func() bool { n, err := st.CountStanzas(ctx, c.Domain()); return err == nil && n == 0 })

	// Confirmed: not sent again.
	fc.nc.Close()
	fc = srv.accept(t)
	if err := c.SendMessage(ctx, stanza.Message("", "u@example.org", "chat", "after", "after")); err != nil {
		t.Fatal(err)
	}
	if got := fc.expect(t, "a message", func(e *xmlel.Element) bool { return e.Local == "message" }); got.Attr("id") != "after" {
		t.Fatalf("first message on the new stream: %s, want the one sent after the confirmations", got)
	}
}
