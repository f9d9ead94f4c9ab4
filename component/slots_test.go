package component

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
	"passerelle/store/pgtest"
)

// recordingBridge records the bodies of the messages it handles.
type recordingBridge struct {
	fakeBridge
	mu     sync.Mutex
	bodies []string
}

func newRecordingBridge() *recordingBridge {
	b := &recordingBridge{}
	b.handle = func(ctx context.Context, u *bridges.User, st *xmlel.Element) {
		b.mu.Lock()
		b.bodies = append(b.bodies, st.ChildText("", "body"))
		b.mu.Unlock()
	}
	return b
}

func (b *recordingBridge) got(body string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, x := range b.bodies {
		if x == body {
			return true
		}
	}
	return false
}

func (b *recordingBridge) RegistrationRequired() bool { return false }

// slotted tunes a component for the slot tests: quick retries and
// probes, its log in lb.
func slotTune(lb *logBuffer) func(*Component) {
	return func(c *Component) {
		c.standbyBackoff = bridges.Backoff{First: 50 * time.Millisecond, Max: 100 * time.Millisecond}
		c.routeProbeWait = 500 * time.Millisecond
		c.handBackCheck = time.Second
		c.log = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// userOfSlot returns a user of example.org whose stanzas go to slot i.
func userOfSlot(srv *fakeServer, i int) string {
	for k := 0; ; k++ {
		u := fmt.Sprintf("u%d@example.org", k)
		if srv.slotOf(u) == i {
			return u
		}
	}
}

// toSlot has the server deliver a message from a user of slot i to
// whoever holds it, and waits until b handled it.
func toSlot(t *testing.T, srv *fakeServer, i int, body string, b *recordingBridge) {
	t.Helper()
	u := userOfSlot(srv, i)
	var h *fakeConn
	waitFor(t, fmt.Sprintf("a connection on slot %d", i), func() bool { h = srv.holder(i); return h != nil })
	h.send(t, "<message from='%s/r' to='test.example.org' id='%s' type='chat'><body>%s</body></message>", u, body, body)
	waitFor(t, body+" handled by the expected component", func() bool { return b.got(body) })
}

// startLogged starts a component on srv for the slot tests, logging into
// lb, and returns it with its stream's end and its stream.
func startLogged(t *testing.T, srv *fakeServer, b bridges.Bridge, lb *logBuffer, tune ...func(*Component)) (*Component, chan error, *fakeConn) {
	t.Helper()
	c, done, _ := startComponent(t, srv, b, "s", append([]func(*Component){slotTune(lb)}, tune...)...)
	return c, done, srv.accept(t)
}

func outboxEmpties(t *testing.T, c *Component) {
	t.Helper()
	waitFor(t, "an empty outbox", func() bool {
		n, err := c.store.CountStanzas(context.Background(), c.Domain())
		return err == nil && n == 0
	})
}

// Two components on two slots of a balancing server: each one's
// confirmations come back to it (its outbox empties at once, not after
// confirmWait), and the other's probes and confirmations that reach it
// are dropped without a word.
func TestConfirmationsComeBackToEachConnection(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.balance(2)
	var la, lb logBuffer
	ba, bb := newRecordingBridge(), newRecordingBridge()
	a, _, fa := startLogged(t, srv, ba, &la)
	b, _, _ := startLogged(t, srv, bb, &lb)
	waitFor(t, "both slotted", func() bool { return a.slotted() && b.slotted() })
	for _, c := range []*Component{a, b} {
		for i := 0; i < 3; i++ {
			if err := c.SendMessage(context.Background(), stanza.Message("", "u@example.org", "chat", "m", "hello")); err != nil {
				t.Fatal(err)
			}
		}
		outboxEmpties(t, c)
	}
	if srv.holder(0) == fa {
		toSlot(t, srv, 0, "slot-0", ba)
		toSlot(t, srv, 1, "slot-1", bb)
	} else {
		toSlot(t, srv, 0, "slot-0", bb)
		toSlot(t, srv, 1, "slot-1", ba)
	}
	for _, l := range []*logBuffer{&la, &lb} {
		for _, noise := range []string{"refused", "level=WARN", "level=ERROR", "standby"} {
			if n := l.count(noise); n > 0 {
				t.Errorf("%q logged %d times:\n%s", noise, n, l.String())
			}
		}
	}
	if a.m.Refused.Load()+b.m.Refused.Load() != 0 {
		t.Error("probes counted as refused stanzas")
	}
}

// A stream that finds every slot taken is a standby: no probe comes
// back. It still sends; its tries for a slot are refused by the server
// for a while, then one takes the slot the other component left, and
// users' stanzas of that slot reach it.
func TestStandbyTakesFreedSlot(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.balance(1)
	var la, lb logBuffer
	ba, bb := newRecordingBridge(), newRecordingBridge()
	a, doneA, fa := startLogged(t, srv, ba, &la)
	waitFor(t, "a slotted", a.slotted)
	b, _, fb := startLogged(t, srv, bb, &lb, func(c *Component) { c.confirmWait = 200 * time.Millisecond })
	waitFor(t, "b standby", func() bool { return lb.count("holds none of the server's balancing slots") > 0 })
	if b.slotted() {
		t.Fatal("b holds a slot the server gave a")
	}
	// A standby sends: the message reaches the server, and leaves the
	// outbox once confirmWait passed with the stream up.
	if err := b.SendMessage(context.Background(), stanza.Message("", "u@example.org", "chat", "from-standby", "hello")); err != nil {
		t.Fatal(err)
	}
	fb.expect(t, "the standby's message", hasID("from-standby"))
	outboxEmpties(t, b)
	// Its tries find no slot and are closed.
	waitFor(t, "b's tries", func() bool { return lb.count("no free balancing slot for another connection") >= 2 })
	toSlot(t, srv, 0, "to-a", ba)

	// a goes away; the server refuses connections for a while (a's
	// reconnection too, which stops it).
	srv.refuse.Store(true)
	fa.nc.Close()
	select {
	case err := <-doneA:
		doneA <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("a kept running with its secret refused")
	}
	waitFor(t, "b's refused tries", func() bool { return b.refused.Load() >= 3 })
	if n := lb.count("the XMPP server refused another connection"); n < 1 || int64(n) >= b.refused.Load() {
		t.Errorf("%d warnings for %d refusals in a row, want the first (and every %dth)", n, b.refused.Load(), standbyWarnAfter)
	}
	if b.slotted() {
		t.Fatal("b slotted while the server refused its connections")
	}
	srv.refuse.Store(false)
	waitFor(t, "b slotted", b.slotted)
	toSlot(t, srv, 0, "to-b", bb)
	if n := lb.count("took a balancing slot of the server with another connection"); n != 1 {
		t.Errorf("b took %d slots, want 1:\n%s", n, lb.String())
	}
	// Its stream, still a standby, is probed through the other
	// connection's route: the idle probe comes back.
	b.mu.Lock()
	s := b.cur
	b.mu.Unlock()
	dead := make(chan error, 1)
	b.checkAlive(context.Background(), s, dead)
	select {
	case err := <-dead:
		t.Errorf("the standby stream's idle probe failed: %v", err)
	default:
	}
}

// A confirmation that does not come back while the stream stays up
// makes the pump probe the route again and send the unconfirmed
// stanzas again: at least once, never removed unconfirmed.
func TestUnconfirmedResentAfterProbe(t *testing.T) {
	srv := newFakeServer(t, "s")
	var lb logBuffer
	c, _, fc := startLogged(t, srv, &fakeBridge{}, &lb, func(c *Component) { c.confirmWait = 300 * time.Millisecond })
	st := c.store
	waitFor(t, "slotted", c.slotted)
	// The server loses the confirmations, and the probe after.
	srv.ignoreSelfPings.Store(true)
	srv.ignoreProbes.Store(true)
	if err := c.SendMessage(context.Background(), stanza.Message("", "u@example.org", "chat", "m1", "hello")); err != nil {
		t.Fatal(err)
	}
	fc.expect(t, "m1", hasID("m1"))
	waitFor(t, "the timeout", func() bool { return lb.count("an outbox confirmation did not come back") > 0 })
	if n, _ := st.CountStanzas(context.Background(), c.Domain()); n != 1 {
		t.Fatalf("%d stanzas queued after an unconfirmed batch, want 1", n)
	}
	srv.ignoreSelfPings.Store(false)
	srv.ignoreProbes.Store(false)
	fc.expect(t, "m1 again", hasID("m1"))
	outboxEmpties(t, c)
	// The stream held a slot: it is probed again before any other
	// connection is tried.
	waitFor(t, "the stream slotted again", c.slotted)
	if n := lb.count("took a balancing slot of the server with another connection"); n > 0 {
		t.Errorf("another connection opened for a stream that held its slot:\n%s", lb.String())
	}
}

// When an instance is gone, a component takes its slot with another
// connection (not while the store cannot list the live instances); when
// an instance joins, it hands the slot back to the newcomer, a standby,
// whose next try takes it; the renewal after finds no free slot.
func TestAdoptAndHandBack(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.balance(2)
	var la, lb, lc, li logBuffer
	ba, bb, bc := newRecordingBridge(), newRecordingBridge(), newRecordingBridge()
	a, doneA, fa := startLogged(t, srv, ba, &la)
	b, _, _ := startLogged(t, srv, bb, &lb)
	waitFor(t, "both slotted", func() bool { return a.slotted() && b.slotted() })
	aSlot := 0
	if srv.holder(1) == fa {
		aSlot = 1
	}
	in := &Instance{log: slog.New(slog.NewTextHandler(&li, nil))}
	in.add(b)
	ctx := context.Background()
	in.watchSlots(ctx, "b", []string{"a", "b"}, nil)
	// The first look finds no free slot.
	waitFor(t, "b's first look", func() bool { return lb.count("no free balancing slot for another connection") == 1 })

	// a dies (its reconnection is refused: it stops).
	srv.refuse.Store(true)
	fa.nc.Close()
	doneA <- <-doneA
	srv.refuse.Store(false)
	in.watchSlots(ctx, "b", nil, errors.New("database on fire"))
	time.Sleep(200 * time.Millisecond)
	if srv.holder(aSlot) != nil || li.count("cannot read the live instances") != 1 {
		t.Fatalf("slot taken (%v) or no warning without the live instances:\n%s", srv.holder(aSlot) != nil, li.String())
	}
	in.watchSlots(ctx, "b", []string{"b"}, nil)
	waitFor(t, "b's extra connection", func() bool { return lb.count("took a balancing slot of the server") == 1 })
	toSlot(t, srv, aSlot, "adopted", bb)

	// c joins: a standby until b hands the slot back.
	c, _, _ := startLogged(t, srv, bc, &lc)
	waitFor(t, "c standby", func() bool { return lc.count("holds none of the server's balancing slots") > 0 })
	in.watchSlots(ctx, "b", []string{"b", "c"}, nil)
	waitFor(t, "c slotted", c.slotted)
	toSlot(t, srv, aSlot, "handed-back", bc)
	// Soon after, b checks for a free slot: there is none, and it keeps
	// its stream only.
	waitFor(t, "b's check", func() bool { return lb.count("no free balancing slot for another connection") >= 2 })
	b.mu.Lock()
	extras := len(b.extras)
	b.mu.Unlock()
	if extras != 0 {
		t.Errorf("b keeps %d extra connections", extras)
	}
	// b never hands back its last connection holding a slot.
	if b.handBack() {
		t.Error("b handed back its stream's slot")
	}
}

// A server that routes every domain of its listener over any of its
// connections (ejabberd's global_routes) delivers a component's probes
// on a sibling's stream: they count as come back, and neither opens
// other connections.
func TestProbesOverSiblingStream(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.shared = true
	g := NewGroup()
	var la, lb logBuffer
	a, _, _ := startLogged(t, srv, &fakeBridge{}, &la, func(c *Component) { c.opts.Group = g; g.add(c) })
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := New(Options{Domain: "other.example.org", Addr: srv.ln.Addr().String(), Secret: "s", Bridge: &fakeBridge{}, Store: st, Group: g})
	slotTune(&lb)(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv.accept(t)
	waitFor(t, "both slotted", func() bool { return a.slotted() && b.slotted() })
	if err := a.SendMessage(context.Background(), stanza.Message("", "u@example.org", "chat", "m", "hello")); err != nil {
		t.Fatal(err)
	}
	outboxEmpties(t, a)
	time.Sleep(300 * time.Millisecond)
	for _, l := range []*logBuffer{&la, &lb} {
		if n := l.count("another connection"); n > 0 {
			t.Errorf("other connections tried:\n%s", l.String())
		}
	}
}

// A slot handed back that nobody takes (the newcomer found a free one)
// is taken again handBackCheck later.
func TestHandedBackSlotRetaken(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.balance(3)
	var la, lb logBuffer
	a, _, _ := startLogged(t, srv, &fakeBridge{}, &la)
	b, _, _ := startLogged(t, srv, &fakeBridge{}, &lb)
	waitFor(t, "both slotted", func() bool { return a.slotted() && b.slotted() })
	b.adoptSlots(context.Background())
	if n := lb.count("took a balancing slot of the server with another connection"); n != 1 {
		t.Fatalf("b took %d free slots, want 1:\n%s", n, lb.String())
	}
	if !b.handBack() {
		t.Fatal("b kept its extra connection")
	}
	waitFor(t, "the slot free", func() bool { return srv.holder(2) == nil })
	waitFor(t, "the slot taken again", func() bool { return lb.count("took a balancing slot of the server with another connection") == 2 })
	if srv.holder(2) == nil || b.slotsHeld() != 2 {
		t.Errorf("slot 2 held: %v; b holds %d slots, want 2", srv.holder(2) != nil, b.slotsHeld())
	}
}

// A server that routes every candidate back to the one connection
// (Prosody, ejabberd without domain_balancing) has no slot to take: a
// departure or the first renewal opens no other connection.
func TestNoSlotsToTakeWithoutBalancing(t *testing.T) {
	srv := newFakeServer(t, "s")
	var lb logBuffer
	c, _, _ := startLogged(t, srv, &fakeBridge{}, &lb)
	waitFor(t, "every candidate back", c.unbalanced.Load)
	c.adoptSlots(context.Background())
	select {
	case <-srv.conns:
		t.Fatal("another connection opened to a server that does not balance")
	case <-time.After(300 * time.Millisecond):
	}
	if n := lb.count("balancing slot"); n > 0 {
		t.Errorf("slots looked for:\n%s", lb.String())
	}
}

// A standby's outbox waits for a route: nothing is sent while no
// connection of the component holds a slot; once another connection
// takes one, the stream sends, and the confirmations (written on the
// stream, from the other connection's localpart) come back there.
func TestStandbyOutboxWaitsForRoute(t *testing.T) {
	srv := newFakeServer(t, "s")
	srv.balance(1)
	var la, lb logBuffer
	a, doneA, fa := startLogged(t, srv, &fakeBridge{}, &la)
	waitFor(t, "a slotted", a.slotted)
	b, _, fb := startLogged(t, srv, &fakeBridge{}, &lb, func(c *Component) {
		c.confirmWait = time.Minute
		c.standbyBackoff = bridges.Backoff{First: 100 * time.Millisecond, Max: 200 * time.Millisecond}
	})
	waitFor(t, "b standby", func() bool { return lb.count("holds none of the server's balancing slots") > 0 })
	if err := b.SendMessage(context.Background(), stanza.Message("", "u@example.org", "chat", "waiting", "hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case el := <-fb.in:
		if el.Attr("id") == "waiting" {
			t.Fatal("the standby sent its outbox with no route for the confirmation")
		}
	case <-time.After(500 * time.Millisecond):
	}
	srv.refuse.Store(true) // a does not come back
	fa.nc.Close()
	doneA <- <-doneA
	srv.refuse.Store(false)
	fb.expect(t, "the message once b holds a slot", hasID("waiting"))
	outboxEmpties(t, b)
	if !b.slotted() || b.slotsHeld() != 1 {
		t.Errorf("b holds %d slots", b.slotsHeld())
	}
}

// Two instances on one PostgreSQL database, each with a component on one
// slot of a balancing server. One is killed: its connection and its
// database sessions end, its row stays until its lease (a minute) ends.
// The survivor sees its presence gone and takes the slot it left within
// a few of its looks, long before the lease; the killed instance's users
// reach it.
func TestKilledInstanceSlotTaken(t *testing.T) {
	url := pgtest.New(t).DB(t)
	srv := newFakeServer(t, "s")
	srv.balance(2)
	const lease = time.Minute
	type member struct {
		c      *Component
		b      *recordingBridge
		logs   *logBuffer
		kill   func()
		stream *fakeConn
	}
	start := func(name string) *member {
		st, err := store.Open(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		m := &member{b: newRecordingBridge(), logs: &logBuffer{}}
		in := testInstance(st, lease, m.logs)
		in.watchEvery = 100 * time.Millisecond
		if err := in.Join(context.Background()); err != nil {
			t.Fatal(err)
		}
		m.c = New(Options{Domain: "test.example.org", Addr: srv.ln.Addr().String(), Secret: "s", Bridge: m.b, Store: st, Instance: in})
		slotTune(m.logs)(m.c)
		ctx, cancel := context.WithCancel(context.Background())
		done, idone := make(chan struct{}), make(chan struct{})
		go func() { defer close(done); m.c.Run(ctx) }()
		go func() { defer close(idone); in.run(ctx) }()
		var once sync.Once
		m.kill = func() {
			once.Do(func() {
				cancel()
				<-done
				<-idone
				st.Close() // its sessions end; its row stays
			})
		}
		t.Cleanup(m.kill)
		m.stream = srv.accept(t)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s's log:\n%s", name, m.logs)
			}
		})
		return m
	}
	a, b := start("a"), start("b")
	waitFor(t, "both slotted", func() bool { return a.c.slotted() && b.c.slotted() })
	aSlot := 0
	if srv.holder(1) == a.stream {
		aSlot = 1
	}
	// a shows its presence, and b has looked since.
	waitFor(t, "a's presence", func() bool {
		ps, err := b.c.store.Presences(context.Background())
		return err == nil && len(ps) == 1 && ps[a.c.store.Instance()]
	})
	time.Sleep(300 * time.Millisecond)
	toSlot(t, srv, aSlot, "before", a.b)

	a.kill()
	waitFor(t, "a's slot free", func() bool { return srv.holder(aSlot) == nil })
	waitFor(t, "b's extra connection on a's slot", func() bool { return b.logs.count("took a balancing slot of the server with another connection") == 1 })
	toSlot(t, srv, aSlot, "after", b.b)
	if n := b.logs.count("the process of another instance is gone"); n != 1 {
		t.Errorf("b saw a's process gone %d times, want 1", n)
	}
	if b.logs.count("took up users of instances gone") != 0 {
		t.Error("b took a's users up before a's lease ended")
	}
}
