package component

// The server's balancing slots (ejabberd 23.01, domain_balancing with
// component_number N): N slots per domain, each held by one connection;
// a user's stanzas go to the slot of the hash of the user's bare JID. A
// slot whose connection ended stays empty (its stanzas are dropped) until
// a new connection takes it; a connection that finds no empty slot gets
// no stanzas, ever (a standby). So:
//
//   - a component with no connection holding a slot (its stream came up
//     when every slot was taken) opens another connection every few
//     seconds (standbyBackoff) until one takes a slot: that one receives,
//     the stream keeps sending;
//   - when an instance is gone (its row left the instances table: it
//     stopped, or its lease ended), the survivors each open connections
//     until one finds no slot (adoptSlots): the server gives each empty
//     slot to one connection, in a transaction, so no claim in the store
//     is needed, and a connection that found none is closed at once;
//   - when an instance joins, an instance holding such an extra
//     connection closes one (handBack), so that the newcomer, which is a
//     standby, takes the slot on its next try; handBackCheck later it
//     checks that someone did (adoptSlots again).
//
// Any instance may receive any user's stanzas: the users' leases
// (owner.go) make the one that receives them their holder.

import (
	"context"
	"time"

	"passerelle/bridges"
	"passerelle/component/xmlel"
)

// standbyBackoff is the wait between the tries of a component holding no
// slot: short, since it is also the gap during which a slot handed back
// stays empty.
var standbyBackoff = bridges.Backoff{First: 250 * time.Millisecond, Max: time.Second, Jitter: 0.2}

const (
	// handBackCheck is how long after handing a slot back an instance
	// looks whether it stayed empty: a standby tries every second or so.
	handBackCheck = 5 * time.Second
	// maxExtras caps the connections an instance opens per domain beside
	// its stream.
	maxExtras = 8
	// standbyWarnAfter is how many tries in a row of a component holding
	// no slot make a warning.
	standbyWarnAfter = 20
)

// standby logs that the stream holds no slot.
func (c *Component) standby() {
	c.log.Info("no stanza comes back on this connection: it holds none of the server's balancing slots (standby); it sends, and another connection will try for a slot")
}

// keepSlot, while s is the stream, opens another connection whenever no
// connection of the component holds a slot.
func (c *Component) keepSlot(ctx context.Context, s *session) {
	failures := 0
	delay := c.standbyBackoff.First
	for {
		if !pause(ctx, s.done, delay) {
			return
		}
		delay = c.standbyBackoff.Max
		if c.slotted() {
			failures = 0
			continue
		}
		// A stream that held a slot keeps it while it is up (the
		// server lost a probe): probe it again before anything else.
		c.mu.Lock()
		held := s.held
		c.mu.Unlock()
		if held && c.probe(ctx, s) != "" {
			failures = 0
			continue
		}
		if c.trial(ctx) {
			failures = 0
			continue
		}
		failures++
		if failures == standbyWarnAfter {
			c.log.Warn("every balancing slot of the server stays taken: this instance receives nothing for the domain (is component_number less than the number of instances?)", "tries", failures)
		}
		delay = c.standbyBackoff.Delay(failures)
	}
}

