package irc

import (
	"context"
	"errors"
	"net"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// network is a user's connection to one IRC server, shared by all the
// user's resources: the IRC client (ircClient), and the rooms and
// requests of the user mirrored over it, kept across reconnections.
type network struct {
	ircClient
	b        *Bridge
	user     string
	server   string
	cfg      netConfig
	chans    map[string]*channel // by folded name
	started  time.Time
	attempts int              // failed connection attempts since the last 001
	prevNick string           // our nick before the connection was lost
	retryAt  time.Time        // when the next connection attempt is due
	listReqs []*xmlel.Element // disco#items waiting for the LIST reply
	listBuf  []listEntry
	echoes   map[string]*pendingEcho     // by label
	ctcpWait map[string][]*xmlel.Element // IQs waiting for a CTCP reply, by "nick CMD"
	bans     map[string]*banList         // ban list requests, by folded channel
	watch    watchState                  // the IRC contacts whose presence is followed (presence.go)
	whois    map[string]*whoisReq        // WHOIS under way, by folded nick (whois.go)
	windows  map[string]string           // channels whose archive window is open: folded name → name (see syncWindows)
	views    map[string]shownView        // what it shows the lineLog of each channel: folded name → view (see publish)
	// fence checks the lease under which the instance held the user when
	// the network started (bridges.Host.Fence): once it fails, the
	// connection is closed without a word and not opened again.
	fence func() bool
}

// A user's IRC session is the user's networks, by server: b.sessions
// holds it while the user has a network. The map of networks is only
// touched on the user's goroutine (Handle, or a function given to
// host.Post); b.mu guards b.sessions.

// networkOf returns the user's network for server, or nil.
func (b *Bridge) networkOf(user, server string) *network {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions[user][server]
}

// networksOf returns the user's networks by server (nil: none).
func (b *Bridge) networksOf(user string) map[string]*network {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions[user]
}

// addNetwork puts n in its user's session, starting the session.
func (b *Bridge) addNetwork(n *network) {
	b.mu.Lock()
	defer b.mu.Unlock()
	nets := b.sessions[n.user]
	if nets == nil {
		nets = map[string]*network{}
		b.sessions[n.user] = nets
	}
	nets[n.server] = n
}

// dropNetwork takes n out of its user's session, and forgets the session
// when no network is left.
func (b *Bridge) dropNetwork(n *network) {
	b.mu.Lock()
	defer b.mu.Unlock()
	nets := b.sessions[n.user]
	if nets[n.server] != n {
		return
	}
	delete(nets, n.server)
	if len(nets) == 0 {
		delete(b.sessions, n.user)
	}
}

// network returns the user's network for server, connecting when new.
// nick is the nick of the join that opens it (the lowest precedence).
func (b *Bridge) network(ctx context.Context, u *bridges.User, server, nick string) (*network, error) {
	if n := b.networkOf(u.JID, server); n != nil {
		return n, nil
	}
	cfg, err := b.loadNetConfig(ctx, u.JID, server)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.Nick != "":
		nick = cfg.Nick
	case u.Registration != nil && u.Registration.Fields["nick"] != "":
		nick = u.Registration.Fields["nick"]
	}
	if cfg.Password == "" && u.Registration != nil {
		cfg.Password = u.Registration.Fields["password"]
	}
	n := &network{ircClient: newIRCClient(nick), b: b, user: u.JID, server: server, cfg: cfg,
		chans: map[string]*channel{}, started: time.Now(), echoes: map[string]*pendingEcho{}, fence: b.host.Fence()}
	b.addNetwork(n)
	b.connect(n)
	return n, nil
}

