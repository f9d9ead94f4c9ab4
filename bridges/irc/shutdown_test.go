package irc

import (
	"context"
	"testing"
)

// When Start's context ends, every connection is sent QUIT, and Wait
// returns once it went out.
func TestShutdownQuits(t *testing.T) {
	fx := &fixture{b: New(Options{AllowPrivate: true}), h: newFakeHost(t), f: newFakeIRC(t)}
	fx.b.Wait() // never started: returns at once
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := fx.b.Start(ctx, fx.h); err != nil {
		t.Fatal(err)
	}
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts = []int{fx.f.port()}, nil
	if err := fx.b.saveNetConfig(ctx, testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
	fx.enter(t, "nick")
	cancel()
	fx.b.Wait()
	if l := fx.f.expect(t, "QUIT"); l != "QUIT :Gateway shutting down" {
		t.Fatalf("quit line %q", l)
	}
	fx.f.closed(t)
}
