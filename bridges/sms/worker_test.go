package sms

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/store"
	"passerelle/store/storetest"
)

// providerFunc is a Provider made of a function.
type providerFunc func(ctx context.Context, t Text) (string, error)

func (f providerFunc) Send(ctx context.Context, t Text) (string, error) { return f(ctx, t) }

// runQueued runs job j through the bridge's runner, as the queue does;
// it reports whether other jobs were removed with it.
func runQueued(ctx context.Context, b *Bridge, j store.Job) bool {
	return bridges.NewRunner(b.host, jobKind, b.runJob).Do(ctx, j)
}

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
	runQueued(ctx, b, j)
	jobGone(t, h, j.ID)
	if m, err := h.St.MessageByForeignID(context.Background(), testDomain, "SMstop"); err != nil || m.XMPPID != "s1" {
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
	runQueued(ctx, b, j)
	got, err := h.St.GetJob(context.Background(), j.ID)
	if err != nil || got.Attempts != 0 {
		t.Fatalf("job after a send cut off by the stop: %+v %v", got, err)
	}
	if n := len(h.Messages()) + len(h.Sent()); n != 0 {
		t.Fatalf("%d stanzas for a send cut off by the stop", n)
	}
}

// Run returns only once the runner has finished the text it was sending
// and recorded it, so the store is not closed under it.
func TestRunStopsRunner(t *testing.T) {
	b, h := idleBridge(t, "")
	sending, release := make(chan struct{}), make(chan struct{})
	b.provider = providerFunc(func(context.Context, Text) (string, error) {
		close(sending)
		<-release // a provider slow to answer, even to a cancelled request
		return "SMslow", nil
	})
	j := queueText(t, b, h, "s3", "slow")
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, b, h)
	<-sending
	cancel()
	waited := make(chan struct{})
	go func() { wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Run returned while a text was being sent")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once the text was sent")
	}
	jobGone(t, h, j.ID)
}

// runWorker starts b's worker on h with provider p until the test ends.
func runWorker(t *testing.T, b *Bridge, h *bridgetest.Host, p Provider) {
	t.Helper()
	b.provider = p
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, b, h)
	t.Cleanup(func() { cancel(); wait() })
}

// When the store will not remove a text the provider took, the text is
// not sent again: the removal is tried again until it works.
func TestSentButNotRemoved(t *testing.T) {
	b, h := idleBridge(t, "")
	var sends atomic.Int32
	runWorker(t, b, h, providerFunc(func(context.Context, Text) (string, error) {
		return fmt.Sprintf("SM%d", sends.Add(1)), nil
	}))
	lift := storetest.Refuse(t, h.St.Store, storetest.Delete, "jobs", "")
	j := queueText(t, b, h, "k1", "only once")
	b.jobs.Wake()
	for deadline := time.Now().Add(5 * time.Second); sends.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not sent")
		}
	}
	time.Sleep(200 * time.Millisecond) // ten backoffs of the fake host
	if n := sends.Load(); n != 1 {
		t.Fatalf("sent %d times while the store kept the job", n)
	}
	lift()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := h.St.GetJob(context.Background(), j.ID); errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job was not removed once the store allowed it")
		}
	}
	if n := sends.Load(); n != 1 {
		t.Fatalf("sent %d times", n)
	}
}

// failingWorker runs a worker whose provider fails every text with perr,
// on a store made to refuse op on jobs, and queues the text id. It returns
// the provider's count of tries.
func failingWorker(t *testing.T, id string, perr error, op string) (*bridgetest.Host, *atomic.Int32) {
	t.Helper()
	b, h := idleBridge(t, "")
	sends := new(atomic.Int32)
	runWorker(t, b, h, providerFunc(func(context.Context, Text) (string, error) {
		sends.Add(1)
		return "", perr
	}))
	storetest.Refuse(t, h.St.Store, op, "jobs", "")
	queueText(t, b, h, id, "text "+id)
	b.jobs.Wake()
	return h, sends
}

// When the store will not reschedule a text that failed, the worker backs
// off instead of trying it again at once, over and over.
func TestRescheduleRefusedBacksOff(t *testing.T) {
	_, sends := failingWorker(t, "k2", &ProviderError{Status: 503, Message: "busy"}, storetest.Update)
	time.Sleep(300 * time.Millisecond)
	// The fake host's backoff is 20 ms: about 15 tries; a worker that
	// does not wait makes thousands.
	if n := sends.Load(); n == 0 || n > 100 {
		t.Fatalf("%d tries in 300 ms", n)
	}
}

// When the store will not remove a refused text once it was reported, the
// report is not sent again.
func TestReportedButNotRemoved(t *testing.T) {
	h, sends := failingWorker(t, "k3", &ProviderError{Status: 400, Code: 21211, Message: "invalid number"}, storetest.Delete)
	failureReport(t, h, "k3", "not-acceptable")
	time.Sleep(200 * time.Millisecond)
	if n := sends.Load(); n != 1 {
		t.Fatalf("tried %d times", n)
	}
	if n := len(h.Messages()); n != 2 {
		t.Fatalf("%d stanzas: the failure was reported again", n)
	}
}
