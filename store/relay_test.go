package store

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// listener runs Listen as name on s until the test ends, and returns the
// stanzas it gets and the error it ends with.
func listener(t *testing.T, s *Store, name string) (got <-chan Relayed, ended <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := make(chan Relayed, 100)
	e := make(chan error, 1)
	listening := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		e <- s.Listen(ctx, name, func() { close(listening) }, func(r Relayed) { g <- r })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-listening:
	case err := <-e:
		t.Fatalf("Listen: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not start listening")
	}
	return g, e
}

func receive(t *testing.T, got <-chan Relayed) Relayed {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("nothing relayed arrived")
		return Relayed{}
	}
}

// An instance passes stanzas to another by its listener's name: they
// arrive whole and in order, long ones (in several notifications) too,
// and only there.
func TestRelay(t *testing.T) {
	ctx := context.Background()
	if cluster == nil {
		s, err := Open(testDB(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Relay(ctx, "x", Relayed{Domain: "d", Stanza: []byte("<iq/>")}); !errors.Is(err, ErrNotShared) {
			t.Fatalf("Relay on SQLite: %v", err)
		}
		if err := s.RelayAll(ctx, Relayed{Domain: "d", Stanza: []byte("<iq/>")}); !errors.Is(err, ErrNotShared) {
			t.Fatalf("RelayAll on SQLite: %v", err)
		}
		if err := s.Listen(ctx, "x", func() { t.Error("listening on SQLite") }, nil); !errors.Is(err, ErrNotShared) {
			t.Fatalf("Listen on SQLite: %v", err)
		}
		return
	}
	st := instances(t, 3)
	a, b, c := st[0], st[1], st[2]
	gotB, _ := listener(t, b, "b1")
	gotC, _ := listener(t, c, "c1")

	defer func(n int) { relayPiece = n }(relayPiece)
	relayPiece = 10
	long := "<iq type='result' id='x'><q>" + strings.Repeat("é€x", 20) + "</q></iq>" // pieces cut between characters
	sent := []Relayed{
		{Domain: "irc.example.org", From: "a1", Stanza: []byte("<iq type='result' id='1'/>")},
		{Domain: "mail.example.org", From: "a1", Stanza: []byte(long)},
		{Domain: "irc.example.org", Stanza: []byte("<iq type='error' id='3'/>")},
	}
	for _, r := range sent {
		if err := a.Relay(ctx, "b1", r); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range sent {
		r := receive(t, gotB)
		if r.Domain != want.Domain || r.From != want.From || string(r.Stanza) != string(want.Stanza) {
			t.Fatalf("stanza %d: got %+v, want %+v", i, r, want)
		}
	}
	if err := a.Relay(ctx, "c1", sent[0]); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, gotC); string(r.Stanza) != string(sent[0].Stanza) {
		t.Fatalf("c got %q", r.Stanza)
	}
	select {
	case r := <-gotB:
		t.Fatalf("b got c's stanza %q", r.Stanza)
	default:
	}
	// To all: every listener but the sender's gets it.
	gotA, _ := listener(t, a, "a1")
	all := Relayed{Domain: "irc.example.org", From: "b1", Stanza: []byte("<message from='example.org'/>")}
	if err := b.RelayAll(ctx, all); err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]<-chan Relayed{"a": gotA, "c": gotC} {
		if r := receive(t, got); r.From != "b1" || string(r.Stanza) != string(all.Stanza) {
			t.Fatalf("%s got %+v", name, r)
		}
	}
	if err := a.Relay(ctx, "b1", sent[2]); err != nil { // behind b's own to all, if it were there
		t.Fatal(err)
	}
	if r := receive(t, gotB); string(r.Stanza) != string(sent[2].Stanza) {
		t.Fatalf("b got its own stanza to all: %q", r.Stanza)
	}
	// Nobody listens: the stanza is gone, without an error.
	if err := a.Relay(ctx, "nobody", sent[0]); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"", "B1", "b 1", `b"1`, strings.Repeat("b", 33)} {
		if err := a.Relay(ctx, name, sent[0]); err == nil {
			t.Errorf("Relay to %q: no error", name)
		}
	}
	if err := a.Relay(ctx, "b1", Relayed{Domain: "a b", Stanza: []byte("<iq/>")}); err == nil {
		t.Error("Relay for a domain with a space: no error")
	}
	if err := a.RelayAll(ctx, Relayed{Domain: "d", From: "a\n1", Stanza: []byte("<iq/>")}); err == nil {
		t.Error("RelayAll from a name with a newline: no error")
	}
}

