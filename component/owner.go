package component

// Instances sharing one PostgreSQL database (see store/instance.go for the
// rows): this process is an Instance; it holds a lease it renews, and its
// components hold users, per domain, for the bridges with foreign
// connections (bridges.Owner). On SQLite the process is alone: it holds
// every user, and nothing is written for it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/store"
)

const (
	// InstanceLease is how long an instance is taken for live after its
	// last renewal: when it dies, its users (their persistent IRC
	// channels, their mailbox watchers) and its queued stanzas are taken
	// over by another within about that time and a renewal period.
	InstanceLease = 30 * time.Second
	// renewEvery is how often an instance renews its lease, and looks for
	// the users and stanzas of instances gone and the users asked of it.
	renewEvery = InstanceLease / 3
	// claimPoll is how often a user's stanza waiting for its holder to let
	// go asks again.
	claimPoll = 500 * time.Millisecond
	// watchEvery is how often an instance looks at its lease by the clock
	// and at the other instances' presence (store/presence.go): a process
	// gone leaves its balancing slots empty, and the XMPP server drops
	// their users' stanzas until a connection takes them.
	watchEvery = time.Second
)

// errNoLease refuses a user's stanza while the instance has let go of its
// users for want of a renewal.
var errNoLease = errors.New("the instance cannot renew its lease in the database")

// errHeld refuses a user's stanza when the user's holder did not let go
// in time.
var errHeld = errors.New("another instance still holds the user")

// Instance is this process among the gateway instances that share a
// store. Join it before the components run, and Run it beside them.
type Instance struct {
	st  *store.Store
	log *slog.Logger
	// solo: the store is not shared (SQLite): every user is this
	// instance's, and nothing is recorded.
	solo bool
	// lease, renewEvery and takeover (how long a user's stanza waits for
	// the user's holder to let go) are InstanceLease, renewEvery and the
	// time a holder takes to notice: tests shorten them.
	lease, renewEvery, takeover time.Duration
	// watchEvery is watchEvery (tests shorten it).
	watchEvery time.Duration

	// validUntil is the end of the lease last renewed, in nanoseconds of
	// the monotonic clock since clockBase, validWall the same on the wall
	// clock (Unix nanoseconds): the lease has ended when either clock
	// says so (the monotonic clock may stand still while a virtual
	// machine is paused; the wall clock, which the other instances
	// compare the lease with, may step). epoch counts the times the
	// instance let go of its users (it changes under mu). They make the
	// fences (Fence). tripped is epoch+1 once a fence taken under the
	// current epoch found the lease ended by the clock: that fence fails
	// for good, so the users must be let go even when a renewal made the
	// lease valid again meanwhile (checkExpiry).
	validUntil, validWall atomic.Int64
	epoch, tripped        atomic.Uint64

	mu    sync.Mutex
	comps []*Component
	// lost is set when the instance let go of its users for want of a
	// renewal: it joins again under a new name once the store works.
	lost bool
	// live are the other live instances at the last renewal (nil before
	// the first): watchSlots.
	live map[string]bool
	// relayName names the instance's listener for the answers other
	// instances pass on to it (relay.go; "" when solo); up is closed
	// once it listens, which the components wait for, listenWait at
	// most.
	relayName  string
	up         chan struct{}
	upOnce     sync.Once
	listenWait time.Duration
	// present are the other instances seen with their presence shown
	// (watchPresence).
	present map[string]bool
}

// clockBase is the origin of Instance.validUntil: time.Since reads the
// monotonic clock, which a wall clock's step does not move.
var clockBase = time.Now()

// ended reports whether the lease has ended by either clock.
func (in *Instance) ended() bool {
	now := time.Now()
	return int64(now.Sub(clockBase)) >= in.validUntil.Load() || now.UnixNano() >= in.validWall.Load()
}

// left returns how long the lease has to run, by the monotonic clock.
func (in *Instance) left() time.Duration {
	return time.Duration(in.validUntil.Load() - int64(time.Since(clockBase)))
}

