// Package component runs one XEP-0114 external component per bridge: the
// stream to the XMPP server (with reconnection and a persistent outbox),
// service discovery, in-band registration, the gateway prompt, ping, version
// and ad-hoc commands. Everything foreign is delegated to a bridges.Bridge.
//
// Each local user's stanzas are handled on a goroutine of that user's, so a
// slow user never blocks the stream or anyone else.
package component

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// Options configures a Component.
type Options struct {
	Domain string // component domain, e.g. irc.example.org
	// DomainVariable names the setting that gave Domain, for the message
	// when the server does not host it (e.g. PASSERELLE_IRC_DOMAIN).
	DomainVariable string
	Addr           string // the server's component port
	Secret         string
	Bridge         bridges.Bridge
	Store          *store.Store
	Sealer         *store.Sealer
	// IsAdmin and Allowed decide rights by bare JID.
	IsAdmin       func(string) bool
	Allowed       func(string) bool
	RetryMaxDelay time.Duration
	Version       string
	Log           *slog.Logger
	Metrics       *Metrics
	// Group, when set, holds the process's other components: a stanza for
	// a sibling's domain that arrives on this stream (ejabberd routes all
	// the domains of one listener over any of its connections) goes there.
	Group *Group
	// Instance is the process among the instances sharing the store
	// (nil: alone with it).
	Instance *Instance
}

// Group is the set of components running in one process.
type Group struct {
	mu sync.Mutex
	m  map[string]*Component
}

// NewGroup returns an empty group.
func NewGroup() *Group { return &Group{m: map[string]*Component{}} }

func (g *Group) add(c *Component) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.m[c.opts.Domain] = c
}

// anyConnected returns a live session of any component of the group.
func (g *Group) anyConnected() *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.m {
		c.mu.Lock()
		s := c.cur
		c.mu.Unlock()
		if s != nil {
			return s
		}
	}
	return nil
}

func (g *Group) get(domain string) *Component {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[strings.ToLower(domain)]
}

// Component is one bridge's XMPP component.
type Component struct {
	opts   Options
	log    *slog.Logger
	bridge bridges.Bridge
	store  *store.Store
	m      *DomainMetrics

	runCtx     context.Context
	ready      chan struct{} // closed when the bridge is set up
	readyOnce  sync.Once
	started    time.Time
	outboxWake chan struct{}
	outbox     outboxState // owned by the running pump
	flush      flushState  // see Flushed
	// idleProbe and probeTimeout detect a server that went silent.
	idleProbe, probeTimeout time.Duration
	// confirmWait, routeProbeWait, handBackCheck and standbyBackoff
	// are outboxConfirmWait, routeProbeWait, handBackCheck and
	// standbyBackoff: tests shorten them.
	confirmWait, routeProbeWait, handBackCheck time.Duration
	standbyBackoff                             bridges.Backoff
	// sentThrough is the store's StanzasSentThrough, unless a test holds
	// or refuses the outbox's removals.
	sentThrough func(ctx context.Context, domain string, last int64) error
	// pendingAfter is the store's PendingStanzasAfter, unless a test
	// watches the pump's reads.
	pendingAfter func(ctx context.Context, domain string, after int64, limit int) ([]store.OutboxItem, error)
	// sharedRoutes is set once the server delivered this domain's stanzas
	// over a sibling's stream (ejabberd): it then accepts our stanzas on
	// any of the group's streams, which Send uses while ours is down.
	sharedRoutes atomic.Bool
	// commandTimeout ends an ad-hoc command session left alone that long;
	// commandsOpened numbers the sessions.
	commandTimeout time.Duration
	commandsOpened atomic.Uint64

	mu      sync.Mutex
	cur     *session // the live connection, or nil
	users   map[string]*userSession
	pending map[string]chan *xmlel.Element // outgoing IQ id -> answer
	// grants are the privileges (XEP-0356) each server advertised last, by
	// server domain. They are kept across reconnections (ejabberd may send
	// a domain's advertisement over a sibling's stream before this one's is
	// served); a server that no longer grants one refuses its use, which
	// revokes it (revokeRoster).
	grants map[string]Grant
	// known is closed once the grants are known (PrivilegesKnown).
	known     chan struct{}
	knownOnce sync.Once
	// grantLastResort is grantLastResort (tests shorten it).
	grantLastResort time.Duration
	// online holds the available resources of each user, by bare JID,
	// as the server told the domain on this stream (userPresence); kept
	// only for a bridge that implements bridges.UserPresence.
	online map[string]map[string]struct{}
	// probes are the route probes under way, by nonce (route.go); extras
	// the connections beside cur that hold a slot of the server's
	// balancing (slots.go).
	probes   map[string]chan arrival
	extras   []*session
	adopting atomic.Bool  // adoptSlots under way
	refused  atomic.Int64 // other connections refused in a row
	// cameBackN counts the stanzas from the gateway's own addresses
	// dropped (cameBack).
	cameBackN atomic.Int64
	// unbalanced: every candidate of the last probe came back to this
	// component (route.go): there is no other slot to take.
	unbalanced atomic.Bool
	links      sync.WaitGroup // the extra connections' goroutines
	stopping   bool           // Run waits for links: no new one
	// held are the users whose foreign connections this instance holds,
	// for a bridge that has them (owner; see owner.go).
	held      map[string]bool
	inst      *Instance
	owner     bridges.Owner
	acquiring sync.WaitGroup // the bridge's Acquired calls under way
}

