package email

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges/bridgetest"
)

// watching returns the users whose mailbox watcher runs.
func watching(b *Bridge) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var users []string
	for u := range b.watchers {
		users = append(users, u)
	}
	slices.Sort(users)
	return users
}

// mailboxUsers registers two users with their own mailbox and a third
// with a hosted address only, on a host not started yet.
func mailboxUsers(t *testing.T, b *Bridge) *bridgetest.Host {
	t.Helper()
	m := startMemIMAP(t)
	h := newFakeHost(t, b)
	ctx := context.Background()
	for _, u := range []string{"bob@example.org", "carol@example.org"} {
		f := mailboxValues(m.addr, "secret")
		f["address"] = u[:3]
		if err := h.St.PutRegistration(ctx, testDomain, u, f, []string{u[:3]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.St.PutRegistration(ctx, testDomain, "dave@example.org", map[string]string{"address": "dave"}, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	return h
}

// At start only the watchers of the users the host gives the bridge
// start; a user released stops, one acquired starts.
func TestWatchersOfHeldUsers(t *testing.T) {
	b := New(Options{Domain: testDomain, AllowPrivate: true})
	h := mailboxUsers(t, b)
	var asked []string
	h.Owned = func(users []string) ([]string, error) {
		asked = append(asked, users...)
		return []string{"bob@example.org"}, nil
	}
	h.StartOn(t, b)
	slices.Sort(asked)
	if !slices.Equal(asked, []string{"bob@example.org", "carol@example.org"}) {
		t.Fatalf("the bridge asked to hold %v, want the users with a mailbox", asked)
	}
	if w := watching(b); !slices.Equal(w, []string{"bob@example.org"}) {
		t.Fatalf("watching %v, want bob's alone", w)
	}
	h.Run(func(ctx context.Context) { b.Released(ctx, "bob@example.org") })
	if w := watching(b); len(w) != 0 {
		t.Fatalf("watching %v after bob was released", w)
	}
	b.Acquired(context.Background(), []string{"carol@example.org", "dave@example.org", "nobody@example.org"})
	if w := watching(b); !slices.Equal(w, []string{"carol@example.org"}) {
		t.Fatalf("watching %v, want carol's alone (dave has no mailbox, nobody no registration)", w)
	}
}

// When the host cannot say which users it holds, no watcher starts, and
// the bridge says so.
func TestWatchersOwnFails(t *testing.T) {
	b := New(Options{Domain: testDomain, AllowPrivate: true})
	h := mailboxUsers(t, b)
	h.Owned = func(users []string) ([]string, error) { return nil, errors.New("database gone") }
	h.StartOn(t, b)
	h.Logs.Wait(t, "cannot hold the users of mailboxes")
	if w := watching(b); len(w) != 0 {
		t.Fatalf("watching %v", w)
	}
}

// Once the instance's lease on a user ended (another instance may watch
// the mailbox now), the watcher forwards no more mail, does not record a
// position and stops without connecting again; Released then returns at
// once.
func TestFencedWatcherStops(t *testing.T) {
	b := New(Options{Domain: testDomain, AllowPrivate: true})
	m := startMemIMAP(t)
	h := newFakeHost(t, b)
	const user = "bob@example.org"
	f := mailboxValues(m.addr, "secret")
	if err := h.St.PutRegistration(context.Background(), testDomain, user, f, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	var leased atomic.Bool
	leased.Store(true)
	h.Lease = leased.Load
	h.StartOn(t, b)
	waitPos(t, b, user, func(imapPos) bool { return true })
	m.appendMail(t, "one", "while leased")
	if body := nextChat(t, h).ChildText("", "body"); !strings.Contains(body, "while leased") {
		t.Fatalf("forwarded %q", body)
	}
	waitPos(t, b, user, func(p imapPos) bool { return p.LastUID == 1 })
	b.mu.Lock()
	w := b.watchers[user]
	b.mu.Unlock()

	leased.Store(false)
	m.appendMail(t, "two", "after the lease")
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher keeps running")
	}
	h.Logs.Wait(t, "mailbox watcher stopped: the instance no longer holds the user")
	if sent := h.Drain(); len(sent) != 0 {
		t.Errorf("sent once the lease ended: %s", sent[0])
	}
	if p, _, _ := b.loadPos(context.Background(), user); p.LastUID != 1 {
		t.Errorf("position recorded once the lease ended: %+v", p)
	}
	h.Run(func(ctx context.Context) { b.Released(ctx, user) })
	if ws := watching(b); len(ws) != 0 {
		t.Errorf("watching %v after the release", ws)
	}
}