// NewInstance returns this process's instance on st.
func NewInstance(st *store.Store, log *slog.Logger) *Instance {
	if log == nil {
		log = slog.Default()
	}
	in := &Instance{st: st, log: log.With("instance", st.Instance()), solo: !st.Shared(),
		lease: InstanceLease, renewEvery: renewEvery, takeover: InstanceLease + renewEvery, watchEvery: watchEvery}
	if !in.solo {
		in.relayName, in.up, in.listenWait = newRelayName(), make(chan struct{}), listenWait
	}
	return in
}

// soloInstance is the instance of a component given none: alone with its
// store.
func soloInstance() *Instance { return &Instance{solo: true} }

// Join records the instance as live in a shared store.
func (in *Instance) Join(ctx context.Context) error {
	if in.solo {
		return nil
	}
	start := time.Now()
	if err := in.st.JoinInstances(ctx, in.lease); err != nil {
		return err
	}
	in.setValid(start)
	in.log.Info("joined the instances sharing the database", "lease", in.lease)
	return nil
}

func (in *Instance) add(c *Component) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.comps = append(in.comps, c)
}

func (in *Instance) components() []*Component {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*Component(nil), in.comps...)
}

// setValid records a lease renewed (or taken) at start.
func (in *Instance) setValid(start time.Time) {
	in.validUntil.Store(int64(start.Sub(clockBase) + in.lease))
	in.validWall.Store(start.Add(in.lease).UnixNano())
}

// leased reports whether the instance may hold users: alone, or with a
// lease it renewed that has not ended by the clock.
func (in *Instance) leased() bool {
	lost, ended := in.state()
	return !lost && !ended
}

// expired reports whether the lease ended by the clock while the instance
// still took itself for the holder of its users (the process was stopped
// or starved past it, and another instance may have taken them), or a
// fence found it ended before a renewal made it valid again. Call it
// with mu held.
func (in *Instance) expired() bool {
	return !in.lost && (in.ended() || in.tripped.Load() == in.epoch.Load()+1)
}

// state reports whether the instance let go of its users, and whether
// its lease ended by the clock (never, alone).
func (in *Instance) state() (lost, ended bool) {
	if in.solo {
		return false, false
	}
	in.mu.Lock()
	lost = in.lost
	in.mu.Unlock()
	return lost, in.ended()
}

// fence returns a check of the lease the instance holds its users under
// now: it reports false once that lease ended by the clock or the
// instance let go of its users, and stays false (a renewal later does
// not make it true again). A fence failed by the clock has the watch let
// go of every user (checkExpiry): a bridge that closed a connection on
// it is then told to forget the user (Released), and the user is taken
// up again under a new lease. Alone, it always reports true.
func (in *Instance) fence() func() bool {
	if in.solo {
		return func() bool { return true }
	}
	e := in.epoch.Load()
	var failed atomic.Bool
	return func() bool {
		if failed.Load() {
			return false
		}
		if in.epoch.Load() == e && !in.ended() {
			return true
		}
		failed.Store(true)
		if in.epoch.Load() == e {
			in.tripped.Store(e + 1)
		}
		return false
	}
}

// Fence implements bridges.Host.
func (c *Component) Fence() func() bool { return c.inst.fence() }

// Run renews the lease until ctx ends, then removes the instance's row:
// what it held is free at once for the others. Call it once the
// components stopped using the store, or cancel it after them.
func (in *Instance) Run(ctx context.Context) {
	in.run(ctx)
	in.leave(ctx)
}

// run renews the lease until ctx ends, watches it and the others'
// presence meanwhile, and receives the answers other instances pass on.
func (in *Instance) run(ctx context.Context) {
	if in.solo {
		return
	}
	var watching sync.WaitGroup
	watching.Go(func() { in.listen(ctx) })
	watching.Go(func() { in.watch(ctx) })
	defer watching.Wait()
	t := time.NewTicker(in.renewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			in.renew(ctx)
		}
	}
}

