package component

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// A user's work runs in order on a goroutine that exists only while work
// is queued: once the queue is empty, the goroutine ends and the user's
// session (the queue) goes; the next Post starts a new one.
func TestUserGoroutineOnlyWhileBusy(t *testing.T) {
	c := New(Options{Domain: "test.example.org", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var mu sync.Mutex
	var got []int
	release := make(chan struct{})
	idle := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.users["u@example.org"] == nil
	}
	waitIdle := func() {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !idle(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the user's goroutine did not end")
			}
		}
	}
	for round := 0; round < 2; round++ {
		if err := c.Post("u@example.org", func(context.Context) { <-release }); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			if err := c.Post("u@example.org", func(context.Context) { mu.Lock(); got = append(got, i); mu.Unlock() }); err != nil {
				t.Fatal(err)
			}
		}
		if idle() {
			t.Fatal("idle while work is queued")
		}
		release <- struct{}{}
		waitIdle()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 20 {
		t.Fatalf("ran %d of 20", len(got))
	}
	for i, v := range got {
		if v != i%10 {
			t.Fatalf("out of order: %v", got)
		}
	}
}

// Once the component stops, queued work is left and the goroutine ends.
func TestUserGoroutineStopsWithComponent(t *testing.T) {
	c := New(Options{Domain: "test.example.org", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	c.runCtx = ctx
	started, release := make(chan struct{}), make(chan struct{})
	ran := make(chan struct{}, 1)
	c.Post("u@example.org", func(context.Context) { close(started); <-release })
	c.Post("u@example.org", func(context.Context) { ran <- struct{}{} })
	<-started
	cancel()
	close(release)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		running := c.users["u@example.org"].running
		c.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the user's goroutine did not stop with the component")
		}
	}
	select {
	case <-ran:
		t.Fatal("work ran after the component stopped")
	default:
	}
}

// A user whose work is done and who has no command open is forgotten: a
// sender seen once holds no memory. One with a command open is kept until
// the command ends.
func TestUserSessionForgottenWhenIdle(t *testing.T) {
	c := New(Options{Domain: "test.example.org", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	known := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.users["u@example.org"] != nil
	}
	waitGone := func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); known() == want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("session still known = %v", want)
			}
		}
	}
	done := make(chan struct{})
	c.Post("u@example.org", func(context.Context) { close(done) })
	<-done
	waitGone(true)

	// A command left open keeps the session through idle periods.
	opened := make(chan string)
	c.Post("u@example.org", func(context.Context) {
		opened <- c.openCommand("u@example.org", c.userSession("u@example.org"), "node")
	})
	sid := <-opened
	time.Sleep(20 * time.Millisecond)
	if !known() {
		t.Fatal("a session with an open command was forgotten")
	}
	ended := make(chan struct{})
	c.Post("u@example.org", func(context.Context) {
		c.userSession("u@example.org").endCommand(sid)
		close(ended)
	})
	<-ended
	waitGone(true)
}

// A command session that expires while the user's queue is full ends once
// there is room again.
func TestCommandExpiryWaitsForRoom(t *testing.T) {
	c := New(Options{Domain: "test.example.org", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c.commandTimeout = 20 * time.Millisecond
	const user = "u@example.org"
	release, opened := make(chan struct{}), make(chan struct{})
	c.Post(user, func(context.Context) {
		c.openCommand(user, c.userSession(user), "node")
		close(opened)
		<-release
	})
	<-opened
	for range userQueueSize {
		if err := c.Post(user, func(context.Context) {}); err != nil {
			t.Fatal(err)
		}
	}
	// The expiry comes up against the full queue (at least) once.
	for deadline := time.Now().Add(5 * time.Second); c.m.Dropped.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the expiry never came up against the full queue")
		}
	}
	close(release)
	known := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.users[user] != nil
	}
	for deadline := time.Now().Add(5 * time.Second); known(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the command session never ended after the queue drained")
		}
	}
}
