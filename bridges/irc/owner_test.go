package irc

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/component/xmlel"
)

// persistentFixture is a bridge whose store holds a persistent channel
// on the fake server for testUser (nick "nick") and for other (nick
// "other"), not started yet.
func persistentFixture(t *testing.T) (*fixture, string) {
	t.Helper()
	const other = "w@example.org"
	fx := &fixture{b: New(Options{AllowPrivate: true}), h: newFakeHost(t), f: newFakeIRC(t)}
	fx.b.db, fx.b.host = fx.h.St.Store, fx.h
	for user, nick := range map[string]string{testUser: "nick", other: "other"} {
		fx.h.St.Exec(t, `INSERT INTO irc_channels (jid, server, channel, nick, persistent) VALUES (?, 'localhost', '#c', ?, 1)`, user, nick)
		cfg := defaultNetConfig()
		cfg.Ports, cfg.TLSPorts = []int{fx.f.port()}, nil
		if err := fx.b.saveNetConfig(context.Background(), user, "localhost", cfg); err != nil {
			t.Fatal(err)
		}
	}
	return fx, other
}

func (fx *fixture) networksOfUser(user string) int {
	var n int
	fx.h.Run(func(context.Context) { n = len(fx.b.networksOf(user)) })
	return n
}

// At start the persistent channels are rejoined only for the users the
// host gives the bridge; a user released is quit, one acquired rejoined.
func TestRestoreHeldUsers(t *testing.T) {
	fx, other := persistentFixture(t)
	var mu sync.Mutex
	var asked []string
	fx.h.Owned = func(users []string) ([]string, error) {
		mu.Lock()
		asked = append(asked, users...)
		mu.Unlock()
		return []string{testUser}, nil
	}
	startOn(t, fx.b, fx.h)
	fx.f.expect(t, "NICK nick")
	mu.Lock()
	slices.Sort(asked)
	got := strings.Join(asked, " ")
	mu.Unlock()
	if got != testUser+" "+other {
		t.Fatalf("the bridge asked to hold %q, want both users", got)
	}
	if fx.networksOfUser(other) != 0 {
		t.Fatal("a user held elsewhere was connected")
	}
	fx.f.send(t, ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.h.Run(func(ctx context.Context) { fx.b.Released(ctx, testUser) })
	if l := fx.f.expect(t, "QUIT"); l != "QUIT Passerelle" {
		t.Fatalf("quit line %q", l)
	}
	fx.f.closed(t)
	if fx.networksOfUser(testUser) != 0 {
		t.Fatal("the released user's network is kept")
	}
	fx.b.Acquired(context.Background(), []string{other})
	fx.f.expect(t, "NICK other")
	if fx.networksOfUser(other) != 1 {
		t.Fatal("the acquired user has no network")
	}
}

// When the host cannot say which users it holds, the bridge starts
// nobody's channels, and says so.
func TestRestoreOwnFails(t *testing.T) {
	fx, other := persistentFixture(t)
	fx.h.Owned = func(users []string) ([]string, error) { return nil, errors.New("database gone") }
	startOn(t, fx.b, fx.h)
	fx.h.Logs.Wait(t, "cannot hold the users of the persistent irc channels")
	if fx.networksOfUser(testUser) != 0 || fx.networksOfUser(other) != 0 {
		t.Fatal("a user was connected though the host did not hold it")
	}
}

// Once the instance's lease on a user ended (the process was frozen past
// it: another instance may hold the user's nick now), the user's
// connection answers nothing, delivers nothing and closes without a QUIT;
// it is not opened again, and Released writes nothing more.
func TestFencedConnectionDropped(t *testing.T) {
	fx, _ := persistentFixture(t)
	var leased atomic.Bool
	leased.Store(true)
	fx.h.Lease = leased.Load
	fx.h.Owned = func([]string) ([]string, error) { return []string{testUser}, nil }
	startOn(t, fx.b, fx.h)
	fx.f.expect(t, "NICK nick")
	fx.f.send(t, ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":bob!b@h PRIVMSG nick :before")
	fx.h.WaitMessage(t, "the message before", func(e *xmlel.Element) bool { return e.ChildText("", "body") == "before" })

	leased.Store(false)
	fx.f.send(t, "PING :frozen", ":bob!b@h PRIVMSG nick :after")
	var written []string
	timeout := time.After(10 * time.Second)
	for closed := false; !closed; {
		select {
		case l := <-fx.f.lines:
			if l == closedLine {
				closed = true
			} else {
				written = append(written, l)
			}
		case <-timeout:
			t.Fatalf("the connection was not closed; written: %q", written)
		}
	}
	if len(written) > 0 {
		t.Errorf("written once the lease ended: %q", written)
	}
	fx.h.Run(func(ctx context.Context) { fx.b.Released(ctx, testUser) })
	if fx.networksOfUser(testUser) != 0 {
		t.Error("the released user's network is kept")
	}
	// No new connection (the fake server would read its NICK).
	select {
	case l := <-fx.f.lines:
		t.Errorf("written after the connection closed: %q", l)
	case <-time.After(2 * time.Second):
	}
	for _, m := range fx.h.Messages() {
		if m.ChildText("", "body") == "after" {
			t.Error("a line read once the lease ended was delivered")
		}
	}
}