// leave removes the instance's row.
func (in *Instance) leave(ctx context.Context) {
	if in.solo {
		return
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := in.st.LeaveInstances(lctx); err != nil {
		in.log.Warn("cannot remove the instance's record: the others take over when its lease ends", "err", err)
	}
}

// watch, every watchEvery until ctx ends, lets go of every user when the
// lease ended by the clock before a renewal (checkExpiry), and has the
// components look for free balancing slots when another instance's
// process is gone (watchPresence).
func (in *Instance) watch(ctx context.Context) {
	for pause(ctx, nil, in.watchEvery) {
		in.checkExpiry()
		wctx, cancel := context.WithTimeout(ctx, in.watchEvery)
		in.watchPresence(wctx)
		cancel()
	}
}

// checkExpiry lets go of every user at once, without a word on their
// foreign connections (their fences fail), when the lease ended by the
// clock (the process was frozen or starved past it), or a fence found it
// ended. The next renewal joins again under a new name.
func (in *Instance) checkExpiry() {
	if in.solo {
		return
	}
	in.mu.Lock()
	if !in.expired() {
		in.mu.Unlock()
		return
	}
	in.dropLocked()
	in.mu.Unlock()
	in.release("the lease ended before it was renewed (the process was stopped or starved)")
}

// watchPresence shows this instance's presence and reads the others':
// when one seen present is no longer (its process died: the XMPP server
// freed its connections' slots at once), the components take the slots
// (adoptSlots) without waiting for its lease to end. Its users wait for
// that: a presence lost is no proof of death.
func (in *Instance) watchPresence(ctx context.Context) {
	if err := in.st.ShowPresence(ctx); err != nil && ctx.Err() == nil {
		in.log.Warn("cannot show the instance's presence to the others", "err", err)
	}
	ps, err := in.st.Presences(ctx)
	if err != nil {
		return // the renewal reports a store that does not answer
	}
	in.mu.Lock()
	prev := in.present
	in.present = map[string]bool{}
	gone := 0
	for id, present := range ps {
		if present {
			in.present[id] = true
		} else if prev[id] {
			gone++
		}
	}
	in.mu.Unlock()
	if gone == 0 {
		return
	}
	in.log.Info("the process of another instance is gone: looking for the balancing slots it left", "instances", gone)
	for _, c := range in.components() {
		go c.adoptSlots(c.ctx())
	}
}

// renew renews the lease, lets go of the users asked for and adopts the
// users and stanzas of instances gone. When the lease cannot be renewed
// before it may end, the instance lets go of every user rather than
// risk a second holder; when it ended already, before anything else.
func (in *Instance) renew(ctx context.Context) {
	in.checkExpiry()
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, in.renewEvery/2)
	defer cancel()
	e, rejoined, err := in.renewLease(rctx)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		left := in.left()
		in.mu.Lock()
		lost := in.lost
		in.mu.Unlock()
		in.log.Error("cannot renew the instance's lease", "err", err, "lease_left", left.Round(time.Millisecond))
		if !lost && left < in.renewEvery+in.renewEvery/2 {
			in.letGo("the lease cannot be renewed before it ends")
		}
		return
	}
	in.mu.Lock()
	switch {
	case in.epoch.Load() != e:
		// The instance let go of its users while the renewal ran (the
		// watch found the lease ended): it stays without them, and the
		// next renewal joins again under a new name.
		in.mu.Unlock()
		return
	case !rejoined && in.expired():
		// The lease ended by the clock while it was renewed (the process
		// was frozen, the wall clock stepped), or a fence found it ended:
		// the fences taken under it fail for good, so the users go.
		in.dropLocked()
		in.mu.Unlock()
		in.release("the lease ended while it was renewed")
		return
	}
	if rejoined {
		in.tripped.Store(0) // by fences taken while the instance held nobody
	}
	in.setValid(start)
	in.lost = false
	in.mu.Unlock()
	in.sweep(ctx, in.components()...)
	lctx, cancel := context.WithTimeout(ctx, in.renewEvery/2)
	live, err := in.st.LiveInstances(lctx)
	cancel()
	in.watchSlots(ctx, in.st.Instance(), live, err)
}

