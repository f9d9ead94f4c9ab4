package component

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/xmlel"
	"passerelle/store"
	"passerelle/store/pgtest"
	"passerelle/store/storetest"
)

// ownerBridge is a bridge with foreign connections per user: it records
// what the component has it do, in order, across instances.
type ownerBridge struct {
	fakeBridge
	name     string
	log      *eventLog
	standing []string // the users whose work it starts at start (Own)
	// onRelease, when set, runs at the end of Released.
	onRelease func()
}

type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

func (l *eventLog) has(e string) bool { return slices.Contains(l.all(), e) }

func (l *eventLog) index(e string) int { return slices.Index(l.all(), e) }

func (b *ownerBridge) RegistrationRequired() bool { return false }

func (b *ownerBridge) Run(ctx context.Context, h bridges.Host) error {
	b.host = h
	if len(b.standing) > 0 {
		held, err := h.Own(ctx, b.standing)
		if err != nil {
			b.log.add(b.name + " own failed")
		}
		for _, u := range held {
			b.log.add(b.name + " started " + u)
		}
	}
	h.Ready()
	<-ctx.Done()
	return nil
}

func (b *ownerBridge) Handle(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	b.log.add(b.name + " handled " + u.JID + " " + st.ChildText("", "body"))
}

func (b *ownerBridge) Acquired(ctx context.Context, users []string) {
	for _, u := range users {
		b.log.add(b.name + " acquired " + u)
	}
}

func (b *ownerBridge) Released(ctx context.Context, user string) {
	b.log.add(b.name + " released " + user)
	if b.onRelease != nil {
		b.onRelease()
	}
}

// testInstance is an instance on st with a short lease, logging into w.
func testInstance(st *store.Store, lease time.Duration, w io.Writer) *Instance {
	in := NewInstance(st, slog.New(slog.NewTextHandler(w, nil)))
	in.lease, in.renewEvery, in.takeover, in.watchEvery = lease, lease/4, 3*lease, lease/10
	return in
}

// node is one gateway instance of a test: a store on the shared
// database, its instance and a component connected to a server of its
// own.
type node struct {
	st     *store.Store
	inst   *Instance
	c      *Component
	bridge *ownerBridge
	logs   *logBuffer // the instance's and the component's
	fc     *fakeConn
	stop   func() // stops the component, then the instance (a clean stop)
	kill   func() // stops the component and the renewals, leaving the instance's row
	// freeze stops the instance's renewals and looks, as a stopped or
	// starved process; thaw starts them again.
	freeze, thaw func()
}

func startNode(t *testing.T, url, name string, log *eventLog, lease time.Duration, standing ...string) *node {
	t.Helper()
	st, err := store.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n := &node{st: st, logs: &logBuffer{}, bridge: &ownerBridge{name: name, log: log, standing: standing}}
	n.inst = testInstance(st, lease, n.logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, n.logs)
		}
	})
	if err := n.inst.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := newFakeServer(t, "s")
	n.c = New(Options{Domain: "test.example.org", Addr: srv.ln.Addr().String(), Secret: "s", Bridge: n.bridge, Store: st,
		Log: slog.New(slog.NewTextHandler(n.logs, nil)), Instance: n.inst})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.c.Run(ctx) }()
	var imu sync.Mutex
	icancel, idone := func() {}, make(chan struct{})
	close(idone)
	n.thaw = func() {
		imu.Lock()
		defer imu.Unlock()
		var ictx context.Context
		ictx, icancel = context.WithCancel(context.Background())
		d := make(chan struct{})
		idone = d
		go func() { defer close(d); n.inst.run(ictx) }()
	}
	n.freeze = func() {
		imu.Lock()
		defer imu.Unlock()
		icancel()
		<-idone
	}
	n.thaw()
	var once sync.Once
	end := func(leave bool) {
		once.Do(func() {
			cancel()
			<-done
			n.freeze()
			if leave { // a killed instance's row stays until its lease ends
				n.inst.leave(context.Background())
			}
		})
	}
	n.stop = func() { end(true) }
	n.kill = func() { end(false) }
	t.Cleanup(n.stop)
	n.fc = srv.accept(t)
	return n
}

