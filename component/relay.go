package component

// Answers that reach another instance (instances sharing a PostgreSQL
// database behind one ejabberd, see owner.go and slots.go).
//
// ejabberd balances a component domain's connections by the bare JID of
// a stanza's sender, so the answer to an IQ an instance sent goes to the
// instance holding the slot of the answering JID: the user's server
// (localhost, answering a privileged roster get or set), a user's client
// or server (disco, vCard, version), the domain itself (a ping). That
// instance knows nothing of the request, whose sender would wait in vain.
// So on a shared store the ids of an instance's requests carry its
// relay name ("pr<name>-<random>"), and an instance that receives an
// answer (a result or an error) to an id of another name, not its own,
// passes it to that instance through the database (store.Relay): that
// instance listens under its name (store.Listen) and hands the answer to
// the request waiting for it, as if its own stream had brought it. An
// answer whose request has ended (it timed out, or its instance is gone)
// is dropped, as on one instance.
//
// The server's privilege advertisement (XEP-0356), which ejabberd sends
// from its domain as each connection opens, goes the same way to the one
// instance holding the slot of the server's domain: the others would never
// learn what the server grants. The instance that receives one passes it
// on to all the others (store.RelayAll), which take it as their own.
//
// The rest of what ejabberd routes by its sender needs nothing of this:
// a user's own stanzas all go to one instance, which takes the user over
// (owner.go); the server's requests to the domain (pings, disco) are
// answered by whichever instance gets them; probes and confirmations come
// from route localparts (route.go).
//
// On SQLite (one process) ids stay as they were, and nothing is relayed.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

const (
	// relayIDPrefix starts the ids of an instance's requests on a shared
	// store: the prefix, its relay name, "-", a random id.
	relayIDPrefix = "pr"
	// relayNameLen is the length of a relay name (hex digits).
	relayNameLen = 8
	// relayKey is the key of the queue (Post) that passes answers on: no
	// JID has a space.
	relayKey = " relay"
	// relayWait bounds the write of an answer passed on: the request
	// waits 10 s at most for it.
	relayWait = 5 * time.Second
	// listenWait is how long a component waits for the instance's
	// listener before it connects.
	listenWait = 5 * time.Second
)

// relayBackoff is the wait before listening again when the connection
// listening for relayed answers failed.
var relayBackoff = bridges.Backoff{First: 250 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}