// watchSlots compares the live instances (other than me) with those of
// the last renewal: when one is gone, its connections' balancing slots
// may be empty, and the components try to take them (adoptSlots), as at
// the first renewal (slots no instance took); when some joined, they hand
// back one each (handBack). When the store could not say (err), the
// comparison waits for the next renewal.
func (in *Instance) watchSlots(ctx context.Context, me string, live []string, err error) {
	if err != nil {
		if ctx.Err() == nil {
			in.log.Warn("cannot read the live instances; free balancing slots are looked for at the next renewal", "err", err)
		}
		return
	}
	now := map[string]bool{}
	for _, id := range live {
		if id != me {
			now[id] = true
		}
	}
	in.mu.Lock()
	prev := in.live
	in.live = now
	in.mu.Unlock()
	gone, joined := 0, 0
	if prev == nil {
		gone = 1 // the first look: slots nobody took (more slots than instances)
	}
	for id := range prev {
		if !now[id] {
			gone++
		}
	}
	for id := range now {
		if !prev[id] {
			joined++
		}
	}
	for _, c := range in.components() {
		switch {
		case gone > 0:
			go c.adoptSlots(c.ctx())
		case joined > 0:
			for i := 0; i < joined && c.handBack(); i++ {
			}
		}
	}
}

// sweep removes the rows of the instances gone, and has comps take up
// what those held and let go of what others ask for.
func (in *Instance) sweep(ctx context.Context, comps ...*Component) {
	if in.solo {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, in.renewEvery/2)
	defer cancel()
	if _, err := in.st.ReapInstances(rctx); err != nil {
		in.log.Warn("cannot remove the instances gone", "err", err)
	}
	for _, c := range comps {
		mctx, cancel := context.WithTimeout(ctx, in.renewEvery/2)
		c.maintain(mctx)
		cancel()
	}
}

// renewLease renews the lease, or joins again under a new name when the
// lease ended meanwhile (the instance then lets go of its users first:
// others may have taken them) or when the instance let go of them. It
// returns the epoch it renewed under (the renewal counts only if the
// instance did not let go since) and whether it joined again.
func (in *Instance) renewLease(ctx context.Context) (epoch uint64, rejoined bool, err error) {
	in.mu.Lock()
	lost, e := in.lost, in.epoch.Load()
	in.mu.Unlock()
	if !lost {
		ok, err := in.st.RenewInstance(ctx, in.lease)
		if err != nil || ok {
			return e, false, err
		}
		in.letGo("the lease ended before it was renewed")
		e = in.epoch.Load()
	}
	old := in.st.Instance()
	if err := in.st.RejoinInstances(ctx, in.lease); err != nil {
		return e, true, err
	}
	in.log.Info("joined the instances again under a new name", "new", in.st.Instance(), "old", old)
	return e, true, nil
}

// letGo closes every user's foreign connections at once and refuses
// users' stanzas until the lease is renewed. The fences taken before
// fail from now on: what the bridges still write for those users is
// dropped, their connections closed without a word.
func (in *Instance) letGo(why string) {
	in.mu.Lock()
	in.dropLocked()
	in.mu.Unlock()
	in.release(why)
}

// dropLocked marks the instance as without its users and fails the
// fences taken before; mu is held.
func (in *Instance) dropLocked() {
	in.lost = true
	in.epoch.Add(1)
}

// release has the components forget every user and their bridges close
// the users' connections (letGo).
func (in *Instance) release(why string) {
	n := 0
	for _, c := range in.components() {
		n += c.releaseAll()
	}
	in.log.Error("let go of every user: "+why, "users", n)
}