// trial opens another connection and keeps it when it holds a slot
// (reporting true); one that holds none is closed.
func (c *Component) trial(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	cn, err := dial(ctx, c.opts.Addr, c.opts.Domain, c.opts.DomainVariable, c.opts.Secret)
	if err != nil {
		if ctx.Err() == nil {
			// The first refusal of a run, then every standbyWarnAfter-th.
			if n := c.refused.Add(1); n%standbyWarnAfter == 1 {
				c.log.Warn("the XMPP server refused another connection", "err", err, "refused", n)
			}
		}
		return false
	}
	c.refused.Store(0)
	x := newSession(cn)
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		cn.nc.Close()
		return false
	}
	c.links.Add(1)
	c.mu.Unlock()
	in, readErr := c.read(x)
	writerDone := make(chan error, 1)
	go func() { writerDone <- c.writer(x, x.done) }()
	go func() {
		defer c.links.Done()
		c.serveExtra(ctx, x, in, readErr, writerDone)
	}()
	if c.probe(ctx, x) == "" {
		x.quitOnce.Do(func() { close(x.quit) })
		c.log.Debug("no free balancing slot for another connection")
		return false
	}
	c.mu.Lock()
	select {
	case <-x.done:
		c.mu.Unlock()
		return false
	default:
	}
	c.extras = append(c.extras, x)
	n := len(c.extras)
	c.mu.Unlock()
	c.log.Info("took a balancing slot of the server with another connection", "extra_connections", n)
	return true
}

// serveExtra runs an extra connection: its stanzas are handled as the
// stream's; it is probed when silent, and ends when it fails, when ctx
// ends, or when asked to hand its slot back (quit).
func (c *Component) serveExtra(ctx context.Context, x *session, in <-chan *xmlel.Element, readErr <-chan error, writerDone <-chan error) {
	err := c.run(ctx, x, in, readErr, writerDone)
	switch {
	case err != nil:
		close(x.done)
		c.dropExtra(x)
		if ctx.Err() == nil {
			c.log.Warn("lost an extra connection to the XMPP server", "err", err)
		}
	case ctx.Err() != nil:
		close(x.done)
		c.dropExtra(x)
	default: // asked to quit
		c.dropExtra(x)
		c.closeExtra(x, in, readErr)
	}
}

// closeExtra ends x's stream and handles what the server still routes to
// it until it closes its side (or 5 s).
func (c *Component) closeExtra(x *session, in <-chan *xmlel.Element, readErr <-chan error) {
	x.c.writeRaw([]byte("</stream:stream>"))
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	defer func() {
		close(x.done)
		x.c.nc.Close()
	}()
	for {
		select {
		case el := <-in:
			c.m.StanzasIn.Add(1)
			if !c.probeArrived(x, el) {
				c.dispatch(el)
			}
		case <-readErr:
			return
		case <-t.C:
			return
		}
	}
}

// dropExtra forgets x as an extra connection.
func (c *Component) dropExtra(x *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.extras {
		if e == x {
			c.extras = append(c.extras[:i], c.extras[i+1:]...)
			return
		}
	}
}

// adoptSlots opens connections until one finds no free slot: it takes
// the slots instances gone left empty.
func (c *Component) adoptSlots(ctx context.Context) {
	if !c.adopting.CompareAndSwap(false, true) {
		return
	}
	defer c.adopting.Store(false)
	if !c.Connected() || c.unbalanced.Load() {
		return
	}
	for i := 0; i < maxExtras; i++ {
		c.mu.Lock()
		n := len(c.extras)
		c.mu.Unlock()
		if n >= maxExtras || !c.trial(ctx) {
			return
		}
	}
}

// handBack closes one extra connection, so that an instance that joined
// takes its slot; it keeps the component's last connection holding one.
// It reports whether it closed one.
func (c *Component) handBack() bool {
	c.mu.Lock()
	n := len(c.extras)
	if n == 0 || (n == 1 && (c.cur == nil || c.cur.localpart == "")) {
		c.mu.Unlock()
		return false
	}
	x := c.extras[n-1]
	c.extras = c.extras[:n-1]
	c.mu.Unlock()
	c.log.Info("an instance joined: handing a balancing slot back (closing an extra connection)", "extra_connections", n-1)
	x.quitOnce.Do(func() { close(x.quit) })
	// A newcomer that did not need it (it found a free slot), or two
	// instances handing back for one newcomer, leave a slot empty: it is
	// taken again once a standby had the time for a few tries.
	time.AfterFunc(c.handBackCheck, func() { c.adoptSlots(c.ctx()) })
	return true
}