// newRelayName names an instance's listener: random, for the life of the
// process (it stays when the instance joins again under a new name).
func newRelayName() string {
	var b [relayNameLen / 2]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newID returns the id of a request of the component: on a shared store,
// one that names this instance's listener.
func (c *Component) newID() string {
	if n := c.inst.relayName; n != "" {
		return relayIDPrefix + n + "-" + stanza.NewID()
	}
	return stanza.NewID()
}

// relayTarget returns the listener of the instance whose request id
// answers, when it is another instance's ("" otherwise).
func (c *Component) relayTarget(id string) string {
	me := c.inst.relayName
	if me == "" || len(id) <= len(relayIDPrefix)+relayNameLen || !strings.HasPrefix(id, relayIDPrefix) ||
		id[len(relayIDPrefix)+relayNameLen] != '-' {
		return ""
	}
	name := id[len(relayIDPrefix) : len(relayIDPrefix)+relayNameLen]
	if name == me || strings.IndexFunc(name, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') }) >= 0 {
		return ""
	}
	return name
}

// mayAnswer reports whether from is a JID the gateway's requests go to,
// whose answer another instance may wait for: one of the gateway's
// domains (a ping to itself), the XMPP server and its services (the
// parent of the component's domain and the domains under it), an allowed
// user (any of its resources) or an allowed domain (a user's server). Any other JID can answer nothing the gateway asked; passing on
// what it sends would let anybody make the gateway write to the
// database and notify the instances.
func (c *Component) mayAnswer(from string) bool {
	d := strings.ToLower(stanza.Domain(from))
	if d == "" {
		return false
	}
	if stanza.Local(from) == "" {
		if c.ownAddress(from) {
			return true
		}
		if _, server, ok := strings.Cut(strings.ToLower(c.opts.Domain), "."); ok && (d == server || strings.HasSuffix(d, "."+server)) {
			return true
		}
	}
	return c.opts.Allowed(stanza.Bare(from))
}

// relay passes st, an answer to a request of the instance listening as
// to, to that instance, on a queue of its own (the reader never waits
// for the database). A failure drops the answer: its request times out,
// as it did before answers were passed on.
func (c *Component) relay(st *xmlel.Element, to string) {
	err := c.Post(relayKey, func(ctx context.Context) {
		rctx, cancel := context.WithTimeout(ctx, relayWait)
		defer cancel()
		if err := c.store.Relay(rctx, to, store.Relayed{Domain: c.opts.Domain, From: c.inst.relayName, Stanza: st.Bytes()}); err != nil {
			c.log.Warn("cannot pass an answer on to the instance that asked: dropped", "id", st.Attr("id"), "from", st.Attr("from"), "err", err)
			return
		}
		c.log.Debug("passed an answer on to the instance that asked", "id", st.Attr("id"), "from", st.Attr("from"), "to", to)
		c.m.Relayed.Add(1)
	})
	if err != nil {
		c.log.Warn("too many answers to pass on to other instances: dropped", "id", st.Attr("id"), "from", st.Attr("from"), "err", err)
	}
}

// shareGrant passes the server's privilege advertisement st on to the
// other instances, on the queue of relay, when the store is shared. A
// failure leaves them with what they knew (or without the privileges).
func (c *Component) shareGrant(st *xmlel.Element) {
	if c.inst.relayName == "" {
		return
	}
	err := c.Post(relayKey, func(ctx context.Context) {
		rctx, cancel := context.WithTimeout(ctx, relayWait)
		defer cancel()
		if err := c.store.RelayAll(rctx, store.Relayed{Domain: c.opts.Domain, From: c.inst.relayName, Stanza: st.Bytes()}); err != nil {
			c.log.Warn("cannot pass the server's privilege advertisement on to the other instances", "server", st.Attr("from"), "err", err)
			return
		}
		c.log.Debug("passed the server's privilege advertisement on to the other instances", "server", st.Attr("from"))
		c.m.Relayed.Add(1)
	})
	if err != nil {
		c.log.Warn("cannot pass the server's privilege advertisement on to the other instances", "server", st.Attr("from"), "err", err)
	}
}

// relayed takes what another instance passed on: an answer goes to the
// request waiting for it, if any; a privilege advertisement is recorded.
func (c *Component) relayed(raw []byte) {
	st, err := xmlel.Parse(string(raw))
	if err != nil {
		c.log.Warn("a stanza passed on by another instance does not parse: dropped", "err", err)
		return
	}
	if g, ok := parsePrivilege(st); ok {
		c.privileged(g)
		return
	}
	typ := st.Attr("type")
	if st.Local != "iq" || (typ != "result" && typ != "error") {
		c.log.Warn("another instance passed on what is not an answer: dropped", "stanza", st.Local, "type", typ)
		return
	}
	c.mu.Lock()
	ch := c.pending[st.Attr("id")]
	c.mu.Unlock()
	if ch == nil {
		c.log.Debug("an answer passed on by another instance came after its request ended", "id", st.Attr("id"))
		return
	}
	select {
	case ch <- st:
	default:
	}
}

// listen receives the answers other instances pass on to this one,
// until ctx ends; it listens again after a failure.
func (in *Instance) listen(ctx context.Context) {
	failures := 0
	for {
		err := in.st.Listen(ctx, in.relayName, func() {
			in.log.Info("listening for the answers other instances pass on", "relay", in.relayName)
			failures = 0
			in.upOnce.Do(func() { close(in.up) })
		}, in.relayed)
		if ctx.Err() != nil {
			return
		}
		delay := relayBackoff.Delay(failures)
		failures++
		in.log.Warn("cannot listen for the answers other instances pass on (meanwhile they are lost); will retry", "err", err, "retry_in", delay.Round(time.Millisecond))
		if !pause(ctx, nil, delay) {
			return
		}
	}
}

// awaitListening waits, before a component connects, until the instance
// listens for what the others pass on (at most listenWait): the server's
// privilege advertisement for the new connection may reach another
// instance.
func (in *Instance) awaitListening(ctx context.Context, log *slog.Logger) {
	if in.solo || in.up == nil {
		return
	}
	t := time.NewTimer(in.listenWait)
	defer t.Stop()
	select {
	case <-in.up:
	case <-ctx.Done():
	case <-t.C:
		log.Warn("connecting before the instance listens for what the others pass on: what reaches them for it meanwhile is lost", "waited", in.listenWait)
	}
}

// relayed hands r to the component of its domain.
func (in *Instance) relayed(r store.Relayed) {
	for _, c := range in.components() {
		if strings.EqualFold(c.opts.Domain, r.Domain) {
			c.relayed(r.Stanza)
			return
		}
	}
	in.log.Warn("a stanza passed on by another instance is for a domain this instance does not serve: dropped", "domain", r.Domain)
}