// WritePrometheus writes the instance's gauges: its name, what it holds
// and its queues (each read from the store with ctx).
func (in *Instance) WritePrometheus(ctx context.Context, w io.Writer) {
	name := ""
	if in.st != nil {
		name = in.st.Instance()
	}
	leased := 0
	if in.leased() {
		leased = 1
	}
	fmt.Fprintf(w, "# HELP passerelle_instance_leased 1 while the instance holds a valid lease in the database (always 1 on SQLite)\n# TYPE passerelle_instance_leased gauge\n")
	fmt.Fprintf(w, "passerelle_instance_leased{instance=%q} %d\n", name, leased)
	comps := in.components()
	sort.Slice(comps, func(i, j int) bool { return comps[i].opts.Domain < comps[j].opts.Domain })
	type gauge struct {
		name, help string
		get        func(c *Component) (int, error)
	}
	for _, g := range []gauge{
		{"passerelle_slots_held", "connections of this instance holding one of the XMPP server's balancing slots for the domain (0: it receives nothing)", func(c *Component) (int, error) { return c.slotsHeld(), nil }},
		{"passerelle_users_held", "users whose foreign connections (IRC, mailbox watchers) this instance holds", func(c *Component) (int, error) { return c.heldCount(), nil }},
		{"passerelle_outbox_queued", "stanzas queued for the XMPP server that this instance sends", func(c *Component) (int, error) { return c.store.CountOwnStanzas(ctx, c.opts.Domain) }},
		{"passerelle_jobs_queued", "queued deliveries to the foreign network (mail, texts), all instances'", func(c *Component) (int, error) { return c.store.CountJobs(ctx, c.opts.Domain) }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", g.name, g.help, g.name)
		for _, c := range comps {
			v, err := g.get(c)
			if err != nil {
				continue // left out: the store did not answer
			}
			fmt.Fprintf(w, "%s{domain=%q,instance=%q} %d\n", g.name, c.opts.Domain, name, v)
		}
	}
	if in.solo || in.st == nil {
		return
	}
	fmt.Fprintf(w, "# HELP passerelle_user_leases leases on users this instance holds in the database\n# TYPE passerelle_user_leases gauge\n")
	for _, c := range comps {
		if n, err := in.st.CountUserLeases(ctx, c.opts.Domain); err == nil {
			fmt.Fprintf(w, "passerelle_user_leases{domain=%q,instance=%q} %d\n", c.opts.Domain, name, n)
		}
	}
	if live, err := in.st.LiveInstances(ctx); err == nil {
		fmt.Fprintf(w, "# HELP passerelle_instances_live instances sharing the database with a row there\n# TYPE passerelle_instances_live gauge\n")
		fmt.Fprintf(w, "passerelle_instances_live{instance=%q} %d\n", name, len(live))
	}
}

// Own implements bridges.Host.
func (c *Component) Own(ctx context.Context, users []string) ([]string, error) {
	if c.inst.solo {
		c.addHeld(users...)
		return users, nil
	}
	if !c.inst.leased() {
		return nil, errNoLease
	}
	got, err := c.store.ClaimUsers(ctx, c.opts.Domain, users)
	c.addHeld(got...)
	if err != nil {
		return got, err
	}
	if len(got) < len(users) {
		c.log.Info("users held by other instances are left to them", "users", len(users)-len(got))
	}
	return got, nil
}

func (c *Component) addHeld(users ...string) {
	c.mu.Lock()
	for _, u := range users {
		c.held[u] = true
	}
	c.mu.Unlock()
}

func (c *Component) heldCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held)
}

// hold makes this instance the holder of user before its stanza is
// handed to the bridge. It runs on the user's goroutine. When another
// live instance holds the user (the server now routes the user's
// stanzas here), it asks for the user and waits until the holder lets go
// (at its next renewal) or dies; the stanzas behind wait with it.
func (c *Component) hold(ctx context.Context, user string) error {
	if c.owner == nil {
		return nil
	}
	c.mu.Lock()
	ok := c.held[user]
	c.mu.Unlock()
	if ok {
		if !c.inst.leased() {
			// The lease ended by the clock: the next look lets go.
			return errNoLease
		}
		return nil
	}
	if c.inst.solo {
		c.addHeld(user)
		return nil
	}
	deadline := time.Now().Add(c.inst.takeover)
	asked := false
	for {
		if !c.inst.leased() {
			return errNoLease
		}
		got, err := c.store.ClaimUser(ctx, c.opts.Domain, user)
		if err != nil {
			return err
		}
		if got {
			c.addHeld(user)
			if asked {
				c.log.Info("took a user over from another instance", "user", user)
			}
			c.acquired([]string{user})
			return nil
		}
		if !asked {
			asked = true
			c.log.Info("the user's stanzas reach this instance: asked its holder to let go", "user", user)
		}
		if time.Now().After(deadline) {
			return errHeld
		}
		// The holder may be dead: its row goes once its lease ended.
		if _, err := c.store.ReapInstances(ctx); err != nil {
			return err
		}
		if !pause(ctx, nil, claimPoll) {
			return ctx.Err()
		}
	}
}

