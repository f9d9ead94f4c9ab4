package component

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// fakeServer is a scripted XEP-0114 server on loopback.
type fakeServer struct {
	t      testing.TB
	ln     net.Listener
	secret string
	// streamError, when set, is sent instead of accepting the handshake;
	// with refuseHeader, right after a stream header without id, with
	// a text, as Prosody refuses a domain it does not host.
	streamError  string
	refuseHeader bool
	// ignoreSelfPings makes the server drop the component's own pings
	// instead of routing them back (as if it died before processing).
	ignoreSelfPings atomic.Bool
	// holdSelfPings makes the server hand the component's own pings to
	// the test (fakeConn.in) instead of routing them back.
	holdSelfPings atomic.Bool
	// ignoreProbes makes the server drop the component's route probes.
	ignoreProbes atomic.Bool
	// refuse makes the server refuse new connections' handshakes.
	refuse atomic.Bool
	conns  chan *fakeConn
	// slots, when not nil, balance the component's stanzas to itself
	// as ejabberd 23.01's domain_balancing (bare_source, component_number
	// len(slots)) does: each connection takes the first free slot at its
	// handshake (none: it gets nothing), a stanza goes to the slot of a
	// hash of its sender's bare JID, and is dropped when that slot is
	// free.
	mu    sync.Mutex
	slots []*fakeConn
	// shared routes a component's stanzas to itself to another
	// connection (ejabberd's global_routes with one connection per
	// domain); open are the connections.
	shared bool
	open   []*fakeConn
}

type fakeConn struct {
	nc  net.Conn
	in  chan *xmlel.Element
	err chan error
	wmu sync.Mutex
}

// balance makes s balance over n slots.
func (s *fakeServer) balance(n int) {
	s.mu.Lock()
	s.slots = make([]*fakeConn, n)
	s.mu.Unlock()
}

// slotOf returns the slot of the stanzas from jid.
func (s *fakeServer) slotOf(jid string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.slotOf0(jid)
}

// holder returns the connection holding slot i (nil: none).
func (s *fakeServer) holder(i int) *fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.slots[i]
}

// route sends el, written by the component on fc, where the server
// routes it.
func (s *fakeServer) route(fc *fakeConn, el *xmlel.Element) {
	s.mu.Lock()
	to := fc
	switch {
	case s.slots != nil:
		to = s.slots[s.slotOf0(el.Attr("from"))]
	case s.shared:
		// Every connection routes every domain: to another one.
		for _, o := range s.open {
			if o != fc {
				to = o
			}
		}
	}
	s.mu.Unlock()
	if to != nil {
		to.write(el.String())
	}
}

func (s *fakeServer) slotOf0(jid string) int {
	h := fnv.New32a()
	h.Write([]byte(stanza.Bare(jid)))
	return int(h.Sum32() % uint32(len(s.slots)))
}

func (c *fakeConn) write(b string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	io.WriteString(c.nc, b)
}

func newFakeServer(t testing.TB, secret string) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, secret: secret, conns: make(chan *fakeConn, 10)}
	t.Cleanup(func() { ln.Close() })
	go s.serve()
	return s
}

func (s *fakeServer) serve() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.handle(nc)
	}
}

