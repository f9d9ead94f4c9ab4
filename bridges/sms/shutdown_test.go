package sms

import (
	"context"
	"testing"
	"time"
)

// providerFunc is a Provider made of a function.
type providerFunc func(ctx context.Context, t Text) (string, error)

func (f providerFunc) Send(ctx context.Context, t Text) (string, error) { return f(ctx, t) }

// A text the provider took while the gateway was stopping is recorded as
// sent: its job is gone (it would go out again after the restart) and its
// sid is kept for the delivery reports.
func TestSentWhileStopping(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, h := idleBridge(t, "")
	b.provider = providerFunc(func(context.Context, Text) (string, error) {
		cancel() // the gateway stops while the provider answers
		return "SMstop", nil
	})
	j := queueText(t, b, h, "s1", "sent as we stop")
	b.send(ctx, j)
	jobGone(t, h, j.ID)
	if m, err := h.st.MessageByForeignID(context.Background(), testDomain, "SMstop"); err != nil || m.XMPPID != "s1" {
		t.Fatalf("sid not recorded: %+v %v", m, err)
	}
}

// A text whose sending failed while the gateway was stopping stays queued
// as it was: whether it went out is not known, and it is not reported.
func TestFailedWhileStopping(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, h := idleBridge(t, "")
	b.provider = providerFunc(func(ctx context.Context, _ Text) (string, error) {
		cancel()
		return "", ctx.Err()
	})
	j := queueText(t, b, h, "s2", "cut off")
	b.send(ctx, j)
	got, err := h.st.GetJob(context.Background(), j.ID)
	if err != nil || got.Attempts != 0 {
		t.Fatalf("job after a send cut off by the stop: %+v %v", got, err)
	}
	if n := h.count(false) + h.count(true); n != 0 {
		t.Fatalf("%d stanzas for a send cut off by the stop", n)
	}
}

// Wait returns only once the worker has finished the text it was sending
// and recorded it, so the store is not closed under it.
func TestWaitStopsWorker(t *testing.T) {
	b, h := idleBridge(t, "")
	sending, release := make(chan struct{}), make(chan struct{})
	b.provider = providerFunc(func(context.Context, Text) (string, error) {
		close(sending)
		<-release // a provider slow to answer, even to a cancelled request
		return "SMslow", nil
	})
	j := queueText(t, b, h, "s3", "slow")
	ctx, cancel := context.WithCancel(context.Background())
	b.Wait() // never started: returns at once
	if err := b.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	<-sending
	cancel()
	waited := make(chan struct{})
	go func() { b.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Wait returned while a text was being sent")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return once the text was sent")
	}
	jobGone(t, h, j.ID)
}