// acquired has the bridge start the work of users on a goroutine of its
// own (it may wait for the users' goroutines); Run waits for it.
func (c *Component) acquired(users []string) {
	c.acquiring.Go(func() { c.owner.Acquired(c.ctx(), users) })
}

// unheld is the refusal of a stanza of a user this instance could not
// hold.
func unheld(err error) *stanza.Error {
	e := stanza.Errorf("internal-server-error", "The gateway cannot reach its database; try again later.")
	if errors.Is(err, errHeld) {
		e = stanza.Errorf("resource-constraint", "The gateway is moving your connections between its instances; try again in a minute.")
	}
	e.Type = "wait"
	return e
}

// maintain runs at each renewal of the lease: the users other instances
// asked for are let go, and the users and queued stanzas of instances
// gone are taken up.
func (c *Component) maintain(ctx context.Context) {
	select {
	case <-c.ready:
	default:
		return // the bridge is not set up yet: its start claims its users
	}
	if c.owner != nil {
		wanted, err := c.store.WantedUsers(ctx, c.opts.Domain)
		if err != nil {
			c.log.Warn("cannot read the users other instances ask for", "err", err)
		}
		for _, u := range wanted {
			c.handOver(u)
		}
		users, err := c.store.AdoptUsers(ctx, c.opts.Domain)
		if err != nil {
			c.log.Warn("cannot take up the users of instances gone", "err", err)
		}
		if len(users) > 0 {
			c.addHeld(users...)
			c.log.Info("took up users of instances gone or handed over", "users", len(users))
			c.acquired(users)
		}
	}
	n, err := c.store.AdoptStanzas(ctx, c.opts.Domain)
	if err != nil {
		c.log.Warn("cannot take up the queued stanzas of instances gone", "err", err)
	}
	if n > 0 {
		c.log.Info("took up the queued stanzas of instances gone", "stanzas", n)
		c.Queued()
	}
}

// handOver lets go of user for the instance that asked: on the user's
// goroutine, after the stanzas queued before, the bridge closes the
// user's connections, then the lease goes to the asker.
func (c *Component) handOver(user string) {
	c.postWait(user, func(ctx context.Context) {
		c.mu.Lock()
		delete(c.held, user)
		c.mu.Unlock()
		c.owner.Released(ctx, user)
		rctx, cancel := bridges.RecordContext(ctx)
		defer cancel()
		if err := c.store.ReleaseUser(rctx, c.opts.Domain, user); err != nil {
			// The asker takes the user when this instance's lease ends.
			c.log.Error("cannot hand a user over to the instance that asked", "user", user, "err", err)
			return
		}
		c.log.Info("handed a user over to the instance that asked", "user", user)
	})
}

// releaseAll forgets every user held at once (the gate refuses them from
// now on) and has the bridge close their connections on their
// goroutines. It returns how many there were.
func (c *Component) releaseAll() int {
	c.mu.Lock()
	users := make([]string, 0, len(c.held))
	for u := range c.held {
		users = append(users, u)
	}
	c.held = map[string]bool{}
	c.mu.Unlock()
	if c.owner == nil {
		return len(users)
	}
	for _, u := range users {
		c.postWait(u, func(ctx context.Context) { c.owner.Released(ctx, u) })
	}
	return len(users)
}

// postWait is Post that waits while the user's queue is full, until the
// component stops.
func (c *Component) postWait(user string, fn func(context.Context)) {
	for c.Post(user, fn) != nil {
		select {
		case <-c.ctx().Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