func (s *fakeServer) handle(nc net.Conn) {
	s.t.Cleanup(func() { nc.Close() })
	d := xml.NewDecoder(nc)
	for {
		tok, err := d.Token()
		if err != nil {
			return
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "stream" {
			break
		}
	}
	if s.refuseHeader {
		io.WriteString(nc, `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>`+
			`<stream:error><`+s.streamError+` xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>the server's reason</text></stream:error></stream:stream>`)
		nc.Close()
		return
	}
	io.WriteString(nc, `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='sid1' from='test'>`)
	var hs *xmlel.Element
	for hs == nil {
		tok, err := d.Token()
		if err != nil {
			return
		}
		if st, ok := tok.(xml.StartElement); ok {
			hs, err = xmlel.Read(d, st)
			if err != nil {
				return
			}
		}
	}
	sum := sha1.Sum([]byte("sid1" + s.secret))
	if s.streamError != "" || hs.Text != hex.EncodeToString(sum[:]) || s.refuse.Load() {
		cond := s.streamError
		if cond == "" {
			cond = "not-authorized"
		}
		io.WriteString(nc, `<stream:error><`+cond+` xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
		nc.Close()
		return
	}
	fc := &fakeConn{nc: nc, in: make(chan *xmlel.Element, 1000), err: make(chan error, 1)}
	s.mu.Lock()
	for i, h := range s.slots {
		if h == nil {
			s.slots[i] = fc
			break
		}
	}
	s.open = append(s.open, fc)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		for i, h := range s.slots {
			if h == fc {
				s.slots[i] = nil
			}
		}
		s.mu.Unlock()
	}()
	fc.write("<handshake/>")
	s.conns <- fc
	for {
		tok, err := d.Token()
		if err != nil {
			fc.err <- err
			close(fc.in)
			return
		}
		if end, ok := tok.(xml.EndElement); ok && end.Name.Local == "stream" {
			nc.Close() // the component ended the stream: so does the server
			fc.err <- io.EOF
			close(fc.in)
			return
		}
		if st, ok := tok.(xml.StartElement); ok {
			el, err := xmlel.Read(d, st)
			if err != nil {
				fc.err <- err
				close(fc.in)
				return
			}
			if to := el.Attr("to"); to != "" && !strings.Contains(to, "@") && stanza.Domain(el.Attr("from")) == to {
				// ignoreSelfPings and holdSelfPings spare the route
				// probes (unless ignoreProbes), so that the
				// component's confirmations and idle probes are routed
				// stanzas.
				probe := strings.HasPrefix(el.Attr("id"), routeIDPrefix)
				if probe && s.ignoreProbes.Load() {
					continue
				}
				if probe {
					s.route(fc, el)
					continue
				}
				if s.ignoreSelfPings.Load() {
					continue
				}
				if s.holdSelfPings.Load() {
					fc.in <- el
					continue
				}
				// Route the component's stanzas to itself back to it,
				// as a server does.
				s.route(fc, el)
				continue
			}
			fc.in <- el
		}
	}
}

func (s *fakeServer) accept(t testing.TB) *fakeConn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the component did not connect")
		return nil
	}
}

func (c *fakeConn) send(t *testing.T, format string, args ...any) {
	t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := fmt.Fprintf(c.nc, format, args...); err != nil {
		t.Fatal(err)
	}
}

// expect returns the next stanza matching match, skipping others.
func (c *fakeConn) expect(t testing.TB, desc string, match func(*xmlel.Element) bool) *xmlel.Element {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case el, ok := <-c.in:
			if !ok {
				t.Fatalf("stream closed while waiting for %s", desc)
			}
			if match(el) {
				return el
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", desc)
		}
	}
}

// fakeBridge is a minimal bridge whose Handle is scripted by the test.
type fakeBridge struct {
	handle func(ctx context.Context, u *bridges.User, st *xmlel.Element)
	host   bridges.Host
}

func (b *fakeBridge) Kind() string { return "test" }
func (b *fakeBridge) Identities() []bridges.Identity {
	return []bridges.Identity{{Category: "gateway", Type: "test", Name: "Test"}}
}
func (b *fakeBridge) Features() []string         { return nil }
func (b *fakeBridge) RegistrationRequired() bool { return true }
func (b *fakeBridge) RegistrationForm(cur *bridges.Registration) *form.Form {
	return &form.Form{Type: "form", Fields: []form.Field{{Var: "name", Type: form.TextSingle, Required: true}}}
}
func (b *fakeBridge) Register(ctx context.Context, user string, v map[string]string, cur *bridges.Registration) (*bridges.Registered, error) {
	if v["name"] == "fail" {
		return nil, errors.New("database on fire")
	}
	return &bridges.Registered{Fields: map[string]string{"name": v["name"]}, Claims: []string{v["name"]}}, nil
}
func (b *fakeBridge) Unregistered(ctx context.Context, user string) {}
func (b *fakeBridge) Prompt() (string, string)                      { return "desc", "prompt" }
func (b *fakeBridge) Translate(ctx context.Context, in string) (string, error) {
	return "", stanza.Errorf("jid-malformed", "no")
}
func (b *fakeBridge) Run(ctx context.Context, h bridges.Host) error {
	b.host = h
	h.Ready()
	<-ctx.Done()
	return nil
}
func (b *fakeBridge) Handle(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	if b.handle != nil {
		b.handle(ctx, u, st)
	}
}

func startComponent(t testing.TB, srv *fakeServer, b bridges.Bridge, secret string, tune ...func(*Component)) (*Component, chan error, *store.Store) {
	t.Helper()
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := New(Options{Domain: "test.example.org", Addr: srv.ln.Addr().String(), Secret: secret, Bridge: b, Store: st,
		IsAdmin: func(j string) bool { return j == "admin@example.org" },
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil))})
	// A stream the fake server routes nothing back to (ignoreProbes)
	// opens no other connections unless a test says so.
	c.standbyBackoff = bridges.Backoff{First: time.Hour, Max: time.Hour}
	for _, f := range tune {
		f(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("component did not stop")
		}
	})
	return c, done, st
}

func TestRefusedSecretIsPermanent(t *testing.T) {
	srv := newFakeServer(t, "right")
	_, done, _ := startComponent(t, srv, &fakeBridge{}, "wrong")
	select {
	case err := <-done:
		var perm *PermanentError
		if !errors.As(err, &perm) || !errors.Is(err, ErrSecretRefused) || !strings.Contains(err.Error(), "PASSERELLE_XMPP_SECRET") {
			t.Fatalf("Run = %v, want a permanent refused-secret error naming the variable", err)
		}
		done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going after the secret was refused")
	}
}

func TestUnknownHostIsPermanent(t *testing.T) {
	for _, refuseHeader := range []bool{false, true} {
		srv := newFakeServer(t, "s")
		srv.streamError = "host-unknown"
		srv.refuseHeader = refuseHeader
		_, done, _ := startComponent(t, srv, &fakeBridge{}, "s")
		select {
		case err := <-done:
			var perm *PermanentError
			if !errors.As(err, &perm) || !strings.Contains(err.Error(), "test.example.org") || !strings.Contains(err.Error(), "host-unknown") {
				t.Fatalf("refused at the header %v: Run = %v, want a permanent error naming the domain", refuseHeader, err)
			}
			if refuseHeader && !strings.Contains(err.Error(), "the server's reason") {
				t.Errorf("Run = %v, want the server's text", err)
			}
			done <- nil
		case <-time.After(10 * time.Second):
			t.Fatalf("refused at the header %v: Run kept going after host-unknown", refuseHeader)
		}
	}
}

// TestStreamErrorsAtHandshake: what each stream error refusing the
// handshake becomes (permanent, naming the variable to fix, or retried),
// always with the server's text.
func TestStreamErrorsAtHandshake(t *testing.T) {
	cases := []struct {
		se        StreamError
		permanent bool
		want      []string
	}{
		{StreamError{Condition: "not-authorized", Text: "bad secret"}, true, []string{"PASSERELLE_XMPP_SECRET", "bad secret", "irc.example.org", "PASSERELLE_IRC_DOMAIN"}},
		{StreamError{Condition: "host-unknown", Text: "no such component"}, true, []string{"irc.example.org", "PASSERELLE_IRC_DOMAIN", "host-unknown", "no such component"}},
		{StreamError{Condition: "see-other-host", Host: "10.0.0.2:5347"}, true, []string{"10.0.0.2:5347", "PASSERELLE_XMPP_ADDR"}},
		{StreamError{Condition: "invalid-namespace"}, true, []string{"127.0.0.1:5347", "PASSERELLE_XMPP_ADDR"}},
		{StreamError{Condition: "conflict", Text: "replaced by a new connection"}, false, []string{"conflict", "replaced by a new connection"}},
		{StreamError{Condition: "system-shutdown"}, false, []string{"system-shutdown"}},
	}
	for _, c := range cases {
		err := refusal(&c.se, "127.0.0.1:5347", "irc.example.org", "PASSERELLE_IRC_DOMAIN")
		var perm *PermanentError
		if errors.As(err, &perm) != c.permanent {
			t.Errorf("%s: %v, permanent: want %v", c.se.Condition, err, c.permanent)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.se.Condition, err, w)
			}
		}
	}
	el, _ := xmlel.Parse(`<stream:error xmlns:stream='http://etherx.jabber.org/streams'><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>[2001:db8::1]:5347</see-other-host></stream:error>`)
	if se := streamError(el); se.Condition != "see-other-host" || se.Host != "[2001:db8::1]:5347" {
		t.Errorf("see-other-host read as %+v", se)
	}
}

// A message produced while the server is away waits in the outbox and is
// sent once the component has reconnected; broken XML from the server makes
// it reconnect rather than stop.
func TestOutboxSurvivesReconnect(t *testing.T) {
	srv := newFakeServer(t, "s")
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)
	fc.send(t, "<message><unclosed") // malformed: the component drops the stream
	fc.send(t, "</bad>")
	select {
	case <-fc.err:
	case <-time.After(10 * time.Second):
		t.Fatal("the component kept a stream that sent malformed XML")
	}
	for c.Connected() {
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Send(stanza.Message("test.example.org", "u@example.org", "chat", "", "lost?")); !errors.Is(err, bridges.ErrDisconnected) {
		t.Fatalf("Send while disconnected = %v, want ErrDisconnected", err)
	}
	m := stanza.Message("", "u@example.org", "chat", "queued-1", "hello after the outage")
	if err := c.SendMessage(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.CountStanzas(context.Background(), "test.example.org"); n != 1 {
		t.Fatalf("outbox holds %d stanzas, want 1", n)
	}
	fc = srv.accept(t)
	got := fc.expect(t, "the queued message", func(e *xmlel.Element) bool { return e.Attr("id") == "queued-1" })
	if got.Attr("from") != "test.example.org" || got.ChildText("", "body") != "hello after the outage" {
		t.Fatalf("queued message = %s", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := st.CountStanzas(context.Background(), "test.example.org")
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sent message still in the outbox")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestForbiddenAndPanicsAndBusy(t *testing.T) {
	srv := newFakeServer(t, "s")
	release := make(chan struct{})
	var mu sync.Mutex
	handled := 0
	b := &fakeBridge{handle: func(ctx context.Context, u *bridges.User, st *xmlel.Element) {
		switch st.ChildText("", "body") {
		case "panic":
			panic("boom")
		case "block":
			<-release
		}
		mu.Lock()
		handled++
		mu.Unlock()
	}}
	_, _, st := startComponent(t, srv, b, "s")
	fc := srv.accept(t)
	defer close(release)

	// A user of another domain is refused, and nothing is stored; an
	// error, a result or an unavailable presence from them is not answered.
	fc.send(t, "<iq type='error' id='e1' from='eve@evil.org/x' to='test.example.org'/>")
	fc.send(t, "<iq type='result' id='e2' from='eve@evil.org/x' to='test.example.org'/>")
	fc.send(t, "<presence type='unavailable' id='e3' from='eve@evil.org/x' to='test.example.org'/>")
	fc.send(t, "<iq type='set' id='r1' from='eve@evil.org/x' to='test.example.org'><query xmlns='jabber:iq:register'><name>eve</name></query></iq>")
	r := fc.expect(t, "the refusal", func(e *xmlel.Element) bool { return e.Attr("id") == "r1" || strings.HasPrefix(e.Attr("id"), "e") })
	if r.Attr("id") != "r1" {
		t.Fatalf("answered: %s", r)
	}
	if c := stanza.ErrorOf(r); c == nil || c.Condition != "forbidden" {
		t.Fatalf("reply to a foreign user = %s", r)
	}
	if users, _ := st.ListRegistrations(context.Background(), "test.example.org"); len(users) != 0 {
		t.Fatalf("a refused user was stored: %v", users)
	}

	// A bridge error during registration is an internal-server-error, logged.
	fc.send(t, "<iq type='set' id='r2' from='u@example.org/x' to='test.example.org'><query xmlns='jabber:iq:register'><name>fail</name></query></iq>")
	r = fc.expect(t, "internal error", func(e *xmlel.Element) bool { return e.Attr("id") == "r2" })
	if c := stanza.ErrorOf(r); c == nil || c.Condition != "internal-server-error" || strings.Contains(c.Text, "fire") {
		t.Fatalf("reply = %s (want a generic internal-server-error)", r)
	}
	fc.send(t, "<iq type='set' id='r3' from='u@example.org/x' to='test.example.org'><query xmlns='jabber:iq:register'><name>ok</name></query></iq>")
	fc.expect(t, "registration result", func(e *xmlel.Element) bool { return e.Attr("id") == "r3" && e.Attr("type") == "result" })

	// A panicking handler does not stop the user's goroutine.
	fc.send(t, "<message from='u@example.org/x' to='c@test.example.org' id='p1'><body>panic</body></message>")
	fc.send(t, "<message from='u@example.org/x' to='c@test.example.org' id='p2'><body>after</body></message>")
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := handled
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the message after a panic was not handled")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A user whose queue is full gets resource-constraint, not silence.
	fc.send(t, "<message from='u@example.org/x' to='c@test.example.org' id='b0'><body>block</body></message>")
	for i := 1; i <= userQueueSize+5; i++ {
		fc.send(t, "<message from='u@example.org/x' to='c@test.example.org' id='b%d'><body>x</body></message>", i)
	}
	r = fc.expect(t, "a busy error", func(e *xmlel.Element) bool { return e.Attr("type") == "error" && strings.HasPrefix(e.Attr("id"), "b") })
	if c := stanza.ErrorOf(r); c.Condition != "resource-constraint" || c.Type != "wait" {
		t.Fatalf("busy reply = %s", r)
	}

	// Another user is not blocked by the busy one.
	fc.send(t, "<iq type='get' id='v1' from='w@example.org/x' to='test.example.org'><query xmlns='jabber:iq:version'/></iq>")
	fc.expect(t, "version for another user", func(e *xmlel.Element) bool { return e.Attr("id") == "v1" && e.Attr("type") == "result" })
}

func TestAdhocSessions(t *testing.T) {
	srv := newFakeServer(t, "s")
	_, _, _ = startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)
	from := "u@example.org/x"
	fc.send(t, "<iq type='set' id='a1' from='%s' to='test.example.org'><command xmlns='%s' node='nope' action='execute'/></iq>", from, stanza.NSCommands)
	r := fc.expect(t, "unknown command", func(e *xmlel.Element) bool { return e.Attr("id") == "a1" })
	if c := stanza.ErrorOf(r); c == nil || c.Condition != "item-not-found" {
		t.Fatalf("unknown command = %s", r)
	}
	fc.send(t, "<iq type='set' id='a2' from='%s' to='test.example.org'><command xmlns='%s' node='settings' sessionid='forged' action='complete'/></iq>", from, stanza.NSCommands)
	r = fc.expect(t, "forged session", func(e *xmlel.Element) bool { return e.Attr("id") == "a2" })
	if c := stanza.ErrorOf(r); c == nil || c.Condition != "bad-request" || r.Child("", "error").Child(stanza.NSCommands, "bad-sessionid") == nil {
		t.Fatalf("forged session = %s", r)
	}
	fc.send(t, "<iq type='set' id='a3' from='%s' to='test.example.org'><command xmlns='%s' node='settings' action='execute'/></iq>", from, stanza.NSCommands)
	r = fc.expect(t, "settings form", func(e *xmlel.Element) bool { return e.Attr("id") == "a3" })
	sid := r.Child(stanza.NSCommands, "command").Attr("sessionid")
	fc.send(t, "<iq type='set' id='a4' from='%s' to='test.example.org'><command xmlns='%s' node='settings' sessionid='%s' action='cancel'/></iq>", from, stanza.NSCommands, sid)
	r = fc.expect(t, "cancel", func(e *xmlel.Element) bool { return e.Attr("id") == "a4" })
	if s := r.Child(stanza.NSCommands, "command").Attr("status"); s != "canceled" {
		t.Fatalf("cancel status = %q", s)
	}
	fc.send(t, "<iq type='set' id='a5' from='%s' to='test.example.org'><command xmlns='%s' node='settings' sessionid='%s' action='complete'/></iq>", from, stanza.NSCommands, sid)
	r = fc.expect(t, "cancelled session reused", func(e *xmlel.Element) bool { return e.Attr("id") == "a5" })
	if c := stanza.ErrorOf(r); c == nil || c.Condition != "bad-request" {
		t.Fatalf("reuse of a cancelled session = %s", r)
	}
	fc.send(t, "<iq type='set' id='a6' from='%s' to='test.example.org'><command xmlns='%s' node='stats' action='execute'/></iq>", from, stanza.NSCommands)
	r = fc.expect(t, "admin command", func(e *xmlel.Element) bool { return e.Attr("id") == "a6" })
	if c := stanza.ErrorOf(r); c == nil || c.Condition != "forbidden" {
		t.Fatalf("stats by a non-admin = %s", r)
	}
	fc.send(t, "<iq type='set' id='a7' from='admin@example.org/x' to='test.example.org'><command xmlns='%s' node='stats' action='execute'/></iq>", stanza.NSCommands)
	r = fc.expect(t, "admin stats", func(e *xmlel.Element) bool { return e.Attr("id") == "a7" })
	if r.Attr("type") != "result" {
		t.Fatalf("stats by an admin = %s", r)
	}
	// Ping from the server itself is answered.
	fc.send(t, "<iq type='get' id='s1' from='example.org' to='test.example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
	fc.expect(t, "server ping", func(e *xmlel.Element) bool { return e.Attr("id") == "s1" && e.Attr("type") == "result" })
}

// A batch the server did not confirm before the stream broke is sent again
// on the next stream: at least once, never lost.
func TestOutboxResentWhenUnconfirmed(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.ignoreSelfPings.Store(true)
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)
	if err := c.SendMessage(context.Background(), stanza.Message("", "u@example.org", "chat", "m1", "hello")); err != nil {
		t.Fatal(err)
	}
	fc.expect(t, "the message on the first stream", func(e *xmlel.Element) bool { return e.Attr("id") == "m1" })
	srv.ignoreSelfPings.Store(false)
	fc.nc.Close() // the server dies before confirming
	fc = srv.accept(t)
	fc.expect(t, "the message again on the second stream", func(e *xmlel.Element) bool { return e.Attr("id") == "m1" })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, _ := st.CountStanzas(context.Background(), "test.example.org"); n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("confirmed message still queued")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A server that stops answering without closing the connection (half-open
// TCP) is detected by the idle probe and replaced by a new stream.
func TestSilentServerIsDropped(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.ignoreSelfPings.Store(true)
	startComponent(t, srv, &fakeBridge{}, "s", func(c *Component) {
		c.idleProbe, c.probeTimeout = 100*time.Millisecond, 200*time.Millisecond
	})
	fc := srv.accept(t)
	select {
	case <-fc.err: // the component gave up on the silent stream
	case <-time.After(10 * time.Second):
		t.Fatal("the component kept a silent stream")
	}
	srv.ignoreSelfPings.Store(false)
	srv.accept(t) // and reconnected
}

// A command session left alone ends, and the user holds nothing for it; a
// step keeps it open.
func TestAdhocSessionExpires(t *testing.T) {
	srv := newFakeServer(t, "s")
	const timeout = 2 * time.Second
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s", func(c *Component) { c.commandTimeout = timeout })
	fc := srv.accept(t)
	const user = "u@example.org"
	execute := func(id, sid string) *xmlel.Element {
		t.Helper()
		sidAttr := ""
		if sid != "" {
			sidAttr = " sessionid='" + sid + "'"
		}
		fc.send(t, "<iq type='set' id='%s' from='%s/x' to='test.example.org'><command xmlns='%s' node='settings'%s action='execute'/></iq>", id, user, stanza.NSCommands, sidAttr)
		return fc.expect(t, id, func(e *xmlel.Element) bool { return e.Attr("id") == id })
	}
	known := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.users[user] != nil
	}

	sid := execute("e1", "").Child(stanza.NSCommands, "command").Attr("sessionid")
	// Steps without the form are refused but keep the session open, for
	// longer than the timeout in all.
	for i := range 6 {
		time.Sleep(timeout / 4)
		if r := execute(fmt.Sprintf("s%d", i), sid); r.Child("", "error").Child(stanza.NSCommands, "bad-sessionid") != nil {
			t.Fatalf("step %d after %v: the session ended: %s", i, time.Duration(i+1)*timeout/4, r)
		}
	}
	for deadline := time.Now().Add(3 * timeout); known(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the user still holds a command session left alone for %v", 3*timeout)
		}
	}
	r := execute("late", sid)
	if e := stanza.ErrorOf(r); e == nil || e.Condition != "bad-request" || r.Child("", "error").Child(stanza.NSCommands, "bad-sessionid") == nil {
		t.Fatalf("a step in an expired session = %s", r)
	}
}

// A user cannot pile up command sessions: opening one too many ends the
// oldest.
func TestAdhocSessionsCapped(t *testing.T) {
	srv := newFakeServer(t, "s")
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)
	const user = "u@example.org"
	var sids []string
	for i := range maxCommands + 1 {
		id := fmt.Sprintf("o%d", i)
		fc.send(t, "<iq type='set' id='%s' from='%s/x' to='test.example.org'><command xmlns='%s' node='settings' action='execute'/></iq>", id, user, stanza.NSCommands)
		r := fc.expect(t, id, func(e *xmlel.Element) bool { return e.Attr("id") == id })
		sids = append(sids, r.Child(stanza.NSCommands, "command").Attr("sessionid"))
	}
	step := func(id, sid string) *xmlel.Element {
		t.Helper()
		fc.send(t, "<iq type='set' id='%s' from='%s/x' to='test.example.org'><command xmlns='%s' node='settings' sessionid='%s' action='cancel'/></iq>", id, user, stanza.NSCommands, sid)
		return fc.expect(t, id, func(e *xmlel.Element) bool { return e.Attr("id") == id })
	}
	if r := step("c0", sids[0]); r.Child("", "error").Child(stanza.NSCommands, "bad-sessionid") == nil {
		t.Fatalf("the oldest of %d sessions is still open: %s", maxCommands+1, r)
	}
	open := make(chan int)
	c.Post(user, func(context.Context) { open <- len(c.userSession(user).commands) })
	if n := <-open; n != maxCommands {
		t.Fatalf("%d command sessions open, want %d", n, maxCommands)
	}
	for i, sid := range sids[1:] {
		if r := step(fmt.Sprintf("c%d", i+1), sid); r.Child(stanza.NSCommands, "command").Attr("status") != "canceled" {
			t.Fatalf("session %d: %s", i+1, r)
		}
	}
}

// A stanza over a limit of the stream reader is answered with
// policy-violation (unless it is an error) and the stream stays up.
func TestStanzaOverLimitKeepsStream(t *testing.T) {
	srv := newFakeServer(t, "s")
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)

	var many strings.Builder
	for i := range xmlel.MaxAttrs + 1 {
		fmt.Fprintf(&many, " a%d='x'", i)
	}
	deep := strings.Repeat("<a>", xmlel.MaxDepth+1) + strings.Repeat("</a>", xmlel.MaxDepth+1)
	for _, tc := range []struct{ id, from, inside, limit string }{
		{"deep", "eve@evil.org/x", deep, "nested deeper"},
		{"attrs", "u@example.org/x", "<x xmlns='urn:example'" + many.String() + "/>", "more attributes"},
		{"large", "u@example.org/x", "<body>" + strings.Repeat("x", xmlel.MaxStanzaSize) + "</body>", "larger"},
	} {
		fc.send(t, "<message from='%s' to='c@test.example.org' id='%s' type='chat'>%s</message>", tc.from, tc.id, tc.inside)
		r := fc.expect(t, "the refusal of "+tc.id, func(e *xmlel.Element) bool { return e.Attr("id") == tc.id })
		e := stanza.ErrorOf(r)
		if r.Attr("type") != "error" || e == nil || e.Condition != "policy-violation" || !strings.Contains(e.Text, tc.limit) ||
			r.Attr("from") != "c@test.example.org" || r.Attr("to") != tc.from {
			t.Fatalf("answer to %s: %s", tc.id, r)
		}
	}
	// An error stanza is never answered; a stanza to another domain is
	// answered from the component's.
	fc.send(t, "<message from='u@example.org/x' to='c@test.example.org' id='err' type='error'>%s</message>", deep)
	fc.send(t, "<iq from='u@example.org/x' to='other.example.org' id='elsewhere' type='get'>%s</iq>", deep)
	r := fc.expect(t, "the refusal of elsewhere", func(e *xmlel.Element) bool {
		if e.Attr("id") == "err" {
			t.Fatalf("an error stanza was answered: %s", e)
		}
		return e.Attr("id") == "elsewhere"
	})
	if r.Attr("from") != "test.example.org" || r.Attr("type") != "error" {
		t.Fatalf("answer to a stanza for another domain: %s", r)
	}

	// The same stream goes on.
	fc.send(t, "<iq type='get' id='after' from='w@example.org/x' to='test.example.org'><query xmlns='jabber:iq:version'/></iq>")
	fc.expect(t, "the version after the refusals", func(e *xmlel.Element) bool { return e.Attr("id") == "after" && e.Attr("type") == "result" })
	select {
	case err := <-fc.err:
		t.Fatalf("the stream ended: %v", err)
	case <-srv.conns:
		t.Fatal("the component connected again")
	default:
	}
	if n := c.m.OverLimit.Load(); n != 5 {
		t.Fatalf("%d stanzas counted over a limit, want 5", n)
	}
}

// The answer to the gateway's own request that goes over a limit ends the
// request with the refusal instead of leaving it waiting.
func TestAnswerOverLimitEndsRequest(t *testing.T) {
	srv := newFakeServer(t, "s")
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)
	type answer struct {
		el  *xmlel.Element
		err error
	}
	for deadline := time.Now().Add(10 * time.Second); !c.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the component did not take the stream")
		}
	}
	done := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		el, err := c.IQ(ctx, stanza.IQ("test.example.org", "u@example.org", "get", "roster-1", xmlel.New("jabber:iq:roster", "query")))
		done <- answer{el, err}
	}()
	fc.expect(t, "the request", func(e *xmlel.Element) bool { return e.Attr("id") == "roster-1" })
	fc.send(t, "<iq from='u@example.org' to='test.example.org' id='roster-1' type='result'><query xmlns='jabber:iq:roster'>%s</query></iq>",
		strings.Repeat("<item jid='contact@example.org' subscription='both'/>", xmlel.MaxStanzaSize/40))
	select {
	case a := <-done:
		if a.err != nil {
			t.Fatal(a.err)
		}
		if e := stanza.ErrorOf(a.el); a.el.Attr("type") != "error" || e == nil || e.Condition != "policy-violation" {
			t.Fatalf("answer = %s", a.el)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request still waits")
	}
	fc.send(t, "<iq type='get' id='v1' from='w@example.org/x' to='test.example.org'><query xmlns='jabber:iq:version'/></iq>")
	fc.expect(t, "no answer to the result", func(e *xmlel.Element) bool {
		if e.Attr("id") == "roster-1" {
			t.Fatalf("the result was answered: %s", e)
		}
		return e.Attr("id") == "v1"
	})
}
