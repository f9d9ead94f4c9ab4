package component

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
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

// removalGate holds the outbox's removals for a test: each reports the
// last id it removes through on held, then waits for its result on
// release (nil: the store removes). Once the gate is opened, removals go
// straight to the store.
type removalGate struct {
	held    chan int64
	release chan error
	opened  chan struct{}
	once    sync.Once
}

// holdRemovals makes c's outbox removals wait at g.
func holdRemovals(t *testing.T, g **removalGate) func(*Component) {
	return func(c *Component) {
		gate := &removalGate{held: make(chan int64), release: make(chan error), opened: make(chan struct{})}
		*g = gate
		c.sentThrough = func(ctx context.Context, domain string, last int64) error {
			select {
			case gate.held <- last:
				select {
				case err := <-gate.release:
					if err != nil {
						return err
					}
				case <-gate.opened:
				}
			case <-gate.opened:
			}
			return c.store.StanzasSentThrough(ctx, domain, last)
		}
	}
}

func (g *removalGate) open() { g.once.Do(func() { close(g.opened) }) }

// hold waits for the next removal to reach the gate and returns the last
// id it removes through.
func (g *removalGate) hold(t *testing.T) int64 {
	t.Helper()
	select {
	case last := <-g.held:
		return last
	case <-time.After(10 * time.Second):
		t.Fatal("no removal of the sent stanzas")
		return 0
	}
}

func isMessage(e *xmlel.Element) bool { return e.Local == "message" }

// sendWhileRemoving sends m1, holds the removal that follows its
// confirmation, and sends m2 while that removal is held, which the pump
// writes to fc: it returns the last id of the held removal.
func sendWhileRemoving(t *testing.T, c *Component, fc *fakeConn, g *removalGate) int64 {
	t.Helper()
	ctx := context.Background()
	if err := c.SendMessage(ctx, stanza.Message("", "u@example.org", "chat", "m1", "first")); err != nil {
		t.Fatal(err)
	}
	fc.expect(t, "m1", hasID("m1"))
	last := g.hold(t)
	if err := c.SendMessage(ctx, stanza.Message("", "u@example.org", "chat", "m2", "while removing")); err != nil {
		t.Fatal(err)
	}
	if got := fc.expect(t, "a message", isMessage); got.Attr("id") != "m2" {
		t.Fatalf("got %s while the removal was held, want m2", got)
	}
	return last
}

// The pump does not wait for the store to remove what the server
// confirmed: while a removal is under way (a group commit carrying other
// users' writes), a stanza queued meanwhile is sent. The stanzas confirmed
// meanwhile are removed by the next removal.
func TestOutboxSendsWhileRemoving(t *testing.T) {
	srv := newFakeServer(t, "s")
	var g *removalGate
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s", holdRemovals(t, &g))
	t.Cleanup(g.open) // before the component stops
	first := sendWhileRemoving(t, c, srv.accept(t), g)
	g.release <- nil
	if next := g.hold(t); next <= first {
		t.Fatalf("the next removal goes through id %d, want past %d (m2)", next, first)
	}
	g.release <- nil
	waitFor(t, "an empty outbox", func() bool {
		n, err := st.CountStanzas(context.Background(), c.Domain())
		return err == nil && n == 0
	})
}

// A pump stopped while a removal is under way returns once the removal is
// done, still under RecordContext: what the server confirmed is not sent
// again after the restart. What was confirmed after it stays for the
// next removal.
func TestOutboxStopWaitsForRemoval(t *testing.T) {
	srv := newFakeServer(t, "s")
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := New(Options{Domain: "test.example.org", Addr: srv.ln.Addr().String(), Secret: "s", Bridge: &fakeBridge{}, Store: st,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c.standbyBackoff = bridges.Backoff{First: time.Hour, Max: time.Hour}
	var g *removalGate
	holdRemovals(t, &g)(c)
	t.Cleanup(g.open)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	first := sendWhileRemoving(t, c, srv.accept(t), g)
	waitFor(t, "m2 confirmed", func() bool { return c.m.OutboxConfirmed.Load() == 2 })

	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while the removal was held", err)
	case <-time.After(100 * time.Millisecond):
	}
	g.release <- nil
	// m2, confirmed while m1's removal ran, is removed before Run returns.
	if next := g.hold(t); next <= first {
		t.Fatalf("the removal after the stop goes through id %d, want past %d (m2)", next, first)
	}
	g.release <- nil
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the removal")
	}
	left, err := st.PendingStanzasAfter(context.Background(), c.Domain(), 0, outboxBatch)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("outbox after the stop: %v, want it empty (m1 and m2 were confirmed)", left)
	}
}