// connect dials in the background and posts the outcome to the user's
// goroutine.
func (b *Bridge) connect(n *network) {
	user, server, cfg, upgrade := n.user, n.server, n.cfg, n.upgrade
	go func() {
		var nc net.Conn
		var lk link
		err := errFenced
		if n.fence() {
			nc, lk, err = b.dialSTS(b.runCtx, server, cfg, upgrade)
		}
		b.post(user, func(ctx context.Context) {
			cur := b.networkOf(user, server)
			if cur != n || !n.fence() {
				if nc != nil {
					nc.Close()
				}
				if cur == n {
					b.host.Log().Info("irc connection not opened: the instance no longer holds the user", "user", user, "server", server)
				}
				return
			}
			if err != nil {
				b.host.Log().Info("irc connection failed", "user", user, "server", server, "err", err)
				var ce *connError
				errors.As(err, &ce)
				if n.keepsTrying() && (ce == nil || !ce.permanent) {
					n.scheduleReconnect(ctx, "Cannot connect to "+server+": "+err.Error())
					return
				}
				if ce != nil && ce.condition != "" {
					n.failWith(stanza.Errorf(ce.condition, "Cannot connect to "+server+": "+err.Error()))
					return
				}
				n.fail("Cannot connect to " + server + ": " + err.Error())
				return
			}
			c := newConn(nc, lk.tls, float64(cfg.ThrottleLimit))
			c.fence = n.fence
			n.connected(c, lk)
			b.track(c, true)
			c.run(func(line string) {
				b.post(user, func(ctx context.Context) {
					if n.c != c || b.networkOf(user, server) != n {
						return
					}
					if m, err := parseLine(line); err == nil {
						n.handle(ctx, m)
					}
				})
			}, func(err error) {
				b.track(c, false)
				b.post(user, func(ctx context.Context) {
					if n.c == c && b.networkOf(user, server) == n {
						n.lost(ctx, err)
					}
				})
			})
			n.startRegistration()
		})
	}()
}