// session is one connected stream with its writer queue.
type session struct {
	c     *conn
	queue chan []byte
	done  chan struct{} // closed when the session ends
	// quit, closed once (quitOnce), asks an extra connection to hand its
	// slot back (slots.go).
	quit     chan struct{}
	quitOnce sync.Once
	// localpart is a route localpart whose stanzas come back on this
	// connection ("": none found, a standby); under Component.mu.
	localpart string
	held      bool // a probe came back on it once (under Component.mu)
	// granted is closed when the server's privilege advertisement
	// (XEP-0356) arrived on the stream.
	granted     chan struct{}
	grantedOnce sync.Once
}

const (
	writeQueueSize = 1024
	userQueueSize  = 256
	keepalive      = 30 * time.Second
	idleProbe      = 60 * time.Second
	probeTimeout   = 30 * time.Second
)

// ErrBusy is returned when a user's queue is full.
var ErrBusy = errors.New("too many stanzas waiting for this user")

// New returns a component; call Run to connect it.
func New(opts Options) *Component {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Sealer == nil {
		opts.Sealer = &store.Sealer{}
	}
	if opts.IsAdmin == nil {
		opts.IsAdmin = func(string) bool { return false }
	}
	if opts.Allowed == nil {
		parent := opts.Domain
		if i := strings.IndexByte(parent, '.'); i >= 0 {
			parent = parent[i+1:]
		}
		opts.Allowed = func(j string) bool { return stanza.Domain(j) == parent }
	}
	if opts.DomainVariable == "" {
		opts.DomainVariable = "the component domain"
	}
	if opts.RetryMaxDelay <= 0 {
		opts.RetryMaxDelay = 10 * time.Minute
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	c := &Component{
		opts:       opts,
		log:        opts.Log.With("component", opts.Domain),
		bridge:     opts.Bridge,
		store:      opts.Store,
		m:          opts.Metrics.For(opts.Domain),
		outboxWake: make(chan struct{}, 1),
		ready:      make(chan struct{}),
		idleProbe:  idleProbe, probeTimeout: probeTimeout,
		confirmWait: outboxConfirmWait, routeProbeWait: routeProbeWait, handBackCheck: handBackCheck, standbyBackoff: standbyBackoff,
		probes:          map[string]chan arrival{},
		commandTimeout:  commandTimeout,
		users:           map[string]*userSession{},
		pending:         map[string]chan *xmlel.Element{},
		known:           make(chan struct{}),
		grantLastResort: grantLastResort,
	}
	if opts.Group != nil {
		opts.Group.add(c)
	}
	c.held = map[string]bool{}
	c.owner, _ = opts.Bridge.(bridges.Owner)
	c.inst = opts.Instance
	if c.inst == nil {
		c.inst = soloInstance()
	}
	c.inst.add(c)
	return c
}

// Run runs the bridge (its Run) and, once it is ready, connects to the
// server and serves until ctx is cancelled (then it sends unavailable
// presence to registered users, closes the stream and returns nil) or a
// permanent failure such as a refused secret occurs. It returns once the
// bridge's Run has returned.
func (c *Component) Run(ctx context.Context) error {
	c.runCtx = ctx
	c.started = time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait, err := bridges.Start(ctx, c.bridge, c, c.ready)
	if err != nil {
		return &PermanentError{fmt.Errorf("failed to start the %s bridge: %w", c.bridge.Kind(), err)}
	}
	// What the instances gone held (their queued stanzas, users of
	// theirs this bridge did not start) is taken up before the stream
	// opens, not at the next renewal.
	c.inst.sweep(ctx, c)
	c.inst.awaitListening(ctx, c.log)
	err = c.connect(ctx)
	cancel()
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.links.Wait()
	c.acquiring.Wait()
	if berr := wait(); berr != nil && err == nil {
		err = &PermanentError{fmt.Errorf("the %s bridge failed: %w", c.bridge.Kind(), berr)}
	}
	return err
}

// Ready implements bridges.Host.
func (c *Component) Ready() { c.readyOnce.Do(func() { close(c.ready) }) }

// connect keeps the component connected to the XMPP server until ctx
// ends (then it returns nil) or a permanent failure.
func (c *Component) connect(ctx context.Context) error {
	var delay time.Duration
	failures := 0 // connections failed or lost in a row
	for {
		if delay > 0 && !pause(ctx, nil, delay) {
			return nil
		}
		cn, err := dial(ctx, c.opts.Addr, c.opts.Domain, c.opts.DomainVariable, c.opts.Secret)
		if err != nil {
			var perm *PermanentError
			if errors.As(err, &perm) {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			delay = reconnectBackoff.Delay(failures)
			failures++
			c.log.Warn("cannot connect to the XMPP server; will retry", "addr", c.opts.Addr, "err", err, "retry_in", delay.Round(time.Millisecond))
			continue
		}
		c.log.Info("connected to the XMPP server", "addr", c.opts.Addr)
		err = c.serve(ctx, cn)
		if ctx.Err() != nil {
			return nil
		}
		delay, failures = reconnectBackoff.Delay(0), 1
		c.log.Warn("lost the XMPP server; reconnecting", "err", err, "retry_in", delay.Round(time.Millisecond))
	}
}

// reconnectBackoff is the wait before reconnecting to the XMPP server:
// from 500 ms to 10 s; the server is normally near, and every second away
// is traffic waiting.
var reconnectBackoff = bridges.Backoff{First: 500 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.25}

// serve runs one connection until it breaks or ctx ends.
func (c *Component) serve(ctx context.Context, cn *conn) error {
	s := newSession(cn)
	writerDone := make(chan error, 1)
	go func() { writerDone <- c.writer(s, s.done) }()

	c.mu.Lock()
	c.cur = s
	c.mu.Unlock()
	c.m.Connected.Store(1)
	// The outbox pump lives as long as the stream, and one at a time: the
	// next stream's pump starts after this one has returned.
	pumpCtx, endPump := context.WithCancel(ctx)
	pumpDone := make(chan struct{})
	defer func() {
		endPump()
		<-pumpDone
		c.mu.Lock()
		c.cur = nil
		c.mu.Unlock()
		c.forgetPresence()
		c.m.Connected.Store(0)
		cn.nc.Close()
	}()

	in, readErr := c.read(s)
	go func() {
		defer close(pumpDone)
		// The pump's confirmations come back by a route the probe
		// finds: it starts once the probe has answered.
		if c.probe(pumpCtx, s) == "" && pumpCtx.Err() == nil {
			c.standby()
		}
		go c.keepSlot(pumpCtx, s)
		c.pump(pumpCtx, s, s.done)
	}()
	go c.announce(ctx, "")
	go c.settleGrants(ctx, s)
	if h, ok := c.bridge.(bridges.Connected); ok {
		go h.Connected(ctx)
	}

	err := c.run(ctx, s, in, readErr, writerDone)
	if err == nil { // ctx ended
		c.announce(context.Background(), "unavailable")
		close(s.done)
		select {
		case <-writerDone:
		case <-time.After(5 * time.Second):
		}
		c.log.Info("closed the stream")
		return nil
	}
	close(s.done)
	return err
}

// run handles the stanzas of s (the stream or an extra connection) until
// it fails (the error), or ctx ends or s is asked to quit (nil). A silent
// server is probed; one that does not answer within probeTimeout is
// dropped (a half-open TCP connection never errors).
func (c *Component) run(ctx context.Context, s *session, in <-chan *xmlel.Element, readErr, writerDone <-chan error) error {
	probe := time.NewTicker(c.idleProbe)
	defer probe.Stop()
	lastIn := time.Now()
	dead := make(chan error, 1)
	for {
		select {
		case el := <-in:
			lastIn = time.Now()
			c.m.StanzasIn.Add(1)
			if !c.probeArrived(s, el) {
				c.dispatch(el)
			}
		case <-probe.C:
			if time.Since(lastIn) >= c.idleProbe {
				go c.checkAlive(ctx, s, dead)
			}
		case err := <-dead:
			return err
		case err := <-readErr:
			return err
		case err := <-writerDone:
			return fmt.Errorf("write failed: %w", err)
		case <-ctx.Done():
			return nil
		case <-s.quit:
			return nil
		}
	}
}

func newSession(cn *conn) *session {
	return &session{c: cn, queue: make(chan []byte, writeQueueSize), done: make(chan struct{}), quit: make(chan struct{}), granted: make(chan struct{})}
}

// read reads s's stanzas on a goroutine until the stream fails (the
// error) or s ends.
func (c *Component) read(s *session) (<-chan *xmlel.Element, <-chan error) {
	in := make(chan *xmlel.Element)
	readErr := make(chan error, 1)
	go func() {
		for {
			el, err := s.c.read()
			var over *xmlel.LimitError
			if errors.As(err, &over) {
				c.refuseOverLimit(over)
				continue
			}
			if err != nil {
				readErr <- err
				return
			}
			select {
			case in <- el:
			case <-s.done:
				return
			}
		}
	}()
	return in, readErr
}

// checkAlive sends on s a stanza the server routes back, and reports on
// dead when it does not come back within probeTimeout.
func (c *Component) checkAlive(ctx context.Context, s *session, dead chan<- error) {
	pctx, cancel := context.WithTimeout(ctx, c.probeTimeout)
	defer cancel()
	st, answer, forget, _ := c.selfCheck(s)
	defer forget()
	err := pctx.Err()
	select {
	case s.queue <- st.Bytes():
		select {
		case <-answer:
			return
		case <-s.done:
			return
		case <-pctx.Done():
			err = pctx.Err()
		}
	case <-s.done:
		return
	case <-pctx.Done():
	}
	if ctx.Err() == nil {
		select {
		case dead <- fmt.Errorf("the server did not answer a ping for %v: %w", c.probeTimeout, err):
		default:
		}
	}
}

// writer owns the connection's output: queued stanzas, the persistent
// outbox, keepalives. On stop it flushes the queue and ends the stream.
func (c *Component) writer(s *session, stop chan struct{}) error {
	t := time.NewTicker(keepalive)
	defer t.Stop()
	for {
		select {
		case b := <-s.queue:
			if err := s.c.writeRaw(b); err != nil {
				return err
			}
			c.m.StanzasOut.Add(1)
		case <-t.C:
			if err := s.c.writeRaw([]byte(" ")); err != nil {
				return err
			}
		case <-stop:
			for {
				select {
				case b := <-s.queue:
					if err := s.c.writeRaw(b); err != nil {
						return err
					}
				default:
					s.c.close()
					return nil
				}
			}
		}
	}
}

// announce sends presence of type typ from the domain to every registered
// user ("" available on connect, "unavailable" on shutdown).
func (c *Component) announce(ctx context.Context, typ string) {
	users, err := c.store.ListRegistrations(ctx, c.opts.Domain)
	if err != nil {
		c.log.Error("cannot list registered users", "err", err)
		return
	}
	for _, u := range users {
		if err := c.sendWait(ctx, c.presence(u, typ), 5*time.Second); err != nil {
			return
		}
	}
}

// Send implements bridges.Host: a transient stanza onto the live stream.
func (c *Component) Send(st *xmlel.Element) error { return c.sendWait(c.ctx(), st, time.Second) }

func (c *Component) sendWait(ctx context.Context, st *xmlel.Element, wait time.Duration) error {
	_, err := c.sendOn(ctx, st, wait)
	return err
}

// sendOn queues st on the live stream (a sibling's, when the server
// shares routes) and returns that stream.
func (c *Component) sendOn(ctx context.Context, st *xmlel.Element, wait time.Duration) (*session, error) {
	c.mu.Lock()
	s := c.cur
	c.mu.Unlock()
	if s == nil && c.sharedRoutes.Load() {
		s = c.opts.Group.anyConnected()
	}
	if s == nil {
		c.m.Dropped.Add(1)
		return nil, bridges.ErrDisconnected
	}
	b := st.Bytes()
	select {
	case s.queue <- b:
		return s, nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.queue <- b:
		return s, nil
	case <-t.C:
		c.m.Dropped.Add(1)
		return nil, errors.New("the XMPP stream's write queue is full")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// SendMessage implements bridges.Host: store in the outbox (several
// messages in one transaction), then send.
func (c *Component) SendMessage(ctx context.Context, sts ...*xmlel.Element) error {
	_, err := c.Deliver(ctx, "", nil, sts...)
	return err
}

// Deliver implements bridges.Host: store key, links and messages in one
// transaction, then send the messages.
func (c *Component) Deliver(ctx context.Context, key string, links []store.MessageID, sts ...*xmlel.Element) (bool, error) {
	raw := make([]string, len(sts))
	for i, st := range sts {
		if st.Attr("from") == "" {
			st.SetAttr("from", c.opts.Domain)
		}
		raw[i] = st.String()
	}
	ok, err := c.store.Deliver(ctx, c.opts.Domain, store.Delivery{Key: key, Links: links, Stanzas: raw})
	if err != nil || !ok {
		return ok, err
	}
	c.Queued()
	return true, nil
}

// Queued implements bridges.Host: the outbox is read again.
func (c *Component) Queued(...*xmlel.Element) {
	select {
	case c.outboxWake <- struct{}{}:
	default:
	}
}

// IQ implements bridges.Host. A request whose stream ends before the
// answer came fails at once with ErrDisconnected: the answer will not
// come on another stream.
func (c *Component) IQ(ctx context.Context, iq *xmlel.Element) (*xmlel.Element, error) {
	id := iq.Attr("id")
	if id == "" {
		id = c.newID()
		iq.SetAttr("id", id)
	}
	if iq.Attr("from") == "" {
		iq.SetAttr("from", c.opts.Domain)
	}
	ch, forget := c.awaitAnswer(id)
	defer forget()
	s, err := c.sendOn(c.ctx(), iq, time.Second)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-s.done:
		select {
		case r := <-ch: // answered just before the end
			return r, nil
		default:
		}
		return nil, fmt.Errorf("%w: the stream ended before the answer to %s came", bridges.ErrDisconnected, id)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// awaitAnswer registers id as a request of the component: the answer to it
// goes to the returned channel until forget is called.
func (c *Component) awaitAnswer(id string) (answer <-chan *xmlel.Element, forget func()) {
	ch := make(chan *xmlel.Element, 1)
	c.mu.Lock()
	c.pending[id] = ch
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}
}

// Domain implements bridges.Host.
func (c *Component) Domain() string { return c.opts.Domain }

// Store implements bridges.Host.
func (c *Component) Store() *store.Store { return c.store }

// Log implements bridges.Host.
func (c *Component) Log() *slog.Logger { return c.log }

// Allowed implements bridges.Host.
func (c *Component) Allowed(user string) bool { return c.opts.Allowed(user) }

// RetryMaxDelay implements bridges.Host.
func (c *Component) RetryMaxDelay() time.Duration { return c.opts.RetryMaxDelay }

// Connected reports whether the stream is up.
func (c *Component) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

func (c *Component) ctx() context.Context {
	if c.runCtx != nil {
		return c.runCtx
	}
	return context.Background()
}
