package component

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// userSession owns one local user's state: every stanza from that user,
// and every event a bridge posts for them, runs in order on the user's
// goroutine. The goroutine exists only while work is queued, so an idle
// user costs a few words, not a stack.
type userSession struct {
	queue   []func(context.Context) // guarded by Component.mu
	running bool                    // guarded by Component.mu
	// commands are the user's open ad-hoc command sessions, by id; only
	// touched on this user's goroutine.
	commands map[string]*commandSession
}

// commandSession is one open XEP-0050 session.
type commandSession struct {
	node   string
	opened uint64      // order of opening, to end the oldest first
	last   time.Time   // the last step
	timer  *time.Timer // ends the session when it is left alone too long
}

// step notes a step of the session: it waits commandTimeout again.
func (cs *commandSession) step(timeout time.Duration) {
	cs.last = time.Now()
	cs.timer.Reset(timeout)
}

// maxCommands is how many command sessions one user may have open; opening
// one more ends the oldest.
const maxCommands = 8

// commandTimeout is how long a command session waits for its next step.
const commandTimeout = 15 * time.Minute

// openCommand opens a command session on node for user and returns its
// id. It runs on the user's goroutine.
func (c *Component) openCommand(user string, s *userSession, node string) string {
	if len(s.commands) >= maxCommands {
		oldest := ""
		for sid, cs := range s.commands {
			if oldest == "" || cs.opened < s.commands[oldest].opened {
				oldest = sid
			}
		}
		c.log.Debug("too many command sessions open: the oldest ends", "user", user, "node", s.commands[oldest].node)
		s.endCommand(oldest)
	}
	if s.commands == nil {
		s.commands = map[string]*commandSession{}
	}
	sid := stanza.NewID()
	cs := &commandSession{node: node, opened: c.commandsOpened.Add(1), last: time.Now()}
	cs.timer = time.AfterFunc(c.commandTimeout, func() { c.expireCommand(user, sid, cs) })
	s.commands[sid] = cs
	return sid
}

// expireCommand ends a command session that waited commandTimeout for its
// next step, on the user's goroutine; when the user's queue is full, it
// tries again after another commandTimeout.
func (c *Component) expireCommand(user, sid string, cs *commandSession) {
	err := c.Post(user, func(context.Context) {
		s := c.userSession(user)
		if s == nil || s.commands[sid] != cs || time.Since(cs.last) < c.commandTimeout {
			return // ended, or stepped since
		}
		c.log.Debug("command session expired", "user", user, "node", cs.node)
		s.endCommand(sid)
	})
	if err != nil {
		time.AfterFunc(c.commandTimeout, func() { c.expireCommand(user, sid, cs) })
	}
}

// endCommand forgets command session sid. The map goes with the last one:
// a user who ran a command holds nothing for it afterwards.
func (s *userSession) endCommand(sid string) {
	if cs := s.commands[sid]; cs != nil {
		cs.timer.Stop()
	}
	delete(s.commands, sid)
	if len(s.commands) == 0 {
		s.commands = nil
	}
}

// Post implements bridges.Host.
func (c *Component) Post(user string, fn func(ctx context.Context)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.users[user]
	if s == nil {
		s = &userSession{}
		c.users[user] = s
	}
	if len(s.queue) >= userQueueSize {
		c.m.Dropped.Add(1)
		return ErrBusy
	}
	s.queue = append(s.queue, fn)
	if !s.running {
		s.running = true
		go c.runUser(user, s)
	}
	return nil
}

// runUser runs s's queue until it is empty or the component stops. A
// session left with nothing queued and no command open is forgotten, so
// the senders seen once hold no memory.
func (c *Component) runUser(user string, s *userSession) {
	ctx := c.ctx()
	for {
		c.mu.Lock()
		if len(s.queue) == 0 || ctx.Err() != nil {
			s.running = false
			if len(s.queue) == 0 && s.commands == nil && c.users[user] == s {
				delete(c.users, user)
			}
			c.mu.Unlock()
			return
		}
		fn := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		if len(s.queue) == 0 {
			s.queue = nil // let the backing array go
		}
		c.mu.Unlock()
		c.safely(ctx, fn)
	}
}

