package component

// Stanzas that come back to the connection that sent them, on any server.
//
// The outbox's confirmation and the idle probe need a stanza the server
// routes back to this component after everything written before it. With
// one connection per domain (Prosody, ejabberd without balancing) any
// stanza to the component's own domain does. ejabberd 23.01 with
// domain_balancing (type bare_source, component_number N) keeps N slots per
// domain and routes a stanza to slot hash(bare JID of its sender) mod N:
// a ping from the domain to itself, and its answer, reach the one
// connection holding the slot of the domain's hash. So the component sends
// these stanzas from <localpart>@<domain>, with a localpart found to hash
// to a slot one of its connections holds: at stream start a connection
// sends routeCandidates one-way stanzas (IQ results, which nobody answers)
// from route-0@… to route-N@…, and the first to come back on it names its
// slot. A connection none comes back to holds no slot (ejabberd gives a
// connection beyond N no route, and does not promote it later): a standby,
// which still sends but gets nothing.
//
// Another instance's probes and confirmations reach this one when their
// localpart hashes to its slot: they are results with ids it does not
// know, and are dropped without a word (a probe's still shows that its
// localpart comes back on that connection). A probe that arrives over a
// sibling component's stream (ejabberd's global_routes: every connection
// routes every domain of the listener) counts as come back.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

const (
	// routePrefix starts the localparts the component sends its
	// self-routed stanzas from; routeIDPrefix the ids of its probes.
	routePrefix   = "route-"
	routeIDPrefix = "passerelle-route-"
	// routeCandidates is how many localparts a probe tries: with N slots
	// the chance that none hashes to a given slot is (1-1/N)^64 (under
	// 0.2 % for N = 10).
	routeCandidates = 64
	// routeProbeWait is how long a probe waits for a candidate to come
	// back before it takes the connection for a standby.
	routeProbeWait = time.Second
)

// arrival is a probe's stanza that came back, and the connection it came
// back on.
type arrival struct {
	s         *session
	localpart string
}

// isRouted reports whether st was sent by a component of this domain to
// itself from one of the route localparts.
func (c *Component) isRouted(st *xmlel.Element) bool {
	from := st.Attr("from")
	return strings.EqualFold(stanza.Domain(from), c.opts.Domain) && strings.HasPrefix(stanza.Local(from), routePrefix) &&
		strings.EqualFold(st.Attr("to"), c.opts.Domain)
}

// routedStanza is the one-way stanza from localpart@domain to the domain.
func (c *Component) routedStanza(localpart, id string) *xmlel.Element {
	return stanza.IQ(localpart+"@"+c.opts.Domain, c.opts.Domain, "result", id, nil)
}

// probeArrived takes a probe's stanza that came back on s. It reports
// whether st was one (of this component's, or another instance's: those
// are dropped).
func (c *Component) probeArrived(s *session, st *xmlel.Element) bool {
	if to := stanza.Domain(st.Attr("to")); !strings.EqualFold(to, c.opts.Domain) {
		// A server that makes each connection a route for all the
		// domains of its listener (ejabberd's global_routes) delivers a
		// sibling's stanzas here: its probe came back to the process, as
		// it would have on its own stream.
		o := c.opts.Group.get(to)
		if o == nil {
			return false
		}
		o.mu.Lock()
		cur := o.cur
		o.mu.Unlock()
		if cur == nil {
			return false
		}
		return o.probeArrived(cur, st)
	}
	id := st.Attr("id")
	if st.Local != "iq" || !strings.HasPrefix(id, routeIDPrefix) || !c.isRouted(st) {
		return false
	}
	nonce, _, _ := strings.Cut(strings.TrimPrefix(id, routeIDPrefix), "-")
	lp := stanza.Local(st.Attr("from"))
	c.mu.Lock()
	ch := c.probes[nonce]
	if s.localpart == "" {
		// A probe that came back late (its wait was over), or another
		// instance's: the server routes this localpart's stanzas to s
		// all the same.
		s.localpart, s.held = lp, true
	}
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- arrival{s: s, localpart: lp}:
		default:
		}
	}
	return true
}

