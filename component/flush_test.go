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

// startWatched starts a component whose pump reports each read on the
// returned channel and waits for the test to take it (until the test
// ends), on a server that hands the component's confirmations to the
// test; it returns once the pump's first reads found nothing.
func startWatched(t *testing.T) (*Component, *fakeServer, *fakeConn, <-chan int) {
	t.Helper()
	srv := newFakeServer(t, "s")
	srv.holdSelfPings.Store(true)
	reads, open := make(chan int), make(chan struct{})
	t.Cleanup(func() { close(open) })
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s", watchReads(reads, open))
	fc := srv.accept(t)
	untilEmpty(t, reads)
	return c, srv, fc, reads
}

// Flushed is released by the confirmation of the batch holding what was
// committed before it, not before; with nothing committed, by the read it
// wakes; and, for a batch the server does not confirm, when the pump
// stops with the stream.
func TestFlushedAfterConfirmation(t *testing.T) {
	c, srv, fc, reads := startWatched(t)

	enqueue(t, c, "m1")
	done := c.Flushed()
	untilEmpty(t, reads)
	ping := expectBatch(t, c, fc, 1)
	if released(done) {
		t.Fatal("released before the server confirmed the batch")
	}
	srv.route(fc, ping)
	waitReleased(t, done, "after the confirmation")
	untilEmpty(t, reads) // the pump's read after the confirmation

	done = c.Flushed()
	untilEmpty(t, reads)
	waitReleased(t, done, "with nothing committed")

	enqueue(t, c, "m2")
	done = c.Flushed()
	untilEmpty(t, reads)
	expectBatch(t, c, fc, 1) // its ping, held: never confirmed
	if released(done) {
		t.Fatal("released before the server confirmed the batch")
	}
	fc.nc.Close()
	waitReleased(t, done, "when the stream ended")
}

// The confirmation of the batch that holds a commit releases its
// Flushed, with a later batch still unconfirmed.
func TestFlushedByItsBatch(t *testing.T) {
	c, srv, fc, reads := startWatched(t)
	enqueue(t, c, "a")
	done := c.Flushed()
	untilEmpty(t, reads)
	pingA := expectBatch(t, c, fc, 1)
	enqueue(t, c, "b")
	c.Queued()
	untilEmpty(t, reads)
	expectBatch(t, c, fc, 1) // b's ping, held
	srv.route(fc, pingA)
	waitReleased(t, done, "by its batch's confirmation, with the next one under way")
}

// A Flushed call after the pump read its commit, while that batch is
// under way: the read it wakes finds nothing more, and the batch's
// confirmation releases it even with a later batch under way.
func TestFlushedAfterItsRead(t *testing.T) {
	c, srv, fc, reads := startWatched(t)
	enqueue(t, c, "a")
	c.Queued()
	untilEmpty(t, reads)
	done := c.Flushed()
	untilEmpty(t, reads)
	enqueue(t, c, "b")
	c.Queued()
	untilEmpty(t, reads)
	pingA := expectBatch(t, c, fc, 1)
	expectBatch(t, c, fc, 1) // b's ping, held
	srv.route(fc, pingA)
	waitReleased(t, done, "by its batch's confirmation, with the next one under way")
}

// The confirmation of a batch that filled the pump's read (outboxBatch
// stanzas) does not release Flushed: the commit may be in the next one.
func TestFlushedNotByAFullBatch(t *testing.T) {
	c, srv, fc, reads := startWatched(t)
	ids := make([]string, outboxBatch+10)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i)
	}
	enqueue(t, c, ids...)
	done := c.Flushed()
	untilEmpty(t, reads)
	ping1 := expectBatch(t, c, fc, outboxBatch)
	ping2 := expectBatch(t, c, fc, 10)
	srv.route(fc, ping1)
	untilEmpty(t, reads) // the pump's read after the confirmation
	if released(done) {
		t.Fatal("released by the confirmation of a full batch")
	}
	srv.route(fc, ping2)
	waitReleased(t, done, "by the last batch's confirmation")
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