// A stanza confirmed while a removal ran, when the stream breaks, is
// removed before the next stream starts: the next stream does not send
// it again.
func TestOutboxConfirmedNotResentAfterReconnect(t *testing.T) {
	srv := newFakeServer(t, "s")
	var g *removalGate
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s", holdRemovals(t, &g))
	t.Cleanup(g.open) // before the component stops
	fc := srv.accept(t)
	first := sendWhileRemoving(t, c, fc, g)
	waitFor(t, "m2 confirmed", func() bool { return c.m.OutboxConfirmed.Load() == 2 })
	fc.nc.Close()
	g.release <- nil // m1's removal
	if next := g.hold(t); next <= first {
		t.Fatalf("the next removal goes through id %d, want past %d (m2)", next, first)
	}
	g.release <- nil
	fc = srv.accept(t)
	if err := c.SendMessage(context.Background(), stanza.Message("", "u@example.org", "chat", "m3", "after")); err != nil {
		t.Fatal(err)
	}
	if got := fc.expect(t, "a message", isMessage); got.Attr("id") != "m3" {
		t.Fatalf("first message on the new stream: %s, want m3 (m2 was confirmed)", got)
	}
	g.open()
	waitFor(t, "an empty outbox", func() bool {
		n, err := st.CountStanzas(context.Background(), c.Domain())
		return err == nil && n == 0
	})
}

// A removal under way that fails stops the pump as a failed removal
// always did: what is queued next waits until the removal, retried with
// backoff, succeeds; it is then sent once.
func TestOutboxFailedRemovalHoldsSends(t *testing.T) {
	srv := newFakeServer(t, "s")
	var lb logBuffer
	var g *removalGate
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s", failingStore(&lb), holdRemovals(t, &g))
	t.Cleanup(g.open) // before the component stops
	fc := srv.accept(t)
	ctx := context.Background()
	sendWhileRemoving(t, c, fc, g)
	g.release <- errors.New("disk full")

	// Queued after the failure: not sent during the retries.
	g.hold(t)
	if err := c.SendMessage(ctx, stanza.Message("", "u@example.org", "chat", "m3", "after the failure")); err != nil {
		t.Fatal(err)
	}
	g.release <- errors.New("disk full")
	g.hold(t)
	g.release <- errors.New("disk full")
	g.hold(t)
	// The pump is in the fourth removal: m3 has not been sent.
	quiet := time.After(100 * time.Millisecond)
	for waiting := true; waiting; {
		select {
		case e := <-fc.in:
			if isMessage(e) {
				t.Fatalf("got %s while the removal failed", e)
			}
		case <-quiet:
			waiting = false
		}
	}
	g.release <- nil
	if got := fc.expect(t, "a message", isMessage); got.Attr("id") != "m3" {
		t.Fatalf("got %s, want m3 once the removal succeeded", got)
	}
	g.open()
	waitFor(t, "an empty outbox", func() bool { n, err := st.CountStanzas(ctx, c.Domain()); return err == nil && n == 0 })
	if n := lb.count("level=ERROR"); n != 1 {
		t.Errorf("%d ERROR lines for one run of failures, want 1:\n%s", n, lb.String())
	}
	if got := c.m.OutboxStoreErrors.Load(); got != 3 {
		t.Errorf("%d store errors counted, want 3", got)
	}
}
