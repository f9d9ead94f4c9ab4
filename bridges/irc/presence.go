package irc

import (
	"context"
	"errors"
	"strings"
	"time"

	irc "gopkg.in/irc.v4"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
	"passerelle/store"
)

// The presence of IRC contacts: a registered user's IRC contacts (the
// contacts table, and the nicks written to or from on the connection)
// are watched on each network the user is connected to, and their
// presence follows the nick: available, away (with the away message) or
// unavailable.
//
//   - Online or not: MONITOR (IRCv3) where ISUPPORT offers it (730/731),
//     up to its limit; otherwise, and for the nicks over the limit, ISON
//     every PresencePoll, batched within the line length.
//   - Away or not: AWAY lines (away-notify, for the nicks in a common
//     channel, and with extended-monitor for the monitored ones); unless
//     both capabilities cover a nick, USERHOST every PresencePoll for the
//     nicks online (five a line), and a WHOIS for the away message when
//     one goes away.
//   - QUIT, NICK and JOIN seen in a channel apply at once.
//
// Presence goes from nick%server@irc-domain to the user's bare JID when
// it changes, when the user comes online (bridges.UserPresence), and in
// answer to a probe. When the connection ends the contacts shown
// available are sent unavailable: the gateway cannot tell any more.

// defaultPresencePoll is how often ISON and USERHOST poll by default.
const defaultPresencePoll = time.Minute

// userhostBatch is how many nicks one USERHOST asks for (RFC 2812).
const userhostBatch = 5

// isonRoom is the room for nicks in an ISON line: its reply, ":server
// 303 ournick :nicks", must fit in 512 bytes as well, with a server name
// and our nick of up to 63 bytes each.
const isonRoom = maxLine - 2 - len(":") - 63 - len(" 303 ") - 63 - len(" :")

// contact is a watched nick.
type contact struct {
	nick      string // as the server last gave it, else as the contact has it
	known     bool   // the online state is known on this connection
	online    bool
	away      bool
	awayMsg   string
	shown     string // the presence last sent (presenceKey), "" for none
	monitored bool   // in the server's MONITOR list
	checking  bool   // a WHOIS asks for its away message
}

// watchState is what a network watches.
type watchState struct {
	contacts map[string]*contact // by folded nick; kept across reconnections
	enabled  bool                // the user is registered: contacts are watched
	started  bool                // watching began on this connection (end of MOTD)
	// Each ISON awaiting its 303 and each USERHOST awaiting its 302, in
	// the order sent: the server answers in that order.
	ison     []request
	userhost []request
	pollGen  int // the current poll timer's generation
	poll     *time.Timer
}

// request is an ISON or USERHOST sent: the folded nicks it asks for; nil
// for one the user typed (a raw line to the network's address), whose
// reply is the user's.
type request struct {
	nicks []string
	at    time.Time
}

// pollEvery is the bridge's poll interval.
func (b *Bridge) pollEvery() time.Duration {
	if b.opts.PresencePoll > 0 {
		return b.opts.PresencePoll
	}
	return defaultPresencePoll
}

// startWatch begins watching at the end of the MOTD (after ISUPPORT):
// the user's IRC contacts on this network are read from the store, then
// monitored or polled.
func (n *network) startWatch(ctx context.Context) {
	if n.watch.started {
		return
	}
	n.watch.started = true
	_, err := n.b.host.Registration(ctx, n.user)
	switch {
	case errors.Is(err, store.ErrNotFound):
		n.watch.enabled = false
		return // contacts are kept for registered users only
	case err != nil:
		n.b.host.Log().Error("cannot read the registration of a user to watch IRC contacts", "user", n.user, "server", n.server, "err", err)
		return
	}
	n.watch.enabled = true
	stored, err := n.b.db.Contacts(ctx, n.b.host.Domain(), n.user)
	if err != nil {
		n.b.host.Log().Error("cannot read the IRC contacts to watch; only those written to or from will be", "user", n.user, "server", n.server, "err", err)
	}
	// Keyed anew: the case mapping may have changed with this connection.
	old := n.watch.contacts
	n.watch.contacts = make(map[string]*contact, len(old)+len(stored))
	for _, c := range old {
		n.watch.contacts[n.fold(c.nick)] = c
	}
	for _, c := range stored {
		a, err := mapping.ParseIRCLocal(stanza.Local(c.Contact), n.chantypes)
		if err != nil || a.Kind != mapping.IRCUser || a.Server != n.server {
			continue
		}
		if k := n.fold(a.Name); n.watch.contacts[k] == nil {
			n.watch.contacts[k] = &contact{nick: a.Name}
		}
	}
	if len(n.watch.contacts) == 0 {
		return
	}
	all := make([]*contact, 0, len(n.watch.contacts))
	for _, c := range n.watch.contacts {
		all = append(all, c)
	}
	n.watchNew(all)
	n.schedulePoll()
}