// safely runs fn, turning a panic into a log line so one bad stanza cannot
// take the gateway down for everyone.
func (c *Component) safely(ctx context.Context, fn func(context.Context)) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic while handling a stanza", "panic", r)
		}
	}()
	fn(ctx)
}

func (c *Component) userSession(user string) *userSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.users[user]
}

// dispatch routes one stanza from the server. It runs on the stream's
// reader and never blocks: work goes to the sender's goroutine.
func (c *Component) dispatch(st *xmlel.Element) {
	if d := stanza.Domain(st.Attr("to")); !strings.EqualFold(d, c.opts.Domain) {
		if o := c.opts.Group.get(d); o != nil {
			o.sharedRoutes.Store(true)
			o.dispatch(st)
			return
		}
	}
	typ := st.Attr("type")
	if st.Local == "iq" && (typ == "result" || typ == "error") {
		c.mu.Lock()
		ch := c.pending[st.Attr("id")]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- st:
			default:
			}
			return
		}
	}
	if c.isRouted(st) {
		// Another instance's (or a late) probe or confirmation.
		return
	}
	if st.Local == "iq" && (typ == "result" || typ == "error") {
		if to := c.relayTarget(st.Attr("id")); to != "" {
			if !c.mayAnswer(st.Attr("from")) {
				c.m.NotRelayed.Add(1)
				c.log.Debug("dropped an answer to another instance's id from a JID the gateway does not ask", "id", st.Attr("id"), "from", st.Attr("from"))
				return
			}
			c.relay(st, to) // another instance's request
			return
		}
	}
	switch st.Local {
	case "iq", "message", "presence":
	default:
		c.log.Debug("ignoring an unknown top-level element", "name", st.Local)
		return
	}
	from := st.Attr("from")
	user := stanza.Bare(from)
	if stanza.Local(from) == "" {
		c.fromDomain(st)
		return
	}
	if c.ownAddress(from) {
		c.cameBack(st)
		return
	}
	if !c.opts.Allowed(user) {
		if st.Local == "presence" && stanza.Local(st.Attr("to")) == "" && (typ == "" || typ == "unavailable") {
			// The presence of a user the server forwards (XEP-0356
			// presence permission covers all its users): not an error.
			return
		}
		c.log.Info("refused a user outside PASSERELLE_ALLOW", "user", user, "stanza", st.Local)
		c.m.Refused.Add(1)
		bridges.Refuse(c, st, stanza.Errorf("forbidden", "You are not allowed to use this gateway."))
		return
	}
	err := c.Post(user, func(ctx context.Context) { c.handle(ctx, st) })
	if err != nil {
		c.log.Warn("dropping a stanza", "user", user, "err", err)
		e := stanza.Errorf("resource-constraint", "The gateway is busy with your earlier requests; try again.")
		e.Type = "wait"
		bridges.Refuse(c, st, e)
	}
}

// ownAddress reports whether jid is on the domain of this component or of
// one of its group (the gateway's other bridges).
func (c *Component) ownAddress(jid string) bool {
	d := stanza.Domain(jid)
	return strings.EqualFold(d, c.opts.Domain) || c.opts.Group.get(d) != nil
}

// cameBackLogEvery is how often, after the first, a stanza from one of the
// gateway's own addresses is logged.
const cameBackLogEvery = 100

// cameBack drops a stanza from one of the gateway's own addresses (a room,
// a contact): no user sent it. The server routed back something the
// gateway (this instance, or another one of the domain) sent to an address
// of its own domains, or bounced one with an error: an error answers
// nothing, and any answer would go back to the gateway again. It is
// logged at the first and every cameBackLogEvery-th, not per stanza (each
// event of an IRC channel is a presence to every occupant).
func (c *Component) cameBack(st *xmlel.Element) {
	n := c.cameBackN.Add(1)
	args := []any{"from", st.Attr("from"), "to", st.Attr("to"), "stanza", st.Local, "type", st.Attr("type"), "count", n}
	if e := stanza.ErrorOf(st); e != nil {
		args = append(args, "error", e.Condition)
	}
	if n%cameBackLogEvery == 1 {
		c.log.Info("dropped a stanza from one of the gateway's own addresses: the server routed back (or bounced) what the gateway sent, no user sent it", args...)
	} else {
		c.log.Debug("dropped a stanza from one of the gateway's own addresses", args...)
	}
}