// heldPair starts two instances on a new database, a and b, and has a
// take u@example.org up with its stanza "one".
func heldPair(t *testing.T, cluster *pgtest.Cluster, lease time.Duration) (log *eventLog, a, b *node) {
	t.Helper()
	url := cluster.DB(t)
	log = &eventLog{}
	a = startNode(t, url, "a", log, lease)
	b = startNode(t, url, "b", log, lease)
	message(a.fc, t, "u@example.org", "one")
	waitEvent(t, log, "a handled u@example.org one")
	return log, a, b
}

func message(fc *fakeConn, t *testing.T, user, body string) {
	t.Helper()
	fc.send(t, "<message from='%s/r' to='x%%irc@test.example.org' id='%s'><body>%s</body></message>", user, body, body)
}

func waitEvent(t *testing.T, log *eventLog, e string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !log.has(e) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for “%s” in %s", e, strings.Join(log.all(), ", "))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two instances sharing a PostgreSQL database hold each user on one of
// them at a time.
func TestInstances(t *testing.T) {
	cluster := pgtest.New(t)
	const lease = time.Second

	// The server routes a user's stanzas to another instance: that one
	// asks, the holder closes the user's connections at its next renewal,
	// and only then does the new holder handle the stanza and start the
	// user's work.
	t.Run("takeover", func(t *testing.T) {
		log, a, b := heldPair(t, cluster, lease)
		if a.c.heldCount() != 1 {
			t.Fatalf("a holds %d users", a.c.heldCount())
		}
		message(b.fc, t, "u@example.org", "two")
		waitEvent(t, log, "b handled u@example.org two")
		waitEvent(t, log, "b acquired u@example.org")
		if r, h := log.index("a released u@example.org"), log.index("b handled u@example.org two"); r < 0 || r > h {
			t.Fatalf("b handled the user's stanza before a let go: %v", log.all())
		}
		if a.c.heldCount() != 0 || b.c.heldCount() != 1 {
			t.Fatalf("a holds %d, b %d", a.c.heldCount(), b.c.heldCount())
		}
		var w strings.Builder
		b.inst.WritePrometheus(context.Background(), &w)
		for _, want := range []string{
			`passerelle_users_held{domain="test.example.org",instance="` + b.st.Instance() + `"} 1`,
			`passerelle_user_leases{domain="test.example.org",instance="` + b.st.Instance() + `"} 1`,
			`passerelle_instances_live{instance="` + b.st.Instance() + `"} 2`,
		} {
			if !strings.Contains(w.String(), want) {
				t.Errorf("b's metrics lack %s:\n%s", want, w.String())
			}
		}
		// And back.
		message(a.fc, t, "u@example.org", "three")
		waitEvent(t, log, "a handled u@example.org three")
		if r, h := log.index("b released u@example.org"), log.index("a handled u@example.org three"); r < 0 || r > h {
			t.Fatalf("a handled the user's stanza before b let go: %v", log.all())
		}
	})

	// At start an instance starts the work of the users no live instance
	// holds; a user of an instance that stops is taken up by another at
	// its next renewal, without a stanza of the user.
	t.Run("start and clean stop", func(t *testing.T) {
		url := cluster.DB(t)
		log := &eventLog{}
		a := startNode(t, url, "a", log, lease, "u@example.org", "v@example.org")
		waitEvent(t, log, "a started v@example.org")
		startNode(t, url, "b", log, lease, "u@example.org", "v@example.org", "w@example.org")
		waitEvent(t, log, "b started w@example.org")
		if log.has("b started u@example.org") || log.has("b started v@example.org") {
			t.Fatalf("b started users a holds: %v", log.all())
		}
		a.stop()
		waitEvent(t, log, "b acquired u@example.org")
		waitEvent(t, log, "b acquired v@example.org")
	})

	// A killed instance's users and queued stanzas are taken up once its
	// lease ended.
	t.Run("killed", func(t *testing.T) {
		log, a, b := heldPair(t, cluster, lease)
		a.kill()
		// Queued by a, as if its stream had broken before it sent them.
		msgs := []*xmlel.Element{xmlel.New("", "message").SetAttr("to", "u@example.org").SetAttr("id", "q1"),
			xmlel.New("", "message").SetAttr("to", "u@example.org").SetAttr("id", "q2")}
		if _, err := a.c.Deliver(context.Background(), "", nil, msgs...); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, log, "b acquired u@example.org")
		b.fc.expect(t, "a's first queued stanza, sent by b", hasID("q1"))
		b.fc.expect(t, "a's second queued stanza, sent by b", hasID("q2"))
		if n, _ := b.st.CountStanzas(context.Background(), "test.example.org"); n != 0 {
			waitFor(t, "the outbox emptied", func() bool {
				n, _ := b.st.CountStanzas(context.Background(), "test.example.org")
				return n == 0
			})
		}
	})

	// An instance that cannot renew its lease lets go of its users before
	// the lease ends, and refuses their stanzas; the other takes them up
	// once the lease ended.
	t.Run("store fails during renewal", func(t *testing.T) {
		log, a, _ := heldPair(t, cluster, 2*lease) // a wider margin between letting go and the lease's end, for a loaded machine
		a.st.Close()
		waitEvent(t, log, "a released u@example.org")
		if a.inst.leased() {
			t.Fatal("a still takes itself for leased")
		}
		// Its metrics leave out what the store does not answer.
		var w strings.Builder
		a.inst.WritePrometheus(context.Background(), &w)
		if m := w.String(); !strings.Contains(m, `passerelle_instance_leased{instance="`+a.st.Instance()+`"} 0`) ||
			!strings.Contains(m, `passerelle_users_held{domain="test.example.org"`) ||
			strings.Contains(m, "passerelle_outbox_queued{") || strings.Contains(m, "passerelle_user_leases{") || strings.Contains(m, "passerelle_instances_live{") {
			t.Errorf("metrics of an instance whose store fails:\n%s", m)
		}
		message(a.fc, t, "u@example.org", "two")
		refusal := a.fc.expect(t, "the refusal of the stanza", hasID("two"))
		if refusal.Attr("type") != "error" || !strings.Contains(refusal.String(), "internal-server-error") || !strings.Contains(refusal.String(), "type=\"wait\"") {
			t.Fatalf("refusal: %s", refusal)
		}
		if log.has("a handled u@example.org two") {
			t.Fatal("a handled a stanza without a lease")
		}
		waitEvent(t, log, "b acquired u@example.org")
		if r, acq := log.index("a released u@example.org"), log.index("b acquired u@example.org"); r > acq {
			t.Fatalf("b took the user before a let go: %v", log.all())
		}
		a.stop()
		if !strings.Contains(a.logs.String(), "cannot remove the instance's record") {
			t.Fatalf("a's stop on a closed store is not logged:\n%s", a.logs)
		}
	})

	// An instance frozen past its lease (its renewals and looks stopped,
	// as by SIGSTOP or starvation) while the other took its user: the
	// fences taken under its lease fail by the clock, and the user's
	// stanzas are refused, before it runs again; then it lets go of the
	// user before any renewal, and joins again under a new name, its old
	// fences failing still.
	t.Run("frozen past the lease", func(t *testing.T) {
		log, a, b := heldPair(t, cluster, lease)
		fence := a.c.Fence()
		if !fence() {
			t.Fatal("a fence fails under a valid lease")
		}
		a.freeze()
		waitEvent(t, log, "b acquired u@example.org")
		if fence() {
			t.Error("a's fence holds past its lease")
		}
		message(a.fc, t, "u@example.org", "late")
		refusal := a.fc.expect(t, "the refusal of the stanza", hasID("late"))
		if refusal.Attr("type") != "error" || log.has("a handled u@example.org late") {
			t.Fatalf("a handled a stanza of a user past its lease: %s; %v", refusal, log.all())
		}
		a.thaw()
		waitEvent(t, log, "a released u@example.org")
		waitFor(t, "a's new name", func() bool { return strings.Contains(a.logs.String(), "joined the instances again under a new name") })
		out := a.logs.String()
		if l, j := strings.Index(out, "let go of every user: the lease ended before it was renewed"), strings.Index(out, "joined the instances again"); l < 0 || l > j {
			t.Fatalf("a did not let go before it renewed:\n%s", out)
		}
		if fence() || !a.inst.leased() {
			t.Errorf("after the new name: the old fence holds (%v), the instance is leased (%v)", fence(), a.inst.leased())
		}
		if !a.c.Fence()() {
			t.Error("a new fence fails under the new lease")
		}
		if h, _ := b.st.UserHolder(context.Background(), "test.example.org", "u@example.org"); h != b.st.Instance() {
			t.Errorf("u is held by %q, want b", h)
		}
	})

	// The holder does not let go in time (closing the user's connections
	// takes long): the stanza waiting for it is refused with a wait
	// error; once the holder let go, the asker takes the user up though
	// no stanza waits for it any more.
	t.Run("holder does not let go", func(t *testing.T) {
		log, a, b := heldPair(t, cluster, lease)
		b.inst.takeover = lease / 2
		closing := make(chan struct{})
		a.bridge.onRelease = func() { <-closing }
		message(b.fc, t, "u@example.org", "two")
		refusal := b.fc.expect(t, "the refusal of the stanza", hasID("two"))
		handled := log.has("b handled u@example.org two")
		close(closing)
		if !strings.Contains(refusal.String(), "resource-constraint") {
			t.Fatalf("refusal: %s", refusal)
		}
		if handled {
			t.Fatalf("b handled the stanza while a held the user: %v", log.all())
		}
		waitEvent(t, log, "b acquired u@example.org")
		if r, acq := log.index("a released u@example.org"), log.index("b acquired u@example.org"); r < 0 || r > acq {
			t.Fatalf("b took the user before a let go: %v", log.all())
		}
	})
}