// watchNick watches nick, a contact the user wrote to or got a private
// message from, if the user is registered (registered: known to be; else
// as found at the start of the connection).
func (n *network) watchNick(nick string, registered bool) {
	if registered {
		n.watch.enabled = true
	}
	if !n.watch.enabled || nick == "" {
		return
	}
	k := n.fold(nick)
	if n.watch.contacts[k] != nil {
		return
	}
	if n.watch.contacts == nil {
		n.watch.contacts = map[string]*contact{}
	}
	c := &contact{nick: nick}
	n.watch.contacts[k] = c
	if n.watch.started && n.registered {
		n.watchNew([]*contact{c})
		if n.watch.poll == nil {
			n.schedulePoll()
		}
	}
}

// watchNew starts watching contacts: MONITOR while the server's limit
// allows, and at once an ISON for the others (then every poll).
func (n *network) watchNew(cs []*contact) {
	var mon, poll []*contact
	room := n.monitor
	if room > 0 {
		for _, c := range n.watch.contacts {
			if c.monitored {
				room--
			}
		}
	}
	for _, c := range cs {
		if n.monitor != 0 && (n.monitor < 0 || room > 0) {
			c.monitored = true
			room--
			mon = append(mon, c)
		} else {
			poll = append(poll, c)
		}
	}
	n.sendBatches("MONITOR", mon, maxLine-2-len("MONITOR + "), 0, func(nicks []string) []string {
		return []string{"+", strings.Join(nicks, ",")}
	}, nil)
	n.isonNow(poll)
}

// isonNow asks whether cs are online.
func (n *network) isonNow(cs []*contact) {
	n.sendBatches("ISON", cs, isonRoom, 0, nil, func(nicks []string) {
		n.watch.ison = append(n.watch.ison, request{n.folded(nicks), time.Now()})
	})
}

// folded returns the folded nicks.
func (n *network) folded(nicks []string) []string {
	out := make([]string, len(nicks))
	for i, s := range nicks {
		out[i] = n.fold(s)
	}
	return out
}

// sendBatches sends cmd for the nicks of cs, as many a line as fit in
// room bytes (joined by one separator) and, when max > 0, at most max;
// params turns a batch into the command's parameters (nil: the nicks),
// and sent (if not nil) is called with each batch sent. A batch the
// connection refuses (its queue full, say) is not sent: no reply will
// come for it.
func (n *network) sendBatches(cmd string, cs []*contact, room, max int, params func(nicks []string) []string, sent func(nicks []string)) {
	var batch []string
	size := 0
	flush := func() {
		if len(batch) > 0 {
			p := batch
			if params != nil {
				p = params(batch)
			}
			if err := n.send(cmd, p...); err != nil {
				n.b.host.Log().Warn("cannot send a presence request to an irc server", "user", n.user, "server", n.server, "command", cmd, "err", err)
			} else if sent != nil {
				sent(batch)
			}
		}
		batch, size = nil, 0
	}
	for _, c := range cs {
		if len(batch) > 0 && (size+1+len(c.nick) > room || (max > 0 && len(batch) == max)) {
			flush()
		}
		if size > 0 {
			size++
		}
		batch = append(batch, c.nick)
		size += len(c.nick)
	}
	flush()
}

// schedulePoll arms the poll timer (a new generation: an older timer's
// firing does nothing).
func (n *network) schedulePoll() {
	if n.watch.poll != nil {
		n.watch.poll.Stop()
	}
	n.watch.pollGen++
	gen := n.watch.pollGen
	n.watch.poll = time.AfterFunc(n.b.pollEvery(), func() {
		n.b.post(n.user, func(ctx context.Context) {
			if n.b.networkOf(n.user, n.server) != n || n.watch.pollGen != gen || n.c == nil || !n.registered {
				return
			}
			n.pollNow()
			n.schedulePoll()
		})
	})
}

