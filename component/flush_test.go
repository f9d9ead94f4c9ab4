package component

import (
	"context"
	"fmt"
	"testing"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// released reports whether ch is closed now.
func released(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func waitReleased(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("Flushed not released %s", what)
	}
}

func waitPumping(t *testing.T, c *Component) {
	t.Helper()
	waitFor(t, "the pump", func() bool {
		c.flush.mu.Lock()
		defer c.flush.mu.Unlock()
		return c.flush.pumping
	})
}

// Flushed is released once the server has confirmed the batch holding
// what was committed before the call, not before; with nothing committed
// since the last confirmation, by the pump's next read; and, for a batch
// the server does not confirm, when the stream ends.
func TestFlushedAfterConfirmation(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.holdSelfPings.Store(true)
	ctx := context.Background()
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s")
	isPing := func(e *xmlel.Element) bool { return e.Local == "iq" && e.Attr("to") == c.Domain() }
	fc := srv.accept(t)
	waitPumping(t, c)

	if err := c.SendMessage(ctx, stanza.Message("", "u@example.org", "chat", "m1", "one")); err != nil {
		t.Fatal(err)
	}
	done := c.Flushed()
	fc.expect(t, "m1", hasID("m1"))
	ping := fc.expect(t, "its confirmation", isPing)
	if released(done) {
		t.Fatal("released before the server confirmed the batch")
	}
	srv.route(fc, ping)
	waitReleased(t, done, "after the confirmation")

	// Nothing committed since: a read that finds nothing releases it.
	waitFor(t, "an empty outbox", func() bool { n, err := st.CountStanzas(ctx, c.Domain()); return err == nil && n == 0 })
	waitReleased(t, c.Flushed(), "with nothing committed")

	if err := c.SendMessage(ctx, stanza.Message("", "u@example.org", "chat", "m2", "two")); err != nil {
		t.Fatal(err)
	}
	done = c.Flushed()
	fc.expect(t, "m2", hasID("m2"))
	fc.expect(t, "its confirmation", isPing) // held, never routed back
	if released(done) {
		t.Fatal("released before the server confirmed the batch")
	}
	fc.nc.Close()
	waitReleased(t, done, "when the stream ended")
}

// settled returns once the pump has read the outbox to its end with no
// batch under way, so that the test's next Flushed is the first thing to
// wake it.
func settled(t *testing.T, c *Component) {
	t.Helper()
	waitPumping(t, c)
	waitReleased(t, c.Flushed(), "on a settled outbox")
}

// enqueue commits stanzas without waking the pump (Flushed does).
func enqueue(t *testing.T, c *Component, ids ...string) {
	t.Helper()
	raw := make([]string, len(ids))
	for i, id := range ids {
		raw[i] = stanza.Message(c.Domain(), "u@example.org", "chat", id, "body").String()
	}
	if err := c.store.EnqueueStanzas(context.Background(), c.Domain(), raw); err != nil {
		t.Fatal(err)
	}
}

// expectBatch reads messages until n of them and one ping came, and
// returns the ping.
func expectBatch(t *testing.T, c *Component, fc *fakeConn, n int) *xmlel.Element {
	t.Helper()
	var ping *xmlel.Element
	for got := 0; got < n || ping == nil; {
		e := fc.expect(t, "a message or a ping", func(e *xmlel.Element) bool {
			return e.Local == "message" || (e.Local == "iq" && e.Attr("to") == c.Domain())
		})
		switch {
		case e.Local == "message":
			got++
		case ping != nil:
			t.Fatalf("a second ping: %s", e)
		default:
			ping = e
		}
	}
	return ping
}

// The confirmation of the batch that holds a commit releases its
// Flushed, with a later batch still unconfirmed; the confirmation of a
// batch that filled the pump's read (outboxBatch stanzas) does not: the
// commit may be in the next one.
func TestFlushedByItsBatch(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.holdSelfPings.Store(true)
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)
	settled(t, c)

	enqueue(t, c, "a")
	done := c.Flushed()
	pingA := expectBatch(t, c, fc, 1)
	enqueue(t, c, "b")
	c.Queued()
	expectBatch(t, c, fc, 1) // b's ping, held
	srv.route(fc, pingA)
	waitReleased(t, done, "by its batch's confirmation, with the next one under way")

	fc.nc.Close()
	fc = srv.accept(t)
	srv.route(fc, expectBatch(t, c, fc, 1)) // b again, unconfirmed on the last stream
	settled(t, c)
	ids := make([]string, outboxBatch+10)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i)
	}
	enqueue(t, c, ids...)
	done = c.Flushed()
	ping1 := expectBatch(t, c, fc, outboxBatch)
	ping2 := expectBatch(t, c, fc, 10)
	confirmed := c.m.OutboxConfirmed.Load()
	srv.route(fc, ping1)
	waitFor(t, "the full batch's confirmation", func() bool { return c.m.OutboxConfirmed.Load() == confirmed+outboxBatch })
	if released(done) {
		t.Fatal("released by the confirmation of a full batch")
	}
	srv.route(fc, ping2)
	waitReleased(t, done, "by the last batch's confirmation")
}

// watchReads makes each read of c's pump report how many stanzas it
// found on reads, until open is closed.
func watchReads(reads chan<- int, open <-chan struct{}) func(*Component) {
	return func(c *Component) {
		c.pendingAfter = func(ctx context.Context, domain string, after int64, limit int) ([]store.OutboxItem, error) {
			items, err := c.store.PendingStanzasAfter(ctx, domain, after, limit)
			select {
			case reads <- len(items):
			case <-open:
			case <-ctx.Done():
			}
			return items, err
		}
	}
}

// untilEmpty waits for the pump's reads up to one that found nothing.
func untilEmpty(t *testing.T, reads <-chan int) {
	t.Helper()
	for {
		select {
		case n := <-reads:
			if n == 0 {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the pump did not read the outbox to its end")
		}
	}
}

// A Flushed call after the pump read its commit, while that batch is
// under way: the read it wakes finds nothing more, and the batch's
// confirmation releases it even with a later batch under way.
func TestFlushedAfterItsRead(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.holdSelfPings.Store(true)
	reads, open := make(chan int), make(chan struct{})
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s", watchReads(reads, open))
	fc := srv.accept(t)
	untilEmpty(t, reads)
	enqueue(t, c, "a")
	c.Queued()
	untilEmpty(t, reads)
	done := c.Flushed()
	untilEmpty(t, reads)
	enqueue(t, c, "b")
	c.Queued()
	untilEmpty(t, reads)
	close(open)
	pingA := expectBatch(t, c, fc, 1)
	expectBatch(t, c, fc, 1) // b's ping, held
	srv.route(fc, pingA)
	waitReleased(t, done, "by its batch's confirmation, with the next one under way")
}

// Without a stream, nothing is worth waiting for.
func TestFlushedWithoutStream(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.refuse.Store(true)
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
	if !released(c.Flushed()) {
		t.Fatal("Flushed waits while no stream is up")
	}
}