// refuseOverLimit answers a stanza the stream reader skipped because it
// went over a limit (too deep, too many attributes, too large): the stream
// stays up, and the sender learns why the stanza went nowhere.
func (c *Component) refuseOverLimit(e *xmlel.LimitError) {
	c.m.OverLimit.Add(1)
	st := e.Stanza
	if st == nil {
		c.log.Warn("skipped a stanza over a limit; its sender could not be read", "limit", e.Limit, "max", e.Max)
		return
	}
	from := st.Attr("from")
	c.log.Warn("skipped a stanza over a limit", "limit", e.Limit, "max", e.Max, "from", from, "stanza", st.Local, "id", st.Attr("id"))
	switch st.Local {
	case "iq", "message", "presence":
	default:
		return
	}
	owner := c
	if to := stanza.Domain(st.Attr("to")); !strings.EqualFold(to, c.opts.Domain) {
		owner = c.opts.Group.get(to)
		if owner == nil {
			// Answered from this component's address.
			owner = c
			st.SetAttr("to", c.opts.Domain)
		}
	}
	refusal := stanza.Errorf("policy-violation", limitText(e))
	if typ := st.Attr("type"); st.Local == "iq" && (typ == "result" || typ == "error") {
		// The answer to one of the gateway's own requests (a roster,
		// say): the request gets the refusal instead of waiting.
		owner.mu.Lock()
		ch := owner.pending[st.Attr("id")]
		owner.mu.Unlock()
		if ch != nil {
			select {
			case ch <- stanza.New("iq", from, st.Attr("to"), "error", st.Attr("id")).Add(refusal.Element()):
			default:
			}
		}
		return
	}
	if from == "" {
		return
	}
	bridges.Refuse(c, st, refusal)
}

// limitText says which limit a refused stanza went over.
func limitText(e *xmlel.LimitError) string {
	switch e.Limit {
	case "depth":
		return fmt.Sprintf("The stanza was refused: it is nested deeper than the gateway accepts (%d levels).", e.Max)
	case "attributes":
		return fmt.Sprintf("The stanza was refused: an element in it has more attributes than the gateway accepts (%d).", e.Max)
	case "size":
		return fmt.Sprintf("The stanza was refused: it is larger than the gateway accepts (%d bytes).", e.Max)
	}
	return "The stanza was refused: it goes over a limit of the gateway."
}

// fromDomain handles a stanza from a domain JID: a server (ours, granting
// privileges, probing or pinging us; or a remote one) or another
// component. Its queries about the gateway are answered like a user's;
// anything acting for a user is not its to send.
func (c *Component) fromDomain(st *xmlel.Element) {
	if g, ok := parsePrivilege(st); ok {
		c.privileged(g)
		c.shareGrant(st)
		return
	}
	if stanza.IsCarbonError(st) {
		c.revokeMessage(strings.ToLower(st.Attr("from")), stanza.ErrorOf(st))
		return
	}
	typ := st.Attr("type")
	if st.Local != "iq" || (typ != "get" && typ != "set") {
		return
	}
	if stanza.Local(st.Attr("to")) != "" || !domainQuery(st) {
		c.Send(stanza.ErrorReply(st, stanza.Errorf("service-unavailable", "")))
		return
	}
	from := st.Attr("from")
	err := c.Post(from, func(ctx context.Context) {
		c.handleDomainIQ(ctx, &bridges.User{JID: stanza.Bare(from), Full: from}, st)
	})
	if err != nil {
		e := stanza.Errorf("resource-constraint", "The gateway is busy with your earlier requests; try again.")
		e.Type = "wait"
		bridges.Refuse(c, st, e)
	}
}