// stopPoll stops the poll timer.
func (n *network) stopPoll() {
	if n.watch.poll != nil {
		n.watch.poll.Stop()
		n.watch.poll = nil
	}
	n.watch.pollGen++
}

// pollNow sends one round of ISON (the nicks not monitored) and USERHOST
// (the nicks online whose away state is not pushed to us).
func (n *network) pollNow() {
	// Requests unanswered for a whole round are not waited for; those
	// in flight (the user's, say) are.
	cutoff := time.Now().Add(-n.b.pollEvery())
	n.watch.ison, n.watch.userhost = unanswered(n.watch.ison, cutoff), unanswered(n.watch.userhost, cutoff)
	var ison, uh []*contact
	for _, c := range n.watch.contacts {
		if !c.monitored {
			ison = append(ison, c)
		}
		if c.known && c.online && !n.awayPushed(c) {
			uh = append(uh, c)
		}
	}
	n.isonNow(ison)
	n.sendBatches("USERHOST", uh, maxLine-2-len("USERHOST "), userhostBatch, nil, func(nicks []string) {
		n.watch.userhost = append(n.watch.userhost, request{n.folded(nicks), time.Now()})
	})
}

// unanswered drops the requests of rs sent before cutoff.
func unanswered(rs []request, cutoff time.Time) []request {
	for len(rs) > 0 && rs[0].at.Before(cutoff) {
		rs = rs[1:]
	}
	return rs
}

// userRequest records an ISON or USERHOST that the user sent as a raw
// line: its reply goes to the user, and the poll's replies still match
// their requests.
func (n *network) userRequest(m *irc.Message) {
	if len(strings.Fields(strings.Join(m.Params, " "))) == 0 {
		// No nick ("ISON", "ISON :"): answered with an error
		// numeric (461), not a 303 or 302.
		return
	}
	switch strings.ToUpper(m.Command) {
	case "ISON":
		n.watch.ison = append(n.watch.ison, request{at: time.Now()})
	case "USERHOST":
		n.watch.userhost = append(n.watch.userhost, request{at: time.Now()})
	}
}

// awayPushed reports whether the server tells us when c goes away or
// comes back: away-notify with extended-monitor, for a monitored nick.
func (n *network) awayPushed(c *contact) bool {
	return c.monitored && n.caps.enabled.has("away-notify") && n.caps.enabled.has("extended-monitor")
}

// watched returns the contact of nick, or nil.
func (n *network) watched(nick string) *contact {
	if len(n.watch.contacts) == 0 || nick == "" {
		return nil
	}
	return n.watch.contacts[n.fold(nick)]
}

// presenceReply handles the replies and events that tell a watched
// nick's presence. It reports whether m was a reply to the watching
// (MONITOR, ISON, USERHOST), which nothing else handles; the reply to an
// ISON or USERHOST the user typed is shown to the user.
func (n *network) presenceReply(ctx context.Context, m *irc.Message) bool {
	switch m.Command {
	case "730", "731": // RPL_MONONLINE, RPL_MONOFFLINE
		for _, t := range strings.Split(m.Trailing(), ",") {
			nick, _, _ := strings.Cut(t, "!")
			if c := n.watched(nick); c != nil {
				n.setOnline(c, strings.Clone(nick), m.Command == "730")
			}
		}
		return true
	case "732", "733": // the MONITOR list
		return true
	case "734": // ERR_MONLISTFULL: polled instead
		var over []*contact
		for _, nick := range strings.Split(m.Param(2), ",") {
			if c := n.watched(nick); c != nil && c.monitored {
				c.monitored = false
				over = append(over, c)
			}
		}
		n.isonNow(over)
		return true
	case "303": // RPL_ISON
		if len(n.watch.ison) == 0 {
			return true
		}
		batch := n.watch.ison[0].nicks
		n.watch.ison = n.watch.ison[1:]
		if batch == nil {
			n.status(ctx, "ISON: "+orNone(decodeText(m.Trailing())))
			return true
		}
		on := map[string]string{}
		for _, nick := range strings.Fields(m.Trailing()) {
			on[n.fold(nick)] = nick
		}
		for _, k := range batch {
			if c := n.watch.contacts[k]; c != nil {
				nick, ok := on[k]
				n.setOnline(c, strings.Clone(nick), ok)
			}
		}
		return true
	case "302": // RPL_USERHOST
		if len(n.watch.userhost) == 0 {
			return true
		}
		batch := n.watch.userhost[0].nicks
		n.watch.userhost = n.watch.userhost[1:]
		if batch == nil {
			n.status(ctx, "USERHOST: "+orNone(decodeText(m.Trailing())))
			return true
		}
		type reply struct {
			nick string
			away bool
		}
		got := map[string]reply{}
		for _, e := range strings.Fields(m.Trailing()) {
			nick, rest, ok := strings.Cut(e, "=")
			if !ok || rest == "" {
				continue
			}
			nick = strings.TrimSuffix(nick, "*")
			got[n.fold(nick)] = reply{nick: nick, away: rest[0] == '-'}
		}
		for _, k := range batch {
			c := n.watch.contacts[k]
			if c == nil {
				continue
			}
			r, ok := got[k]
			switch {
			case !ok:
				n.setOnline(c, "", false)
			case r.away && !c.away:
				n.checkAway(c) // the message comes with a WHOIS
			case !r.away && c.away:
				n.setAway(c, false, "")
			}
		}
		return true
	}
	return false
}