// More failures of instances sharing a PostgreSQL database.
func TestInstanceFailures(t *testing.T) {
	cluster := pgtest.New(t)
	const lease = time.Second

	// An instance frozen longer than its lease (its renewals stopped)
	// finds its row gone when it wakes: it lets go of its users at once,
	// which another took up meanwhile, and joins again under a new name.
	t.Run("frozen", func(t *testing.T) {
		log, a, _ := heldPair(t, cluster, lease)
		old := a.st.Instance()
		a.inst.mu.Lock()
		waitEvent(t, log, "b acquired u@example.org")
		released := log.has("a released u@example.org")
		a.inst.mu.Unlock()
		if released {
			t.Fatalf("a frozen let go: %v", log.all())
		}
		waitEvent(t, log, "a released u@example.org")
		waitFor(t, "a under a new name", func() bool { return a.st.Instance() != old && a.inst.leased() })
		if a.c.heldCount() != 0 {
			t.Fatalf("a holds %d users", a.c.heldCount())
		}
	})

	// The database stops answering: an instance lets go of its users
	// before its lease ends; once the database answers again, it joins
	// again under a new name, and the user is taken up again.
	t.Run("database stops answering", func(t *testing.T) {
		log, a, b := heldPair(t, cluster, lease)
		old := a.st.Instance()
		release := storetest.Lock(t, b.st, "instances")
		waitEvent(t, log, "a released u@example.org")
		if a.inst.leased() {
			t.Fatal("a let go but takes itself for leased")
		}
		release()
		waitFor(t, "a under a new name", func() bool { return a.st.Instance() != old && a.inst.leased() })
		waitFor(t, "u taken up again", func() bool {
			return slices.ContainsFunc(log.all(), func(e string) bool { return strings.HasSuffix(e, " acquired u@example.org") })
		})
	})

	// The holder's store fails after it closed the user's connections:
	// the lease stays with it until it ended, then the asker takes it.
	t.Run("store fails during the handover", func(t *testing.T) {
		log, a, b := heldPair(t, cluster, lease)
		a.bridge.onRelease = func() { a.st.Close() }
		message(b.fc, t, "u@example.org", "two")
		waitEvent(t, log, "b handled u@example.org two")
		if r, h := log.index("a released u@example.org"), log.index("b handled u@example.org two"); r < 0 || r > h {
			t.Fatalf("b handled the user's stanza before a let go: %v", log.all())
		}
		if !strings.Contains(a.logs.String(), "cannot hand a user over to the instance that asked") {
			t.Fatalf("the failed handover is not logged:\n%s", a.logs)
		}
	})

	// The users' leases cannot be read at a renewal (the table is
	// locked): the renewal still holds the lease, says what it could not
	// do, and does it at a later one.
	t.Run("leases locked at a renewal", func(t *testing.T) {
		log, a, b := heldPair(t, cluster, lease)
		release := storetest.Lock(t, b.st, "user_leases")
		waitFor(t, "a's renewal to give up on the leases", func() bool {
			return strings.Contains(a.logs.String(), "cannot read the users other instances ask for") &&
				strings.Contains(a.logs.String(), "cannot take up the users of instances gone") &&
				strings.Contains(a.logs.String(), "cannot take up the queued stanzas of instances gone")
		})
		if !a.inst.leased() || log.has("a released u@example.org") {
			t.Fatalf("a let go while its lease renewed: %v", log.all())
		}
		release()
		message(b.fc, t, "u@example.org", "two")
		waitEvent(t, log, "b handled u@example.org two")
	})

	// A fence finds the lease ended by the clock (a line read from an
	// IRC server after the process was frozen past it: the connection is
	// closed for good), and a renewal that was under way makes the lease
	// valid again before the watch looked: the fence stays failed, and
	// the instance lets go of the user all the same, which is taken up
	// again rather than left without its connection.
	t.Run("fence failed before a renewal", func(t *testing.T) {
		log, a, _ := heldPair(t, cluster, lease)
		old := a.st.Instance()
		fence := a.c.Fence()
		a.inst.mu.Lock() // the watch waits for the renewal
		a.inst.validWall.Store(time.Now().Add(-time.Second).UnixNano())
		failed := !fence()
		a.inst.setValid(time.Now())
		a.inst.mu.Unlock()
		if !failed {
			t.Fatal("the fence holds past the lease")
		}
		if fence() {
			t.Error("the renewal made a failed fence hold again")
		}
		waitEvent(t, log, "a released u@example.org")
		waitFor(t, "a under a new name", func() bool { return a.st.Instance() != old && a.inst.leased() })
		waitFor(t, "u taken up again", func() bool {
			return slices.ContainsFunc(log.all(), func(e string) bool { return strings.HasSuffix(e, " acquired u@example.org") })
		})
		if fence() {
			t.Error("the old fence holds under the new name")
		}
	})

	// The lease ends by the clock while its renewal waits for the
	// database (the process froze, or the wall clock stepped): the
	// renewal does not make it valid again; the instance lets go of its
	// users, and takes them up again under a new name.
	t.Run("lease ended while renewed", func(t *testing.T) {
		a, log, fence, renewed := renewing(t, cluster, func(a *node) {
			a.inst.validWall.Store(time.Now().Add(-time.Second).UnixNano())
		})
		old := a.st.Instance()
		<-renewed
		if fence() || a.inst.leased() {
			t.Fatalf("after the renewal: the fence holds (%v), the instance is leased (%v)", fence(), a.inst.leased())
		}
		waitEvent(t, log, "a released u@example.org")
		a.inst.renew(context.Background())
		if a.st.Instance() == old || !a.inst.leased() {
			t.Fatalf("a did not join again under a new name: %s", a.logs)
		}
		waitEvent(t, log, "a acquired u@example.org")
		if fence() {
			t.Error("the old fence holds under the new name")
		}
	})

	// The watch lets go of the users while a renewal waits for the
	// database: the renewal does not take the instance for their holder
	// again; the next one joins under a new name, and takes them up.
	t.Run("let go while renewed", func(t *testing.T) {
		a, log, fence, renewed := renewing(t, cluster, func(a *node) {
			a.inst.letGo("test")
		})
		old := a.st.Instance()
		<-renewed
		if fence() || a.inst.leased() {
			t.Fatalf("after the renewal: the fence holds (%v), the instance is leased (%v)", fence(), a.inst.leased())
		}
		a.inst.renew(context.Background())
		if a.st.Instance() == old || !a.inst.leased() {
			t.Fatalf("a did not join again under a new name: %s", a.logs)
		}
		waitEvent(t, log, "a acquired u@example.org")
	})

	// An instance that cannot record itself at start is not started.
	t.Run("join fails", func(t *testing.T) {
		st, err := store.Open(cluster.DB(t))
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		if err := testInstance(st, lease, io.Discard).Join(context.Background()); err == nil {
			t.Fatal("joined on a closed store")
		}
	})

	// The store fails while an instance takes up a user whose stanza
	// came: the stanza is refused with a wait error.
	t.Run("store fails while taking a user", func(t *testing.T) {
		url := cluster.DB(t)
		log := &eventLog{}
		a := startNode(t, url, "a", log, time.Hour) // its lease outlives the test
		a.st.Close()
		message(a.fc, t, "v@example.org", "one")
		refusal := a.fc.expect(t, "the refusal of the stanza", hasID("one"))
		if !strings.Contains(refusal.String(), "internal-server-error") || !strings.Contains(refusal.String(), `type="wait"`) {
			t.Fatalf("refusal: %s", refusal)
		}
		if log.has("a handled v@example.org one") || a.c.heldCount() != 0 {
			t.Fatalf("a handled the stanza of a user it could not take: %v", log.all())
		}
	})
}

