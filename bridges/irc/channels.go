package irc

import (
	"context"
	"sort"
	"strings"
	"time"

	irc "gopkg.in/irc.v4"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// channel is a channel a user's resources joined (or are joining).
type channel struct {
	name      string
	pending   map[string]string // full JID → requested nick, waiting for the join to complete
	resources map[string]*resource
	state     chanState
	members   roster  // sorted by folded nick
	before    *roster // members before a reconnection, for the diff; set while rejoining a room that was shown
	topic     string
	settings  chanSettings
	key       string                // channel key (+k), from the join's <password/>
	joinGen   int                   // counts JOINs sent, for their timeouts
	hist      map[string]historyReq // history asked for by pending joins
	roomJID   string                // the room's bare JID, built once
}

type resource struct{ nick string } // the nick the resource asked for

type member struct {
	nick  string
	modes string // prefix modes held, e.g. "ov"
}

// live reports whether membership changes are shown to the resources.
func (ch *channel) live() bool { return ch.state.shown() && !ch.state.listing() }

func (ch *channel) jid(n *network) string {
	if ch.roomJID == "" {
		ch.roomJID = mapping.IRCAddr{Kind: mapping.IRCChannel, Name: ch.name, Server: n.server}.Local() + "@" + n.b.host.Domain()
	}
	return ch.roomJID
}

// roleAffiliation maps the highest prefix mode to XEP-0045 role and
// affiliation.
func roleAffiliation(modes string) (role, aff string) {
	switch {
	case strings.ContainsAny(modes, "qa"):
		if strings.ContainsRune(modes, 'q') {
			return "moderator", "owner"
		}
		return "moderator", "owner"
	case strings.ContainsRune(modes, 'o'):
		return "moderator", "admin"
	case strings.ContainsRune(modes, 'h'):
		return "moderator", "member"
	case strings.ContainsRune(modes, 'v'):
		return "participant", "member"
	}
	return "participant", "none"
}

func mucUserX(m member, codes ...string) *xmlel.Element {
	role, aff := roleAffiliation(m.modes)
	x := xmlel.New(stanza.NSMUCUser, "x")
	x.Add(xmlel.New(stanza.NSMUCUser, "item").SetAttr("affiliation", aff).SetAttr("role", role))
	for _, c := range codes {
		x.Add(xmlel.New(stanza.NSMUCUser, "status").SetAttr("code", c))
	}
	return x
}

func presenceError(from, to string, e *stanza.Error) *xmlel.Element {
	p := stanza.Presence(from, to, "error")
	p.Add(xmlel.New(stanza.NSMUC, "x"))
	return p.Add(e.Element())
}

// occupantPresence is the presence of member m in ch, for resource full.
func (n *network) occupantPresence(ch *channel, m member, full string, codes ...string) *xmlel.Element {
	p := stanza.Presence(ch.jid(n)+"/"+m.nick, full, "")
	if n.fold(m.nick) == n.fold(n.nick) {
		codes = append([]string{"110"}, codes...)
	}
	return p.Add(mucUserX(m, codes...))
}

// broadcast sends a presence built per resource to every resource in ch.
func (n *network) broadcast(ch *channel, build func(full string) *xmlel.Element) {
	for full := range ch.resources {
		n.b.host.Send(build(full))
	}
}

// join handles an available presence to room/nick from full; an empty
// full joins without a resource (a persistent channel after a restart).
func (n *network) join(ctx context.Context, name, full, reqNick string, hist historyReq, pw string) {
	key := n.fold(name)
	ch := n.chans[key]
	if ch == nil {
		ch = &channel{name: name, resources: map[string]*resource{}, members: roster{cm: n.casemap}}
		cs, err := n.b.loadChanSettings(ctx, n.user, n.server, name)
		if err != nil {
			n.b.host.Log().Warn("cannot read irc channel settings", "user", n.user, "err", err)
		}
		ch.settings = cs
		n.chans[key] = ch
	}
	if ch.key == "" {
		ch.key = pw
	}
	if full != "" {
		n.b.rememberNick(ctx, n.user, n.server, name, reqNick)
		if _, in := ch.resources[full]; in {
			return
		}
		if ch.state.shown() {
			ch.resources[full] = &resource{nick: reqNick}
			n.replay(ctx, ch, full, reqNick, hist)
			return
		}
		if ch.pending == nil {
			ch.pending, ch.hist = map[string]string{}, map[string]historyReq{}
		}
		ch.pending[full] = reqNick
		ch.hist[full] = hist
	}
	if n.registered && !ch.state.joinSent() {
		ch.sentJoin()
		n.joining(ch)
		params := []string{ch.name}
		if ch.key != "" {
			params = append(params, ch.key)
		}
		if err := n.send("JOIN", params...); err != nil {
			n.b.host.Send(presenceError(ch.jid(n)+"/"+reqNick, full, stanza.Errorf("recipient-unavailable", "Cannot join: "+err.Error())))
			delete(ch.pending, full)
		} else {
			n.watchJoin(ch)
		}
	}
}

// flushJoins sends the joins queued before registration, batched
// ("JOIN #a,#b key1,key2": channels with keys first).
func (n *network) flushJoins() {
	var chans []*channel
	for _, ch := range n.chans {
		if !ch.state.joinSent() {
			ch.sentJoin()
			n.joining(ch)
			chans = append(chans, ch)
		}
	}
	sort.Slice(chans, func(i, j int) bool {
		if (chans[i].key != "") != (chans[j].key != "") {
			return chans[i].key != ""
		}
		return chans[i].name < chans[j].name
	})
	for len(chans) > 0 {
		var names, keys []string
		size := 0
		for len(chans) > 0 && (len(names) == 0 || size+len(chans[0].name)+len(chans[0].key)+2 < 400) {
			size += len(chans[0].name) + len(chans[0].key) + 2
			names = append(names, chans[0].name)
			if chans[0].key != "" {
				keys = append(keys, chans[0].key)
			}
			chans = chans[1:]
		}
		params := []string{strings.Join(names, ",")}
		if len(keys) > 0 {
			params = append(params, strings.Join(keys, ","))
		}
		if err := n.send("JOIN", params...); err != nil {
			n.b.host.Log().Warn("cannot send a JOIN", "user", n.user, "server", n.server, "err", err)
		}
		for _, name := range names {
			n.watchJoin(n.chans[n.fold(name)])
		}
	}
}

// replay sends the whole room to one resource: the other occupants, its
// own presence, then the subject.
func (n *network) replay(ctx context.Context, ch *channel, full, reqNick string, hist historyReq) {
	for m := range ch.members.all() {
		if compareFold(n.casemap, m.nick, n.nick) != 0 {
			n.b.host.Send(n.occupantPresence(ch, m, full))
		}
	}
	me, ok := ch.members.get(n.nick)
	if !ok {
		me = member{nick: n.nick}
	}
	codes := []string{"100"}
	if reqNick != n.nick {
		codes = append(codes, "210")
	}
	n.b.host.Send(n.occupantPresence(ch, me, full, codes...))
	n.sendHistory(ctx, ch, full, hist)
	subj := stanza.New("message", ch.jid(n), full, "groupchat", stanza.NewID())
	subj.AddText("subject", xmlel.CleanText(ch.topic))
	n.b.host.Send(subj)
}

// leave handles an unavailable presence to the room from full.
func (n *network) leave(name, full string) {
	ch := n.chans[n.fold(name)]
	if ch == nil {
		return
	}
	if req, ok := ch.pending[full]; ok {
		delete(ch.pending, full)
		n.b.host.Send(stanza.Presence(ch.jid(n)+"/"+req, full, "unavailable"))
	}
	if _, ok := ch.resources[full]; ok {
		delete(ch.resources, full)
		p := stanza.Presence(ch.jid(n)+"/"+n.nick, full, "unavailable")
		me, ok := ch.members.get(n.nick)
		if !ok {
			me = member{nick: n.nick}
		}
		n.b.host.Send(p.Add(mucUserX(me, "110")))
	}
	if len(ch.resources) == 0 && len(ch.pending) == 0 && !ch.settings.Persistent {
		n.part(ch)
	}
}

// part leaves ch on IRC and forgets it. The user's archive window on
// it closes first: the lines said once the PART is out are not theirs
// (they were archived there when the close came after them).
func (n *network) part(ch *channel) {
	delete(n.chans, n.fold(ch.name))
	ctx, cancel := bridges.RecordContext(n.b.runCtx)
	defer cancel()
	n.syncWindows(ctx)
	if ch.state.joinSent() && n.c != nil {
		n.send("PART", ch.name)
	}
	n.maybeClose()
}

// onJoin handles a JOIN.
func (n *network) onJoin(m *irc.Message) {
	for _, name := range strings.Split(m.Param(0), ",") {
		ch := n.chans[n.fold(name)]
		if ch == nil {
			continue
		}
		if n.fold(m.Name) == n.fold(n.nick) {
			ch.selfJoined()
			ch.members = newRoster(n.casemap, member{nick: n.nick})
			if m.User != "" {
				n.user0 = m.User + "@" + m.Host
			}
			continue
		}
		// The roster keeps an interned copy, not m.Name, a slice of the
		// whole line.
		mem := member{nick: m.Name}
		ch.members.put(mem)
		if ch.live() {
			n.broadcast(ch, func(full string) *xmlel.Element { return n.occupantPresence(ch, mem, full) })
		}
	}
}

// onNames handles 353 (RPL_NAMREPLY).
func (n *network) onNames(m *irc.Message) {
	if len(m.Params) < 4 {
		return
	}
	ch := n.chans[n.fold(m.Params[2])]
	if ch == nil || !ch.state.listing() {
		return
	}
	for _, e := range strings.Fields(m.Trailing()) {
		modes, e := n.prefixModes(e)
		if nick, _, _ := strings.Cut(e, "!"); nick != "" {
			ch.members.put(member{nick: nick, modes: modes}) // interned, not a slice of the line
		}
	}
}

// onEndOfNames handles 366: the join is complete; answer the waiting
// resources.
func (n *network) onEndOfNames(ctx context.Context, m *irc.Message) {
	ch := n.chans[n.fold(m.Param(1))]
	if ch == nil {
		return
	}
	listed, rejoined := ch.namesEnded()
	if !listed {
		return
	}
	if rejoined {
		n.resync(ch)
		if n.allJoined() {
			n.prevNick = ""
		}
	}
	for full, req := range ch.pending {
		ch.resources[full] = &resource{nick: req}
		n.replay(ctx, ch, full, req, ch.hist[full])
	}
	// The waiting joins are answered; the maps are made again by the
	// next one.
	ch.pending, ch.hist = nil, nil
}

// onJoinError handles the numerics refusing a JOIN.
func (n *network) onJoinError(ctx context.Context, m *irc.Message) {
	ch := n.chans[n.fold(m.Param(1))]
	if ch == nil || ch.state.joined() {
		n.status(ctx, decodeText(m.Trailing()))
		return
	}
	cond := map[string]string{"403": "item-not-found", "405": "resource-constraint", "471": "service-unavailable",
		"473": "registration-required", "474": "forbidden", "475": "not-authorized", "477": "registration-required"}[m.Command]
	if cond == "" {
		cond = "not-allowed"
	}
	e := stanza.Errorf(cond, "Cannot join "+ch.name+": "+decodeText(m.Trailing()))
	for full, req := range ch.pending {
		n.b.host.Send(presenceError(ch.jid(n)+"/"+req, full, e))
	}
	delete(n.chans, n.fold(ch.name))
	n.maybeClose()
}

// onPart handles a PART.
func (n *network) onPart(m *irc.Message) {
	for _, name := range strings.Split(m.Param(0), ",") {
		ch := n.chans[n.fold(name)]
		if ch == nil {
			continue
		}
		if n.fold(m.Name) == n.fold(n.nick) {
			// Parted by the server (or another client): we are out.
			n.removeAll(ch, "")
			continue
		}
		n.memberGone(ch, m.Name, func(p *xmlel.Element) {
			if r := m.Param(1); r != "" {
				p.AddText("status", decodeText(r))
			}
		})
	}
}

// memberGone sends an unavailable presence for nick.
func (n *network) memberGone(ch *channel, nick string, decorate func(*xmlel.Element), codes ...string) {
	mem, ok := ch.members.remove(nick)
	if !ok {
		return
	}
	if !ch.live() {
		return
	}
	n.broadcast(ch, func(full string) *xmlel.Element {
		p := stanza.Presence(ch.jid(n)+"/"+mem.nick, full, "unavailable")
		p.Add(mucUserX(mem, codes...))
		if decorate != nil {
			decorate(p)
		}
		return p
	})
}

// removeAll takes every resource out of ch (we were kicked or parted).
func (n *network) removeAll(ch *channel, status string, codes ...string) {
	me, ok := ch.members.get(n.nick)
	if !ok {
		me = member{nick: n.nick}
	}
	n.broadcast(ch, func(full string) *xmlel.Element {
		p := stanza.Presence(ch.jid(n)+"/"+n.nick, full, "unavailable")
		p.Add(mucUserX(me, append([]string{"110"}, codes...)...))
		if status != "" {
			p.AddText("status", status)
		}
		return p
	})
	delete(n.chans, n.fold(ch.name))
	n.maybeClose()
}

// onQuit handles a QUIT.
func (n *network) onQuit(m *irc.Message) {
	for _, ch := range n.chans {
		n.memberGone(ch, m.Name, func(p *xmlel.Element) {
			if r := m.Param(0); r != "" {
				p.AddText("status", decodeText(r))
			}
		})
	}
}

// onKick handles a KICK: status 307 with the actor and reason.
func (n *network) onKick(m *irc.Message) {
	ch := n.chans[n.fold(m.Param(0))]
	if ch == nil {
		return
	}
	victim, reason := m.Param(1), decodeText(m.Param(2))
	decorate := func(x *xmlel.Element) {
		item := x.Child(stanza.NSMUCUser, "item")
		item.Add(xmlel.New(stanza.NSMUCUser, "actor").SetAttr("nick", m.Name))
		if reason != "" {
			item.AddText("reason", reason)
		}
	}
	if n.fold(victim) == n.fold(n.nick) {
		me := member{nick: n.nick}
		n.broadcast(ch, func(full string) *xmlel.Element {
			p := stanza.Presence(ch.jid(n)+"/"+n.nick, full, "unavailable")
			x := mucUserX(me, "110", "307")
			decorate(x)
			return p.Add(x)
		})
		delete(n.chans, n.fold(ch.name))
		n.maybeClose()
		return
	}
	mem, ok := ch.members.remove(victim)
	if !ok {
		return
	}
	n.broadcast(ch, func(full string) *xmlel.Element {
		p := stanza.Presence(ch.jid(n)+"/"+mem.nick, full, "unavailable")
		x := mucUserX(mem, "307")
		decorate(x)
		return p.Add(x)
	})
}

// onNick handles a NICK: 303 with the new nick, then the new presence.
func (n *network) onNick(m *irc.Message) {
	old, nw := m.Name, strings.Clone(m.Param(0))
	self := n.fold(old) == n.fold(n.nick)
	if self {
		n.nick = nw
	}
	for _, ch := range n.chans {
		prev, ok := ch.members.remove(old)
		if !ok {
			continue
		}
		mem := prev
		mem.nick = nw
		ch.members.put(mem)
		if !ch.live() {
			continue
		}
		n.broadcast(ch, func(full string) *xmlel.Element {
			p := stanza.Presence(ch.jid(n)+"/"+prev.nick, full, "unavailable")
			x := mucUserX(prev, "303")
			if self {
				x = mucUserX(prev, "303", "110")
			}
			x.Child(stanza.NSMUCUser, "item").SetAttr("nick", nw)
			return p.Add(x)
		})
		n.broadcast(ch, func(full string) *xmlel.Element { return n.occupantPresence(ch, mem, full) })
	}
}

// onMode handles channel MODE changes: prefix modes change roles; every
// change is shown as a message from the room.
func (n *network) onMode(ctx context.Context, m *irc.Message) {
	ch := n.chans[n.fold(m.Param(0))]
	if ch == nil || len(m.Params) < 2 {
		return
	}
	args := m.Params[2:]
	plus := true
	changed := map[string]member{}
	for _, c := range m.Params[1] {
		switch {
		case c == '+':
			plus = true
		case c == '-':
			plus = false
		case strings.ContainsRune(n.prefixMode, c):
			if len(args) == 0 {
				break
			}
			nick := args[0]
			args = args[1:]
			mem, ok := ch.members.get(nick)
			if !ok {
				break
			}
			if plus && !strings.ContainsRune(mem.modes, c) {
				mem.modes += string(c)
			} else if !plus {
				mem.modes = strings.ReplaceAll(mem.modes, string(c), "")
			}
			ch.members.put(mem)
			changed[n.fold(nick)] = mem
		case strings.ContainsRune("beIkfl", c) && (plus || strings.ContainsRune("beIk", c)):
			if len(args) > 0 {
				args = args[1:]
			}
		}
	}
	if !ch.live() {
		return
	}
	for _, mem := range changed {
		n.broadcast(ch, func(full string) *xmlel.Element { return n.occupantPresence(ch, mem, full) })
	}
	text := "Mode " + ch.name + " [" + strings.Join(m.Params[1:], " ") + "] by " + m.Name
	n.roomMessage(ctx, ch, "", text, nil)
}

// onTopic handles TOPIC and 332.
func (n *network) onTopic(ctx context.Context, ch *channel, by, topic string) {
	old := ch.topic
	ch.topic = strings.Clone(decodeText(stripFormatting(topic))) // not a slice of the line
	if !ch.state.shown() || (ch.state.listing() && old == ch.topic) {
		return
	}
	for full := range ch.resources {
		from := ch.jid(n)
		if by != "" {
			from += "/" + by
		}
		msg := stanza.New("message", from, full, "groupchat", stanza.NewID())
		msg.AddText("subject", xmlel.CleanText(ch.topic))
		if err := n.b.host.SendMessage(ctx, msg); err != nil {
			n.b.host.Log().Warn("cannot queue a subject", "user", n.user, "err", err)
		}
	}
}

// resync shows the differences between the room before a reconnection
// and after the rejoin, so that resources see no duplicate presences.
func (n *network) resync(ch *channel) {
	if prev := n.prevNick; prev != "" && n.fold(prev) != n.fold(n.nick) {
		// We came back under another nick: a nick change (303).
		me, ok := ch.before.remove(prev)
		if !ok {
			me = member{nick: prev}
		}
		n.broadcast(ch, func(full string) *xmlel.Element {
			x := mucUserX(me, "303", "110")
			x.Child(stanza.NSMUCUser, "item").SetAttr("nick", n.nick)
			return stanza.Presence(ch.jid(n)+"/"+prev, full, "unavailable").Add(x)
		})
	}
	for gone := range ch.before.all() {
		if !ch.members.has(gone.nick) && compareFold(n.casemap, gone.nick, n.nick) != 0 {
			n.broadcast(ch, func(full string) *xmlel.Element {
				return stanza.Presence(ch.jid(n)+"/"+gone.nick, full, "unavailable").Add(mucUserX(gone))
			})
		}
	}
	for mem := range ch.members.all() {
		if old, ok := ch.before.get(mem.nick); !ok || old.modes != mem.modes || old.nick != mem.nick {
			n.broadcast(ch, func(full string) *xmlel.Element { return n.occupantPresence(ch, mem, full) })
		}
	}
	ch.before = nil
}

// allJoined reports whether every channel is joined again after a
// reconnection.
func (n *network) allJoined() bool {
	for _, ch := range n.chans {
		if ch.state != chanIn {
			return false
		}
	}
	return true
}

// watchJoin answers the resources waiting to join ch with an error if
// the server never answers the JOIN.
func (n *network) watchJoin(ch *channel) {
	if ch == nil || ch.state.shown() {
		return
	}
	ch.joinGen++
	gen := ch.joinGen
	time.AfterFunc(n.b.joinTimeout, func() {
		n.b.post(n.user, func(ctx context.Context) {
			if n.chans[n.fold(ch.name)] != ch || ch.joinGen != gen || ch.state.shown() || ch.state.joined() {
				return
			}
			e := stanza.Errorf("remote-server-timeout", n.server+" did not answer the join of "+ch.name+".")
			for full, req := range ch.pending {
				n.b.host.Send(presenceError(ch.jid(n)+"/"+req, full, e))
			}
			delete(n.chans, n.fold(ch.name))
			n.maybeClose()
		})
	})
}
