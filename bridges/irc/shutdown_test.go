package irc

import (
	"context"
	"testing"
	"time"
)

// When Run's context ends, every connection is sent QUIT, and Run
// returns once it went out.
func TestShutdownQuits(t *testing.T) {
	fx := &fixture{b: New(Options{AllowPrivate: true}), h: newFakeHost(t), f: newFakeIRC(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := start(t, ctx, fx.b, fx.h)
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts = []int{fx.f.port()}, nil
	if err := fx.b.saveNetConfig(ctx, testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
	fx.enter(t, "nick")
	cancel()
	wait()
	if l := fx.f.expect(t, "QUIT"); l != "QUIT :Gateway shutting down" {
		t.Fatalf("quit line %q", l)
	}
	fx.f.closed(t)
}

// Wait also waits for the restoring of persistent channels, which reads
// the store on its own goroutine: the store is closed after Wait.
func TestWaitStopsRestore(t *testing.T) {
	h := newFakeHost(t)
	h.St.Exec(t, `INSERT INTO irc_channels (jid, server, channel, nick, persistent) VALUES (?, 'localhost', '#c', 'nick', 1)`, testUser)
	inRestore, release := make(chan struct{}), make(chan struct{})
	h.Allow = func(string) bool { close(inRestore); <-release; return false }
	b := New(Options{AllowPrivate: true})
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, b, h)
	<-inRestore
	cancel()
	waited := make(chan struct{})
	go func() { wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Wait returned while the restore was still running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return once the restore ended")
	}
}