// Alone with its store (SQLite), an instance holds every user and
// records nothing.
func TestInstanceAlone(t *testing.T) {
	log := &eventLog{}
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	in := NewInstance(st, nil)
	if err := in.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	if live, _ := st.LiveInstances(context.Background()); len(live) != 0 {
		t.Fatalf("instances recorded on SQLite: %v", live)
	}
	srv := newFakeServer(t, "s")
	b := &ownerBridge{name: "a", log: log, standing: []string{"u@example.org"}}
	c, _, _ := startComponent(t, srv, b, "s", func(c *Component) { c.inst = in; in.add(c) })
	fc := srv.accept(t)
	waitEvent(t, log, "a started u@example.org")
	message(fc, t, "v@example.org", "one")
	waitEvent(t, log, "a handled v@example.org one")
	if c.heldCount() != 2 {
		t.Fatalf("holds %d users, want 2", c.heldCount())
	}
	var w strings.Builder
	in.WritePrometheus(context.Background(), &w)
	for _, want := range []string{`passerelle_users_held{domain="test.example.org",instance="` + st.Instance() + `"} 2`, "passerelle_instance_leased{", "passerelle_outbox_queued{"} {
		if !strings.Contains(w.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, w.String())
		}
	}
}

// A lease ends when either clock says so: the monotonic one (a process
// frozen past it) or the wall clock the other instances compare it with
// (a virtual machine paused, whose monotonic clock stood still). A fence
// that failed stays failed after a renewal, and has the instance let go
// of its users still; a fence taken before the instance let go of its
// users stays failed after it joined again.
func TestLeaseClocks(t *testing.T) {
	in := &Instance{lease: time.Minute, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	in.setValid(time.Now())
	f := in.fence()
	if !f() || !in.leased() || in.expired() {
		t.Fatal("a fresh lease is not valid")
	}
	in.validWall.Store(time.Now().Add(-time.Second).UnixNano())
	if f() || in.leased() || !in.expired() {
		t.Error("a lease ended by the wall clock is taken for valid")
	}
	in.setValid(time.Now())
	if f() {
		t.Error("a renewal made a failed fence hold again")
	}
	if !in.leased() || !in.expired() {
		t.Errorf("renewed after a fence failed: leased %v, expired %v (want the users let go)", in.leased(), in.expired())
	}
	in.checkExpiry()
	if in.leased() || f() {
		t.Error("the instance kept its users after a fence failed")
	}
	in.mu.Lock() // joined again
	in.lost = false
	in.tripped.Store(0)
	in.mu.Unlock()
	in.setValid(time.Now())
	g := in.fence()
	in.validUntil.Store(int64(time.Since(clockBase) - time.Second))
	if g() || in.leased() || !in.expired() {
		t.Error("a lease ended by the monotonic clock is taken for valid")
	}
	in.setValid(time.Now())
	if g() {
		t.Error("a renewal made a failed fence hold again")
	}
	in.checkExpiry()
	in.mu.Lock()
	in.lost = false
	in.tripped.Store(0)
	in.mu.Unlock()
	h := in.fence()
	in.setValid(time.Now())
	if !h() {
		t.Error("a renewed lease fails the fence taken before")
	}
	in.letGo("test")
	in.setValid(time.Now())
	in.mu.Lock()
	in.lost = false
	in.mu.Unlock()
	if h() || !in.leased() || !in.fence()() {
		t.Errorf("after letting go and a renewal: the old fence %v, leased %v", h(), in.leased())
	}
}

// renewing starts an instance alone, with a lease that outlives its
// renewal's wait, that holds u@example.org, stops its renewals and looks,
// and starts one renewal that waits for the database; during it, it runs
// during, then lets the renewal go on. It returns the instance, the log,
// a fence taken before and a channel closed once the renewal returned.
func renewing(t *testing.T, cluster *pgtest.Cluster, during func(a *node)) (*node, *eventLog, func() bool, chan struct{}) {
	t.Helper()
	log := &eventLog{}
	a := startNode(t, cluster.DB(t), "a", log, 80*time.Second) // its renewal waits up to 10 s
	message(a.fc, t, "u@example.org", "one")
	waitEvent(t, log, "a handled u@example.org one")
	a.freeze()
	fence := a.c.Fence()
	release := storetest.Lock(t, a.st, "instances")
	renewed := make(chan struct{})
	go func() { defer close(renewed); a.inst.renew(context.Background()) }()
	waitFor(t, "the renewal to wait for the database", func() bool {
		var n int
		err := a.st.DB().QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'UPDATE instances%'`).Scan(&n)
		return err == nil && n > 0
	})
	during(a)
	release()
	return a, log, fence, renewed
}