// domainQuery reports whether an IQ is one a domain JID may ask the
// gateway's domain: service discovery, ping, version, the gateway prompt.
func domainQuery(st *xmlel.Element) bool {
	if len(st.Children) != 1 {
		return false
	}
	get := st.Attr("type") == "get"
	switch st.Children[0].Space {
	case stanza.NSDiscoInfo, stanza.NSDiscoItems, stanza.NSPing, stanza.NSVersion:
		return get
	case stanza.NSGateway:
		return true
	}
	return false
}

// replyError answers st with an error unless st is an error or a result
// (never answer errors with errors) or an unavailable presence.
func (c *Component) replyError(st *xmlel.Element, e *stanza.Error) {
	switch st.Attr("type") {
	case "error", "result", "unavailable", "unsubscribed":
		return
	}
	c.Send(stanza.ErrorReply(st, e))
}

// user builds the bridges.User for a stanza's sender.
func (c *Component) user(ctx context.Context, full string) (*bridges.User, error) {
	bare := stanza.Bare(full)
	u := &bridges.User{JID: bare, Full: full, Admin: c.opts.IsAdmin(bare)}
	reg, err := c.Registration(ctx, bare)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	u.Registration = reg
	return u, nil
}

// Registration implements bridges.Host: the stored registration with its
// secrets opened. A secret that does not open (copied from another user's
// registration or another field, or sealed under another key) is logged
// and left out: it is never used, and the user can register it again.
func (c *Component) Registration(ctx context.Context, user string) (*bridges.Registration, error) {
	r, err := c.store.GetRegistration(ctx, c.opts.Domain, user)
	if err != nil {
		return nil, err
	}
	out := &bridges.Registration{JID: r.JID, Fields: map[string]string{}, Claims: r.Claims}
	for k, v := range r.Fields {
		pt, err := c.opts.Sealer.Open(v, store.Binding{Domain: c.opts.Domain, JID: user, Field: k})
		if err != nil {
			c.log.Error("a stored secret does not open: not used, the user must register it again", "user", user, "field", k, "err", err)
			continue
		}
		out.Fields[k] = pt
	}
	return out, nil
}

// Registered implements bridges.Host.
func (c *Component) Registered(ctx context.Context) ([]string, error) {
	return c.store.ListRegistrations(ctx, c.opts.Domain)
}

// handle processes one stanza on its sender's goroutine.
func (c *Component) handle(ctx context.Context, st *xmlel.Element) {
	if err := c.hold(ctx, stanza.Bare(st.Attr("from"))); err != nil {
		c.log.Warn("cannot hold the user: stanza refused", "user", stanza.Bare(st.Attr("from")), "err", err)
		bridges.Refuse(c, st, unheld(err))
		return
	}
	u, err := c.user(ctx, st.Attr("from"))
	if err != nil {
		c.log.Error("cannot load the user's registration", "user", stanza.Bare(st.Attr("from")), "err", err)
		bridges.Refuse(c, st, stanza.Errorf("internal-server-error", "The gateway cannot read its database."))
		return
	}
	toLocal := stanza.Local(st.Attr("to"))
	switch st.Local {
	case "iq":
		if toLocal == "" && c.handleDomainIQ(ctx, u, st) {
			return
		}
		if toLocal != "" && c.handleCommandIQ(ctx, u, st, toLocal) {
			return
		}
		if toLocal != "" && c.contactVCard(ctx, u, st, toLocal) {
			return
		}
	case "presence":
		if toLocal == "" && c.handleDomainPresence(ctx, u, st) {
			return
		}
	}
	if toLocal != "" && c.bridge.RegistrationRequired() && u.Registration == nil {
		if st.Local == "message" || (st.Local == "presence" && st.Attr("type") == "subscribe") {
			bridges.Refuse(c, st, stanza.Errorf("registration-required",
				"Register with "+c.opts.Domain+" first (service discovery → register)."))
			return
		}
	}
	c.bridge.Handle(ctx, u, st)
}