// orNone is s, or "(none)" when s is empty.
func orNone(s string) string {
	if strings.TrimSpace(s) == "" {
		return "(none)"
	}
	return s
}

// presenceEvent applies what a line seen for other reasons tells of a
// watched nick: AWAY (away-notify), QUIT, NICK, JOIN and RPL_AWAY.
func (n *network) presenceEvent(m *irc.Message) {
	if len(n.watch.contacts) == 0 {
		return
	}
	switch m.Command {
	case "AWAY":
		if c := n.watched(m.Name); c != nil {
			msg := ""
			if len(m.Params) > 0 {
				msg = decodeText(m.Trailing())
			}
			if !c.known || !c.online {
				c.known, c.online = true, true
			}
			n.setAway(c, msg != "", msg)
		}
	case "QUIT":
		if c := n.watched(m.Name); c != nil {
			n.setOnline(c, "", false)
		}
	case "NICK":
		if c := n.watched(m.Name); c != nil {
			n.setOnline(c, "", false)
		}
		if c := n.watched(m.Param(0)); c != nil {
			n.setOnline(c, strings.Clone(m.Param(0)), true)
		}
	case "JOIN":
		if c := n.watched(m.Name); c != nil && (!c.known || !c.online) {
			n.setOnline(c, strings.Clone(m.Name), true)
		}
	case "301": // RPL_AWAY, answering a private message
		if c := n.watched(m.Param(1)); c != nil {
			c.known, c.online = true, true
			n.setAway(c, true, decodeText(m.Trailing()))
		}
	}
}

// checkAway asks for c's away message with a WHOIS; its answer sets the
// away state (without a message when it fails).
func (n *network) checkAway(c *contact) {
	if c.checking {
		return
	}
	c.checking = true
	n.whoisNick(c.nick, func(ctx context.Context, r whoisResult) {
		if !c.checking {
			return // the connection ended (watchLost): c is unknown now
		}
		c.checking = false
		if r.err != nil {
			if r.notFound {
				n.setOnline(c, "", false)
				return
			}
			n.setAway(c, true, "")
		}
		// A successful WHOIS was applied by whoisNick (whoisApply).
	})
}

// setOnline records whether c is online (nick: as the server gave it,
// when it did) and sends its presence if it changed.
func (n *network) setOnline(c *contact, nick string, online bool) {
	if nick != "" {
		c.nick = nick
	}
	if !online {
		c.away, c.awayMsg = false, ""
	}
	c.known, c.online = true, online
	n.showContact(c, false)
}

// setAway records c's away state and sends its presence if it changed.
func (n *network) setAway(c *contact, away bool, msg string) {
	if !away {
		msg = ""
	}
	c.away, c.awayMsg = away, msg
	n.showContact(c, false)
}