// probe finds a localpart whose stanzas the server routes back to s:
// it sends the candidates on s and returns the first that comes back on
// s within routeProbeWait ("" when none does: s holds no slot). The
// answer is recorded on s; a probe's stanza that comes back later (or
// another instance's) records its localpart on s then.
func (c *Component) probe(ctx context.Context, s *session) string {
	var b [6]byte
	rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	ch := make(chan arrival, routeCandidates)
	c.mu.Lock()
	c.probes[nonce] = ch
	s.localpart = "" // the route is in question
	// Whether all candidates come back says something of the server
	// only when the stream is the component's one connection.
	judge := s == c.cur && len(c.extras) == 0 && !c.adopting.Load()
	c.mu.Unlock()
	t := time.NewTimer(c.routeProbeWait)
	n := 0 // the candidates come back to the component
	counting := false
	defer func() {
		if counting && judge {
			go c.countProbe(nonce, ch, t, n)
			return
		}
		t.Stop()
		c.mu.Lock()
		delete(c.probes, nonce)
		c.mu.Unlock()
	}()
	for i := 0; i < routeCandidates; i++ {
		st := c.routedStanza(routePrefix+strconv.Itoa(i), routeIDPrefix+nonce+"-"+strconv.Itoa(i))
		select {
		case s.queue <- st.Bytes():
		case <-s.done:
			return ""
		case <-ctx.Done():
			return ""
		}
	}
	for {
		select {
		case a := <-ch:
			n++
			if a.s == s {
				c.mu.Lock()
				s.localpart, s.held = a.localpart, true
				c.mu.Unlock()
				counting = true
				return a.localpart
			}
		case <-t.C:
			if judge {
				c.unbalanced.Store(false)
			}
			// Nothing came back from this probe; another instance's
			// probe may have shown a route meanwhile.
			c.mu.Lock()
			defer c.mu.Unlock()
			return s.localpart
		case <-s.done:
			return ""
		case <-ctx.Done():
			return ""
		}
	}
}

// countProbe counts the rest of a probe's candidates that come back to
// the component's one connection, until the probe's wait ends, and
// records whether all of them did: then the server does not balance this
// domain over several connections (Prosody, ejabberd without
// domain_balancing, or with one slot), and there is no slot to take
// (adoptSlots).
func (c *Component) countProbe(nonce string, ch <-chan arrival, t *time.Timer, n int) {
	defer func() {
		t.Stop()
		c.mu.Lock()
		delete(c.probes, nonce)
		c.mu.Unlock()
		c.unbalanced.Store(n == routeCandidates)
	}()
	for n < routeCandidates {
		select {
		case <-ch:
			n++
		case <-t.C:
			return
		}
	}
}

// routeLocal returns a localpart whose stanzas come back to one of the
// component's connections: the main stream's, else an extra
// connection's ("" when none holds a slot).
func (c *Component) routeLocal() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && c.cur.localpart != "" {
		return c.cur.localpart
	}
	for _, x := range c.extras {
		if x.localpart != "" {
			return x.localpart
		}
	}
	return ""
}

// slotsHeld returns how many of the component's connections hold a slot.
func (c *Component) slotsHeld() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	if c.cur != nil && c.cur.localpart != "" {
		n++
	}
	for _, x := range c.extras {
		if x.localpart != "" {
			n++
		}
	}
	return n
}

// slotted reports whether one of the component's connections holds a slot.
func (c *Component) slotted() bool { return c.routeLocal() != "" }

// selfCheck returns the stanza to send on s that the server routes back
// to this component after what s wrote before it, and the channel its
// arrival goes to: a one-way stanza from a route localpart when one is
// known (s's own first), else a ping from the domain to itself (whose
// answer a balancing server may route to another instance, which passes
// it on through a shared store: relay.go). routed tells which.
func (c *Component) selfCheck(s *session) (st *xmlel.Element, answer <-chan *xmlel.Element, forget func(), routed bool) {
	id := c.newID()
	c.mu.Lock()
	lp := s.localpart
	c.mu.Unlock()
	if lp == "" {
		lp = c.routeLocal()
	}
	if lp != "" {
		st = c.routedStanza(lp, id)
	} else {
		st = stanza.IQ(c.opts.Domain, c.opts.Domain, "get", id, xmlel.New(stanza.NSPing, "ping"))
	}
	answer, forget = c.awaitAnswer(id)
	return st, answer, forget, lp != ""
}
