package component

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/store"
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

// A stored secret that does not open under its user's binding (here it is
// another user's) is left out of the registration and logged; the rest of
// the registration is read, so that the user can register again.
func TestRegistrationSecretNotBound(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sl, _, err := st.OpenSealer(ctx, strings.Repeat("ab", 32), "")
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	c := New(Options{Domain: "test.example.org", Store: st, Sealer: sl, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	sealed := sl.Seal("pw", store.Binding{Domain: "test.example.org", JID: "alice@example.org", Field: "password"})
	for _, u := range []string{"alice@example.org", "bob@example.org"} {
		if err := st.PutRegistration(ctx, "test.example.org", u, map[string]string{"nick": u[:1], "password": sealed}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := c.Registration(ctx, "alice@example.org"); err != nil || r.Fields["password"] != "pw" {
		t.Fatalf("alice: %+v %v", r, err)
	}
	if logs.Len() != 0 {
		t.Fatalf("log: %s", logs.String())
	}
	r, err := c.Registration(ctx, "bob@example.org")
	if _, ok := r.Fields["password"]; err != nil || ok || r.Fields["nick"] != "b" {
		t.Fatalf("bob: %+v %v", r, err)
	}
	if l := logs.String(); !strings.Contains(l, "password of bob@example.org on test.example.org") || !strings.Contains(l, store.ErrNotBound.Error()) {
		t.Errorf("log: %s", l)
	}
}