// presenceKey names the presence c should have.
func (c *contact) presenceKey() string {
	switch {
	case !c.online:
		return "unavailable"
	case c.away:
		return "away\x00" + c.awayMsg
	}
	return "available"
}

// showContact sends c's presence to the user when it changed since last
// sent, or always when again (a probe, the user coming online). Nothing
// is sent while c's state is unknown.
func (n *network) showContact(c *contact, again bool) {
	if !c.known {
		return
	}
	key := c.presenceKey()
	if key == c.shown && !again {
		return
	}
	c.shown = key
	n.sendPresence(c, "")
}

// sendPresence sends c's presence to the user, or unavailable with
// status when status is not empty.
func (n *network) sendPresence(c *contact, status string) {
	typ := ""
	if status != "" || !c.online {
		typ = "unavailable"
	}
	// From the contact's JID as the roster has it (Host.Contact lower-cases
	// it), whatever the case of the nick the server gave.
	p := stanza.Presence(strings.ToLower(n.userJID(c.nick)), n.user, typ)
	switch {
	case status != "":
		p.AddText("status", status)
	case typ == "" && c.away:
		p.AddText("show", "away")
		if c.awayMsg != "" {
			p.AddText("status", c.awayMsg)
		}
	}
	// A presence lost while the XMPP stream is down is not retried: the
	// user's presence learnt on the next stream (UserOnline) sends them
	// all again.
	n.b.host.Send(p)
}

// watchLost ends the watching of a connection: the contacts shown
// available or away are sent unavailable, and their state is unknown
// until the next connection tells it.
func (n *network) watchLost() {
	n.stopPoll()
	n.watch.started = false
	n.watch.ison, n.watch.userhost = nil, nil
	for _, c := range n.watch.contacts {
		if c.known && c.online && c.shown != "" && c.shown != "unavailable" {
			n.sendPresence(c, "The gateway is not connected to "+n.server+".")
		}
		*c = contact{nick: c.nick, shown: "unavailable"}
	}
}

// contactOf returns the user's network for server and its contact nick,
// or nil.
func (b *Bridge) contactOf(user, server, nick string) (*network, *contact) {
	n := b.networkOf(user, server)
	if n == nil {
		return nil, nil
	}
	return n, n.watched(nick)
}

// contactPresence answers the presence a user sends an IRC user's JID:
// subscriptions are approved (and the current presence follows), a probe
// gets the presence the gateway knows, unavailable when it knows none.
func (b *Bridge) contactPresence(u string, st *xmlel.Element, server, nick string) {
	from, to := st.Attr("to"), stanza.Bare(st.Attr("from"))
	switch st.Attr("type") {
	case "subscribe":
		b.host.Send(stanza.Presence(from, to, "subscribed"))
	case "unsubscribe":
		b.host.Send(stanza.Presence(from, to, "unsubscribed"))
		return
	case "probe":
	default:
		return
	}
	n, c := b.contactOf(u, server, nick)
	if n == nil || c == nil || !c.known {
		if st.Attr("type") == "probe" {
			b.host.Send(stanza.Presence(from, to, "unavailable"))
		}
		return
	}
	n.showContact(c, true)
}

// UserOnline implements bridges.UserPresence: a user who comes online
// is sent the presence of the IRC contacts known on each network.
func (b *Bridge) UserOnline(ctx context.Context, user string) {
	for _, n := range b.networksOf(user) {
		for _, c := range n.watch.contacts {
			n.showContact(c, true)
		}
	}
}

// UserOffline implements bridges.UserPresence: the contacts stay watched
// (the networks stay connected while their rooms do).
func (b *Bridge) UserOffline(ctx context.Context, user string) {}

// unwatchAll stops watching the user's contacts on every network (the
// user unregistered: the gateway keeps no contacts for them).
func (b *Bridge) unwatchAll(user string) {
	for _, n := range b.networksOf(user) {
		var mon []*contact
		for _, c := range n.watch.contacts {
			if c.monitored {
				mon = append(mon, c)
			}
		}
		if n.c != nil && n.registered {
			n.sendBatches("MONITOR", mon, maxLine-2-len("MONITOR - "), 0, func(nicks []string) []string {
				return []string{"-", strings.Join(nicks, ",")}
			}, nil)
		}
		n.stopPoll()
		n.watch = watchState{started: n.watch.started}
	}
}
