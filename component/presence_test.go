package component

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/xmlel"
)

// presenceBridge records what the component tells it of users' presence.
type presenceBridge struct {
	fakeBridge
	events chan string
}

func newPresenceBridge() *presenceBridge { return &presenceBridge{events: make(chan string, 100)} }

func (b *presenceBridge) UserOnline(ctx context.Context, user string) { b.events <- "online " + user }
func (b *presenceBridge) UserOffline(ctx context.Context, user string) {
	b.events <- "offline " + user
}

func (b *presenceBridge) want(t *testing.T, event string) {
	t.Helper()
	select {
	case e := <-b.events:
		if e != event {
			t.Fatalf("the bridge was told %q, want %q", e, event)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the bridge was not told %q", event)
	}
}

func (b *presenceBridge) none(t *testing.T) {
	t.Helper()
	select {
	case e := <-b.events:
		t.Fatalf("the bridge was told %q", e)
	default:
	}
}

// sync waits until the component has handled what fc sent before, for
// alice's goroutine too: a ping from alice is answered on it.
func syncAlice(t *testing.T, fc *fakeConn, id string) {
	t.Helper()
	fc.send(t, `<iq type='get' id='%s' from='alice@example.org/phone' to='test.example.org'><ping xmlns='urn:xmpp:ping'/></iq>`, id)
	fc.expect(t, "the ping's answer", func(e *xmlel.Element) bool { return e.Attr("id") == id })
}

// With the presence permission (XEP-0356), the server's forwards of a
// user's presence tell the bridge when the user comes online and goes
// offline; registered users are not probed.
func TestUserPresenceForwarded(t *testing.T) {
	srv := newFakeServer(t, "s")
	b := newPresenceBridge()
	var lb logBuffer
	c, _, st := startComponent(t, srv, b, "s", logInto(&lb))
	if err := st.PutRegistration(context.Background(), "test.example.org", "alice@example.org", map[string]string{"name": "a"}, nil); err != nil {
		t.Fatal(err)
	}
	fc := srv.accept(t)
	fc.send(t, `<message from='example.org' to='test.example.org'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='presence' type='roster'/></privilege></message>`)
	waitFor(t, "the probing decided", func() bool { return strings.Contains(lb.String(), "asked for the presence of registered users") })
	if !strings.Contains(lb.String(), "probed=0 forwarded_by_the_server=1") {
		t.Fatalf("a user was probed though the server forwards presence:\n%s", lb.String())
	}
	fc.send(t, `<presence from='alice@example.org/phone' to='test.example.org'><show>away</show></presence>`)
	b.want(t, "online alice@example.org")
	fc.send(t, `<presence from='alice@example.org/desk' to='test.example.org'/>`)
	fc.send(t, `<presence from='alice@example.org/phone' to='test.example.org' type='unavailable'/>`)
	syncAlice(t, fc, "p1")
	b.none(t)
	if !c.Online("alice@example.org") {
		t.Fatal("alice is not known online with her desk resource")
	}
	fc.send(t, `<presence from='alice@example.org/desk' to='test.example.org' type='unavailable'/>`)
	b.want(t, "offline alice@example.org")

	// A user outside PASSERELLE_ALLOW whose presence the server forwards
	// gets no error, and the bridge hears nothing of it.
	fc.send(t, `<presence from='mallory@elsewhere.example/x' to='test.example.org'/>`)
	syncAlice(t, fc, "p2")
	b.none(t)
	fc.send(t, `<presence from='alice@example.org/phone' to='test.example.org'/>`)
	b.want(t, "online alice@example.org")

	// The stream ends: who is online is learnt again on the next one.
	fc.nc.Close()
	fc = srv.accept(t)
	waitFor(t, "the stream taken again", c.Connected)
	if c.Online("alice@example.org") {
		t.Fatal("alice is still known online after the stream ended")
	}
	fc.send(t, `<presence from='alice@example.org/phone' to='test.example.org'/>`)
	b.want(t, "online alice@example.org")
}

// Without the presence permission the component probes its registered
// users when the stream begins; an answer tells the bridge.
func TestUserPresenceProbed(t *testing.T) {
	srv := newFakeServer(t, "s")
	b := newPresenceBridge()
	c, _, st := startComponent(t, srv, b, "s")
	for _, u := range []string{"alice@example.org", "bob@example.org"} {
		if err := st.PutRegistration(context.Background(), "test.example.org", u, map[string]string{"name": u}, nil); err != nil {
			t.Fatal(err)
		}
	}
	fc := srv.accept(t)
	// A grant without the presence permission.
	fc.send(t, `<message from='example.org' to='test.example.org'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/></privilege></message>`)
	probed := map[string]bool{}
	for len(probed) < 2 {
		p := fc.expect(t, "the probes", func(e *xmlel.Element) bool { return e.Local == "presence" && e.Attr("type") == "probe" })
		if p.Attr("from") != "test.example.org" {
			t.Fatalf("probe %s", p)
		}
		probed[p.Attr("to")] = true
	}
	if !probed["alice@example.org"] || !probed["bob@example.org"] {
		t.Fatalf("probed %v", probed)
	}
	fc.send(t, `<presence from='alice@example.org/phone' to='test.example.org'/>`)
	fc.send(t, `<presence from='bob@example.org' to='test.example.org' type='unavailable'/>`)
	b.want(t, "online alice@example.org")
	syncAlice(t, fc, "p1")
	b.none(t)
	if c.Online("bob@example.org") {
		t.Fatal("bob is known online")
	}
	// The bare JID's unavailable: no resource is online any more.
	fc.send(t, `<presence from='alice@example.org' to='test.example.org' type='unavailable'/>`)
	b.want(t, "offline alice@example.org")
}

// Probing fails without harm: a stream that ends before the grant came
// probes nobody (the next one does), and a database that cannot list the
// registered users is logged.
func TestUserPresenceProbeFailures(t *testing.T) {
	srv := newFakeServer(t, "s")
	b := newPresenceBridge()
	var lb logBuffer
	_, _, st := startComponent(t, srv, b, "s", logInto(&lb))
	if err := st.PutRegistration(context.Background(), "test.example.org", "alice@example.org", map[string]string{"name": "a"}, nil); err != nil {
		t.Fatal(err)
	}
	fc := srv.accept(t)
	fc.nc.Close() // no grant: the probing waits, then sees the stream gone
	fc = srv.accept(t)
	p := fc.expect(t, "the probe on the next stream", func(e *xmlel.Element) bool { return e.Local == "presence" && e.Attr("type") == "probe" })
	if p.Attr("to") != "alice@example.org" {
		t.Fatalf("probe %s", p)
	}
	// The log line follows the probes it counts.
	waitFor(t, "the probing logged", func() bool {
		return strings.Contains(lb.String(), "asked for the presence of registered users")
	})
	if n := strings.Count(lb.String(), "asked for the presence of registered users"); n != 1 {
		t.Fatalf("probed on %d streams, want 1:\n%s", n, lb.String())
	}
	if _, err := st.DB().Exec(`ALTER TABLE registrations RENAME TO registrations_away`); err != nil {
		t.Fatal(err)
	}
	fc.nc.Close()
	srv.accept(t)
	waitFor(t, "the failure logged", func() bool {
		return strings.Contains(lb.String(), "cannot list registered users to probe their presence")
	})
}

// A stanza from one of the gateway's own addresses (a room of the IRC
// bridge: the server routed back a presence the gateway sent to an address
// of its domain, or bounced one) is no user's: it is not refused with an
// error (which would go back to the gateway), not counted as refused, not
// handed to the bridge, and logged at the first and every 100th, not per
// stanza; the same from a sibling component's domain.
func TestStanzaFromOwnAddress(t *testing.T) {
	srv := newFakeServer(t, "s")
	var handled atomic.Int64
	b := &fakeBridge{handle: func(context.Context, *bridges.User, *xmlel.Element) { handled.Add(1) }}
	var lb logBuffer
	group := NewGroup()
	c, _, _ := startComponent(t, srv, b, "s", logInto(&lb), func(c *Component) { c.opts.Group = group })
	group.add(c)
	group.add(&Component{opts: Options{Domain: "sibling.example.org"}})
	fc := srv.accept(t)
	const room = "#c%irc@test.example.org"
	n := 0
	for i := 0; i < 150; i++ {
		fc.send(t, `<presence from='%s/dave' to='bob@test.example.org/r'/>`, room)
		n++
	}
	for i := 0; i < 48; i++ {
		fc.send(t, `<presence type='error' from='%s' to='bob@test.example.org'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>`, room)
		n++
	}
	fc.send(t, `<presence from='%s/dave' to='test.example.org'/>`, room)
	fc.send(t, `<message from='carol@test.example.org/r' to='bob@test.example.org' id='m1'><body>x</body></message>`)
	fc.send(t, `<iq type='get' id='q1' from='carol@test.example.org/r' to='test.example.org'><ping xmlns='urn:xmpp:ping'/></iq>`)
	fc.send(t, `<message from='+15551234567@sibling.example.org' to='bob@test.example.org' id='m2'><body>x</body></message>`)
	n += 4
	const id = "sync"
	fc.send(t, `<iq type='get' id='%s' from='alice@example.org/phone' to='test.example.org'><ping xmlns='urn:xmpp:ping'/></iq>`, id)
	fc.expect(t, "the ping's answer", func(e *xmlel.Element) bool {
		if e.Attr("id") != id {
			t.Errorf("answered a stanza from one of the gateway's own addresses: %s", e)
		}
		return e.Attr("id") == id
	})
	if r := c.m.Refused.Load(); r != 0 {
		t.Errorf("%d stanzas counted as refused users", r)
	}
	if h := handled.Load(); h != 0 {
		t.Errorf("the bridge handled %d of them", h)
	}
	if k := lb.count("refused a user outside PASSERELLE_ALLOW"); k != 0 {
		t.Errorf("%d stanzas logged as refused users", k)
	}
	if got, want := lb.count("dropped a stanza from one of the gateway's own addresses"), (n-1)/cameBackLogEvery+1; got != want {
		t.Errorf("%d of %d stanzas logged, want %d:\n%s", got, n, want, lb.String())
	}
}
