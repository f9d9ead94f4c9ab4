package component

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/store"
)

// runBridge is a fakeBridge whose Run is scripted.
type runBridge struct {
	fakeBridge
	run func(ctx context.Context, h bridges.Host) error
}

func (b *runBridge) Run(ctx context.Context, h bridges.Host) error { return b.run(ctx, h) }

// A bridge that fails to start stops the component with a permanent
// error, before it connects.
func TestBridgeFailsToStart(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	b := &runBridge{run: func(context.Context, bridges.Host) error { return errors.New("address already in use") }}
	_, done, _ := startComponent(t, srv, b, "s3cret")
	select {
	case err := <-done:
		var perm *PermanentError
		if !errors.As(err, &perm) || !strings.Contains(err.Error(), "failed to start the test bridge: address already in use") {
			t.Fatalf("Run = %v", err)
		}
		done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going after its bridge failed")
	}
	select {
	case <-srv.conns:
		t.Fatal("connected although the bridge failed to start")
	default:
	}
}

// The component connects once its bridge is ready, and its Run returns
// only once the bridge's Run has returned (its work done, its listeners
// closed), so that the store can be closed after it.
func TestRunWaitsForBridge(t *testing.T) {
	srv := newFakeServer(t, "s3cret")
	var finished atomic.Bool
	b := &runBridge{run: func(ctx context.Context, h bridges.Host) error {
		h.Ready()
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // work that takes a while after the stop
		finished.Store(true)
		return nil
	}}
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := New(Options{Domain: "test.example.org", Addr: srv.ln.Addr().String(), Secret: "s3cret", Bridge: b,
		Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	srv.accept(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if !finished.Load() {
		t.Fatal("Run returned while its bridge was still working")
	}
}