// Listen returns an error when its connection is cut; listening again
// gets what is relayed from then on.
func TestRelayListenerCut(t *testing.T) {
	if cluster == nil {
		t.Skip("PostgreSQL only")
	}
	ctx := context.Background()
	st := instances(t, 2)
	a, b := st[0], st[1]
	_, ended := listener(t, b, "b1")
	if _, err := a.DB().ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN %'`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("Listen ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not end when its connection was cut")
	}
	got, _ := listener(t, b, "b1")
	if err := a.Relay(ctx, "b1", Relayed{Domain: "d", Stanza: []byte("<iq id='after'/>")}); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, got); string(r.Stanza) != "<iq id='after'/>" {
		t.Fatalf("got %q", r.Stanza)
	}
	// The store's other connections still work.
	if _, err := a.LiveInstances(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.LiveInstances(ctx); err != nil {
		t.Fatal(err)
	}
}

// freezingProxy forwards TCP connections to a PostgreSQL server; freeze
// makes the connections that listened so far (they sent a LISTEN) drop
// what they carry, both ways, their sockets kept open: a half-open
// connection, as when a firewall dropped its state.
type freezingProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []*proxied
}

type proxied struct {
	client, server  net.Conn
	listens, frozen atomic.Bool
}

// newFreezingProxy starts a proxy to the server of url until the test
// ends, and returns it and url through it.
func newFreezingProxy(t *testing.T, dbURL string) (*freezingProxy, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{ln: ln}
	var running sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.client.Close()
			c.server.Close()
		}
		p.mu.Unlock()
		running.Wait()
	})
	running.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			c := &proxied{client: client, server: server}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			running.Go(func() { c.forward(client, server, true) })
			running.Go(func() { c.forward(server, client, false) })
		}
	})
	u.Host = ln.Addr().String()
	return p, u.String()
}

// forward copies from to to until either closes; what comes once the
// connection is frozen is dropped.
func (c *proxied) forward(from, to net.Conn, fromClient bool) {
	defer from.Close()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		if fromClient && bytes.Contains(buf[:n], []byte("LISTEN ")) {
			c.listens.Store(true)
		}
		if c.frozen.Load() {
			continue
		}
		if _, err := to.Write(buf[:n]); err != nil {
			return
		}
	}
}

// freeze makes the connections that listened so far silent.
func (p *freezingProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if c.listens.Load() {
			c.frozen.Store(true)
		}
	}
}

// The connection a listener listens on goes silent, neither failing nor
// delivering (a half-open TCP connection): the check the listener passes
// on to itself does not come back, and Listen ends, so that its caller
// listens again on a new connection.
func TestRelayListenerSilent(t *testing.T) {
	if cluster == nil {
		t.Skip("PostgreSQL only")
	}
	every, wait := relayCheckEvery, relayCheckWait
	relayCheckEvery, relayCheckWait = 100*time.Millisecond, 3*time.Second
	t.Cleanup(func() { relayCheckEvery, relayCheckWait = every, wait })
	ctx := context.Background()
	dbURL := testDB(t)
	p, proxiedURL := newFreezingProxy(t, dbURL)
	var st []*Store
	for _, u := range []string{dbURL, proxiedURL} {
		s, err := Open(u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		st = append(st, s)
	}
	a, b := st[0], st[1]
	got, ended := listener(t, b, "b1")
	if err := a.Relay(ctx, "b1", Relayed{Domain: "d", Stanza: []byte("<iq id='before'/>")}); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, got); string(r.Stanza) != "<iq id='before'/>" {
		t.Fatalf("got %q", r.Stanza)
	}
	// Checks came back meanwhile, and were not taken for stanzas.
	time.Sleep(5 * relayCheckEvery)
	select {
	case err := <-ended:
		t.Fatalf("Listen ended on a live connection: %v", err)
	case r := <-got:
		t.Fatalf("a check was taken for a stanza: %q", r.Stanza)
	default:
	}
	p.freeze()
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(err.Error(), "went silent") {
			t.Fatalf("Listen ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Listen did not end when its connection went silent")
	}
	got, _ = listener(t, b, "b1")
	if err := a.Relay(ctx, "b1", Relayed{Domain: "d", Stanza: []byte("<iq id='after'/>")}); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, got); string(r.Stanza) != "<iq id='after'/>" {
		t.Fatalf("got %q", r.Stanza)
	}
}