// post runs fn on user's goroutine, waiting while the user's queue is
// full (the IRC reader then stops reading: backpressure, not loss).
func (b *Bridge) post(user string, fn func(context.Context)) {
	for {
		if err := b.host.Post(user, fn); err == nil {
			return
		}
		select {
		case <-b.runCtx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// networkJID is the JID of the network itself.
func (n *network) networkJID() string {
	return mapping.IRCAddr{Kind: mapping.IRCServer, Server: n.server}.Local() + "@" + n.b.host.Domain()
}

// userJID is the JID of an IRC user on this network.
func (n *network) userJID(nick string) string {
	return mapping.IRCAddr{Kind: mapping.IRCUser, Name: nick, Server: n.server}.Local() + "@" + n.b.host.Domain()
}

// status sends a status line from the network JID to the user.
func (n *network) status(ctx context.Context, text string) {
	m := stanza.Message(n.networkJID(), n.user, "chat", stanza.NewID(), text)
	if err := n.b.host.SendMessage(ctx, m); err != nil {
		n.b.host.Log().Warn("cannot queue an irc status message", "user", n.user, "err", err)
	}
}

// fail reports a failure to connect or register to every resource waiting
// to join, and forgets the network.
func (n *network) fail(reason string) {
	n.failWith(stanza.Errorf("item-not-found", reason))
}

func (n *network) failWith(e *stanza.Error) {
	for _, ch := range n.chans {
		for full, req := range ch.pending {
			n.b.host.Send(presenceError(ch.jid(n)+"/"+req, full, e))
		}
		for full, r := range ch.resources {
			p := stanza.Presence(ch.jid(n)+"/"+r.nick, full, "unavailable")
			p.Add(mucUserX(member{nick: n.nick}, "110", "332"))
			p.AddText("status", e.Text)
			n.b.host.Send(p)
		}
	}
	n.forget()
}

// dropListRequests answers the disco#items waiting for a LIST reply.
func (n *network) dropListRequests() {
	for _, st := range n.listReqs {
		bridges.Refuse(n.b.host, st, stanza.Errorf("recipient-unavailable", "The connection to "+n.server+" was lost."))
	}
	n.listReqs, n.listBuf = nil, nil
	n.dropBanRequests()
}

// failEchoes reports the messages whose echo never came.
func (n *network) failEchoes() {
	seen := map[*pendingEcho]bool{}
	for _, p := range n.echoes {
		if !seen[p] {
			seen[p] = true
			bridges.Refuse(n.b.host, p.st, stanza.Errorf("recipient-unavailable", "The connection to "+n.server+" was lost before the message was confirmed."))
		}
	}
	n.echoes = map[string]*pendingEcho{}
}

// forget closes the connection and drops the network from the session.
func (n *network) forget() {
	ctx, cancel := bridges.RecordContext(n.b.runCtx)
	defer cancel()
	for _, name := range n.windows {
		if err := n.closeWindow(ctx, name, true); err != nil {
			n.b.host.Log().Warn("cannot close an irc archive window: this user may see lines archived after they left", "user", n.user, "channel", name, "err", err)
		}
	}
	n.windows = nil
	for _, sv := range n.views {
		n.b.lines.show(sv.c, n.user, nil, n.fold)
	}
	n.views = nil
	n.dropListRequests()
	n.failEchoes()
	n.watchLost()
	n.dropWhois(n.b.runCtx)
	if n.c != nil {
		l, _ := buildLine("QUIT", "Passerelle")
		n.c.close(l)
		n.c = nil
	}
	n.b.dropNetwork(n)
}

// lost handles the end of the connection: rooms that were joined are
// kept, and the network reconnects with backoff.
func (n *network) lost(ctx context.Context, err error) {
	n.disconnected()
	if errors.Is(err, errFenced) {
		// Another instance may hold the user: nothing is said or tried
		// again here; Released forgets the network.
		n.b.host.Log().Info("irc connection dropped: the instance no longer holds the user (its lease ended)", "user", n.user, "server", n.server)
		return
	}
	n.dropListRequests()
	n.failEchoes()
	n.watchLost()
	n.dropWhois(ctx)
	reason := "The connection to " + n.server + " was lost"
	if err != nil {
		reason += ": " + err.Error()
	}
	n.b.host.Log().Info("irc connection lost", "user", n.user, "server", n.server, "err", err)
	if !n.keepsTrying() {
		n.status(ctx, reason)
		n.fail(reason)
		return
	}
	n.scheduleReconnect(ctx, reason)
	n.syncWindows(ctx)
}

// keepsTrying reports whether the network has rooms to keep through
// connection failures: some resource is in one, or a persistent channel
// is to be (re)joined, as after a restart. Without, a failure ends the
// network and the pending joins get the error.
func (n *network) keepsTrying() bool {
	for _, ch := range n.chans {
		if ch.state.shown() || ch.settings.Persistent {
			return true
		}
	}
	return false
}

// reconnectBackoff is the wait before reconnecting to an IRC server
// after the first retry (which is immediate): from 1 s to 5 min.
var reconnectBackoff = bridges.Backoff{First: time.Second, Max: 5 * time.Minute, Jitter: 0.5}

// backoff returns the delay before attempt (0-based): the first is
// immediate, then reconnectBackoff.
func backoff(attempt int) time.Duration {
	if attempt == 0 {
		return 0
	}
	return reconnectBackoff.Delay(attempt - 1)
}

// scheduleReconnect keeps the rooms and connects again after a backoff.
func (n *network) scheduleReconnect(ctx context.Context, reason string) {
	d := backoff(n.attempts)
	n.attempts++
	n.registered = false
	if n.prevNick == "" {
		n.prevNick = n.nick
	}
	for _, ch := range n.chans {
		ch.connectionLost()
	}
	text := reason + "; reconnecting in " + d.Round(time.Second).String() + "."
	n.status(ctx, text)
	for _, ch := range n.chans {
		if ch.state.shown() {
			n.roomMessage(ctx, ch, "", text, nil)
		}
	}
	n.retryAt = time.Now().Add(d)
	time.AfterFunc(d, func() {
		n.b.post(n.user, func(ctx context.Context) {
			if n.b.networkOf(n.user, n.server) == n && n.c == nil {
				n.b.connect(n)
			}
		})
	})
}

// maybeClose quits when no channel is left.
func (n *network) maybeClose() {
	if len(n.chans) == 0 {
		n.b.host.Log().Info("irc connection closed: no channel left", "user", n.user, "server", n.server)
		n.forget()
	}
}
