package irc

import (
	"context"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	irc "gopkg.in/irc.v4"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
	"passerelle/store"
)

// defaultHistory is how many archived messages a join gets without a
// <history/> element.
const defaultHistory = 20

// chanSettings are a user's settings for one channel.
type chanSettings = store.IRCChannelSettings

func (b *Bridge) loadChanSettings(ctx context.Context, user, server, name string) (cs chanSettings, err error) {
	err = b.withKey(ctx, server, name, func(key string) error {
		cs, err = b.db.IRCChannelSettings(ctx, user, server, key)
		return err
	})
	return cs, err
}

// saveChanSettings stores a channel's settings; a new row (or one from
// before the spelling was kept) takes name as the channel's spelling.
func (b *Bridge) saveChanSettings(ctx context.Context, user, server, name string, cs chanSettings) error {
	return b.withKey(ctx, server, name, func(key string) error {
		return b.db.PutIRCChannelSettings(ctx, user, server, key, name, cs)
	})
}

// rememberNick stores the nick and the channel's spelling for rejoining.
func (b *Bridge) rememberNick(ctx context.Context, user, server, name, nick string) {
	err := b.withKey(ctx, server, name, func(key string) error {
		return b.db.PutIRCChannelNick(ctx, user, server, key, name, nick)
	})
	if err != nil {
		b.host.Log().Warn("cannot store the irc nick of a channel", "user", user, "err", err)
	}
}

// channelCommand is "configure" on a channel JID.
func (b *Bridge) channelCommand(ctx context.Context, u *bridges.User, a mapping.IRCAddr, f *form.Form) (*bridges.CommandResult, error) {
	cs, err := b.loadChanSettings(ctx, u.JID, a.Server, a.Name)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return &bridges.CommandResult{Form: &form.Form{Type: "form", Title: "Configure " + a.Name + " on " + a.Server,
			Fields: []form.Field{
				{Var: "persistent", Type: form.Boolean, Label: "Stay in the channel when all your clients leave", Values: []string{strconv.FormatBool(cs.Persistent)}},
				{Var: "record_history", Type: form.Boolean, Label: "Keep the channel's history", Values: []string{strconv.FormatBool(cs.Record)}},
			}}}, nil
	}
	for _, fl := range []struct {
		name string
		dst  *bool
	}{{"persistent", &cs.Persistent}, {"record_history", &cs.Record}} {
		if v, ok := f.Field(fl.name); ok && v.Value() != "" {
			if *fl.dst, err = form.ParseBool(v.Value()); err != nil {
				return nil, stanza.Errorf("not-acceptable", fl.name+": "+err.Error())
			}
		}
	}
	if err := b.saveChanSettings(ctx, u.JID, a.Server, a.Name, cs); err != nil {
		return nil, err
	}
	if n := b.networkOf(u.JID, a.Server); n != nil {
		if ch := n.chans[n.fold(a.Name)]; ch != nil {
			ch.settings = cs
			if !cs.Persistent && len(ch.resources) == 0 && len(ch.pending) == 0 {
				n.part(ch)
			} else {
				n.syncWindows(ctx)
			}
		}
	}
	return &bridges.CommandResult{Done: true, Note: "Settings for " + a.Name + " saved."}, nil
}

// record archives a channel message when the channel keeps history. It
// returns the stanza-id: the archive id, or a random one when not archived.
// The other users' copies of a line take the id of the first archived
// (see lineLog), and the other instances' copies that of the one that
// archived it first (see store.ArchiveIRCLine). parts, for the user's
// own message, are the IRC lines it is sent as; nil for a line from IRC.
// When this connection archives the line, its copies are queued with it,
// in one transaction (store.IRCLine.Echo), and queued is true: the
// caller sends them (sendCopies) without queuing them again.
//
// The copies of a line from IRC for the other users whose connection
// here shows the channel (lineLog.views) are queued in that transaction
// too, built by other (nil: none are), so that a line costs one write
// rather than one for each user. When the line reaches their connection,
// it drops from copies those that were queued so (see lineLog.covered):
// copies is then left with those of the resources that joined since, or
// all of them when none was. When queued, copies holds all the copies
// queued, the others' too.
//
// own, when not nil, is the user's message as recorded before it was
// sent (expectOwn); parts are then its parts.
//
// release, when not nil, is called once the caller queued copies: the
// line was matched (see lineLog.done).
func (n *network) record(ctx context.Context, ch *channel, nick, body string, parts []string, copies *roomCopies, own *ownLines, other copyFunc) (sid string, queued bool, release func()) {
	if !ch.settings.Record {
		return stanza.NewID(), false, nil
	}
	var a *archived
	var mine *sharedLine // the line, archived by another connection
	var id int64
	err := n.b.withKey(ctx, n.server, ch.name, func(key string) error {
		c := lineChan{n.server, key}
		var lines []*sharedLine
		switch {
		case own != nil && own.c == c:
			// Counted busy as it was recorded (ownLines).
			a, lines, parts = own.a, own.lines, own.parts
			release = func() { n.b.lines.done(c, n.user) }
		case own != nil:
			// The keys changed since (a new case mapping): the lines
			// recorded are left to expire, unmatched.
			n.b.lines.withdraw(own, n.user)
			other = nil
			fallthrough
		case parts != nil:
			a, lines = n.b.lines.ownLines(c, n.user, nick, parts, false, time.Now())
			n.b.lines.busyWith(c, n.user)
			release = func() { n.b.lines.done(c, n.user) }
		default:
			l, first := n.b.lines.claimLine(c, n.user, nick, body, time.Now())
			release = func() { n.b.lines.done(c, n.user) } // claimLine counted it
			if !first {
				a, mine = l.archived, l
				return nil
			}
			a, lines = l.archived, []*sharedLine{l}
		}
		last, joined := n.b.lines.known(c)
		line := store.IRCLine{Server: n.server, Channel: key, Nick: nick, Body: body, Stamp: a.at,
			Lines: parts, After: last, Since: a.at.Add(-lineTTL), Joined: joined}
		var views map[string]*roomView
		var skip map[string]bool
		all := copies
		if _, shown := n.views[n.fold(ch.name)]; other != nil && shown && parts == nil {
			// Only a connection that shows the channel itself: it hides
			// those it sees leave (hideGone).
			views = n.b.lines.viewsOf(c)
			skip = n.b.lines.includable(c, views, lines[0].seq, n.user, n.fold)
			all = n.othersCopies(copies, views, skip, nick, other)
		}
		if len(all.msgs) > 0 {
			line.Echo = all.echo(n.b.host.Domain())
		}
		l, err := n.b.db.ArchiveIRCLine(ctx, line)
		if err == nil {
			n.b.lines.archived(c, nick, l, parts == nil, a)
		}
		id, queued = l.ID, l.Queued
		if queued && len(all.msgs) > len(copies.msgs) {
			n.b.lines.queuedWith(lines, n.user, views, skip)
			*copies = *all // all were queued: the caller names and sends them
		}
		if queued {
			// This user's copies are queued: the others may queue the
			// next line's for it (includable).
			n.b.lines.done(c, n.user)
			release = nil
		}
		a.finish(l.ID, err)
		return err
	})
	if err != nil {
		n.b.host.Log().Warn("cannot archive an irc message", "user", n.user, "err", err)
		return stanza.NewID(), false, release
	}
	if queued {
		return strconv.FormatInt(id, 10), true, nil // its copies are queued: not waited for
	}
	// Waited for outside withKey: the connection archiving it may need
	// the keys' lock again.
	id, err = a.wait(ctx)
	if err != nil {
		return stanza.NewID(), false, release // the connection archiving it said why
	}
	if mine != nil {
		if v := n.b.lines.covered(mine, n.user, n.fold); v != nil && v.room == ch.jid(n) {
			copies.drop(v.fulls)
		}
	}
	return strconv.FormatInt(id, 10), false, release
}

// copyFunc builds the copy of a line for the resource full of a user
// whose clients know the room as room.
type copyFunc func(room, full string) *xmlel.Element

// othersCopies returns copies followed by the copies, built by other,
// for the users shown in views but this connection's, those in skip
// (see lineLog.includable) and those whose nick is nick (they said it,
// from another client: their connection shows it as their own; see
// lineLog.covered).
func (n *network) othersCopies(copies *roomCopies, views map[string]*roomView, skip map[string]bool, nick string, other copyFunc) *roomCopies {
	if len(views) <= len(skip)+1 {
		return copies
	}
	all := &roomCopies{msgs: slices.Clip(copies.msgs), sids: slices.Clip(copies.sids)}
	folded := n.fold(nick)
	for user, v := range views {
		if user == n.user || skip[user] || n.fold(v.nick) == folded {
			continue
		}
		for _, full := range v.fulls {
			all.add(other(v.room, full), v.room)
		}
	}
	return all
}

// syncWindows opens the user's archive window (see store.OpenIRCWindow)
// on each channel that keeps history and that the connection is in (its
// JOIN came back), and closes the others: the channels left, parted or
// lost with the connection. A window that cannot be opened or closed is
// tried again at the next call (each IRC message calls it).
func (n *network) syncWindows(ctx context.Context) {
	in := func(ch *channel) bool { return ch != nil && n.c != nil && ch.settings.Record && ch.state.joined() }
	for key, ch := range n.chans {
		if _, open := n.windows[key]; open || !in(ch) {
			continue
		}
		err := n.b.withKey(ctx, n.server, ch.name, func(k string) error {
			newest, err := n.b.db.OpenIRCWindow(ctx, n.user, n.server, k)
			if err == nil {
				n.b.lines.joined(lineChan{n.server, k}, n.user, newest)
			}
			return err
		})
		if err != nil {
			n.b.host.Log().Warn("cannot open an irc archive window: the channel's lines are archived, but this user will not see them", "user", n.user, "channel", ch.name, "err", err)
			continue
		}
		if n.windows == nil {
			n.windows = map[string]string{}
		}
		n.windows[key] = ch.name
	}
	for key, name := range n.windows {
		if in(n.chans[key]) {
			continue
		}
		if err := n.closeWindow(ctx, name, false); err != nil {
			n.b.host.Log().Warn("cannot close an irc archive window: this user may see lines archived after they left", "user", n.user, "channel", name, "err", err)
			continue
		}
		delete(n.windows, key)
	}
	n.publish(ctx)
}

// publish shows the bridge's lineLog what this connection shows of each
// channel whose window is open (lineLog.show): the room's JID, its nick
// and the resources in the room, while the channel is shown and keeps
// history. A change the lineLog has not seen yet costs nothing but the
// connection's own copies (see record).
func (n *network) publish(ctx context.Context) {
	for key, name := range n.windows {
		ch := n.chans[key]
		var v *roomView
		if ch != nil && n.c != nil && ch.settings.Record && ch.state.shown() && len(ch.resources) > 0 {
			if n.views[key].view.shows(n, ch) {
				continue
			}
			v = &roomView{room: ch.jid(n), nick: n.nick, fulls: make([]string, 0, len(ch.resources))}
			for full := range ch.resources {
				v.fulls = append(v.fulls, full)
			}
			slices.Sort(v.fulls)
		}
		if v.equal(n.views[key].view) {
			continue
		}
		n.b.withKey(ctx, n.server, name, func(k string) error {
			c := lineChan{n.server, k}
			if old := n.views[key]; old.view != nil && old.c != c {
				n.b.lines.show(old.c, n.user, nil, n.fold)
			}
			n.b.lines.show(c, n.user, v, n.fold)
			if v == nil {
				delete(n.views, key)
			} else {
				if n.views == nil {
					n.views = map[string]shownView{}
				}
				n.views[key] = shownView{c, v}
			}
			return nil
		})
	}
	for key, sv := range n.views {
		if _, open := n.windows[key]; !open {
			n.b.lines.show(sv.c, n.user, nil, n.fold)
			delete(n.views, key)
		}
	}
}

// joining tells the lineLog that this connection sends a JOIN of ch
// (lineLog.joining), when ch keeps history.
func (n *network) joining(ch *channel) {
	if !ch.settings.Record {
		return
	}
	n.b.withKey(n.b.runCtx, n.server, ch.name, func(key string) error {
		n.b.lines.joining(lineChan{n.server, key}, n.user, time.Now())
		return nil
	})
}

// shows reports whether v is what n shows of ch (without building it).
func (v *roomView) shows(n *network, ch *channel) bool {
	if v == nil || v.room != ch.jid(n) || v.nick != n.nick || len(v.fulls) != len(ch.resources) {
		return false
	}
	for _, full := range v.fulls {
		if ch.resources[full] == nil {
			return false
		}
	}
	return true
}

// hideGone hides from the lineLog, as this connection sees it, the view
// of a connection here whose nick leaves a channel (PART, KICK), the
// server (QUIT) or changes (NICK): the lines after are not queued for it
// by others, in case this connection archives them before its own
// connection has seen it go.
func (n *network) hideGone(m *irc.Message) {
	var nick string
	var names []string
	switch m.Command {
	case "PART":
		nick, names = m.Name, strings.Split(m.Param(0), ",")
	case "KICK":
		nick, names = m.Param(1), []string{m.Param(0)}
	case "QUIT", "NICK":
		nick = m.Name
	default:
		return
	}
	if nick == "" || n.fold(nick) == n.fold(n.nick) {
		return // its own: publish hides it
	}
	// Every channel here, shown yet or not: one not shown yet may be by
	// the time its next line comes.
	for key, ch := range n.chans {
		if !ch.settings.Record || (names != nil && !slices.ContainsFunc(names, func(name string) bool { return n.fold(name) == key })) {
			continue
		}
		n.b.withKey(n.b.runCtx, n.server, ch.name, func(k string) error {
			n.b.lines.hideNick(lineChan{n.server, k}, nick, n.fold)
			return nil
		})
	}
}

// shownView is a view a connection showed (publish), and where.
type shownView struct {
	c    lineChan
	view *roomView
}

// closeWindow closes the user's window on the channel name and, once
// closed (or with gone, whatever the store said: the network is
// forgotten), records that their connection left it (see lineLog.left).
func (n *network) closeWindow(ctx context.Context, name string, gone bool) error {
	return n.b.withKey(ctx, n.server, name, func(k string) error {
		err := n.b.db.CloseIRCWindow(ctx, n.user, n.server, k)
		if err == nil || gone {
			n.b.lines.left(lineChan{n.server, k}, n.user)
		}
		return err
	})
}

// historyReq is the <history/> element of a join.
type historyReq struct {
	maxStanzas int // -1: no limit
	maxChars   int // -1: no limit
	since      time.Time
}

func parseHistory(x *xmlel.Element) historyReq {
	h := historyReq{maxStanzas: defaultHistory, maxChars: -1}
	el := x.Child("", "history")
	if el == nil {
		return h
	}
	if v, err := strconv.Atoi(el.Attr("maxstanzas")); err == nil && v >= 0 {
		h.maxStanzas = v
	} else {
		h.maxStanzas = 1000
	}
	if v, err := strconv.Atoi(el.Attr("maxchars")); err == nil && v >= 0 {
		h.maxChars = v
	}
	if v, err := strconv.Atoi(el.Attr("seconds")); err == nil && v >= 0 {
		h.since = time.Now().Add(-time.Duration(v) * time.Second)
	}
	if t, err := time.Parse(time.RFC3339, el.Attr("since")); err == nil && t.After(h.since) {
		h.since = t
	}
	return h
}

// sendHistory replays the archive to one resource, oldest first, with
// XEP-0203 delays.
func (n *network) sendHistory(ctx context.Context, ch *channel, full string, h historyReq) {
	if h.maxStanzas == 0 || h.maxChars == 0 {
		return
	}
	msgs, err := n.history(ctx, ch, full, h)
	if err != nil {
		n.b.host.Log().Warn("cannot read the irc history", "user", n.user, "err", err)
		return
	}
	for i := len(msgs) - 1; i >= 0; i-- {
		n.b.host.Send(msgs[i])
	}
}

// history reads the messages sendHistory replays, newest first.
func (n *network) history(ctx context.Context, ch *channel, full string, h historyReq) ([]*xmlel.Element, error) {
	q := store.IRCArchiveQuery{User: n.user, Server: n.server, Start: &h.since, Last: true, Max: h.maxStanzas}
	if q.Max < 0 {
		q.Max = math.MaxInt
	}
	var found []store.IRCMessage
	err := n.b.withKey(ctx, n.server, ch.name, func(key string) (err error) {
		q.Channel = key
		found, _, err = n.b.db.QueryIRCArchive(ctx, q)
		return err
	})
	if err != nil {
		return nil, err
	}
	var msgs []*xmlel.Element
	chars := 0
	for i := len(found) - 1; i >= 0; i-- {
		m := found[i]
		msg := stanza.Message(ch.jid(n)+"/"+m.Nick, full, "groupchat", stanza.NewID(), m.Body)
		msg.Add(xmlel.New(stanza.NSDelay, "delay").SetAttr("from", ch.jid(n)).
			SetAttr("stamp", m.Stamp.UTC().Format("2006-01-02T15:04:05.000Z")))
		msg.Add(xmlel.New(stanza.NSStanzaID, "stanza-id").SetAttr("id", strconv.FormatInt(m.ID, 10)).SetAttr("by", ch.jid(n)))
		chars += len(msg.String())
		if h.maxChars >= 0 && chars > h.maxChars {
			break
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// restore rejoins the persistent channels after a start: those of the
// users this instance holds (see bridges.Owner).
func (b *Bridge) restore(ctx context.Context) {
	all, err := b.db.PersistentIRCChannels(ctx)
	if err != nil {
		b.host.Log().Error("cannot read the persistent irc channels", "err", err)
		return
	}
	var users []string
	seen := map[string]bool{}
	for _, r := range all {
		if !seen[r.User] && b.host.Allowed(r.User) {
			seen[r.User] = true
			users = append(users, r.User)
		}
	}
	if len(users) == 0 {
		return
	}
	owned, err := b.host.Own(ctx, users)
	if err != nil {
		b.host.Log().Error("cannot hold the users of the persistent irc channels: those not held are left to other instances", "err", err, "held", len(owned), "users", len(users))
	}
	b.rejoin(all, owned)
}

// Acquired implements bridges.Owner: the persistent channels of users
// are rejoined.
func (b *Bridge) Acquired(ctx context.Context, users []string) {
	all, err := b.db.PersistentIRCChannels(ctx, users...)
	if err != nil {
		b.host.Log().Error("cannot read the persistent irc channels of users taken over", "err", err, "users", len(users))
		return
	}
	b.rejoin(all, users)
}

// Released implements bridges.Owner: the user's connections are closed
// (QUIT), and the user's clients told they left the rooms.
func (b *Bridge) Released(ctx context.Context, user string) {
	for _, n := range b.networksOf(user) {
		b.host.Log().Info("irc connection closed: another instance of the gateway takes the user over", "user", user, "server", n.server)
		n.failWith(stanza.Errorf("service-unavailable", "The gateway moved your connection to "+n.server+" to another of its instances; join again."))
	}
}

// rejoin rejoins the channels of all whose user is one of users, on
// each user's goroutine.
func (b *Bridge) rejoin(all []store.IRCRejoin, users []string) {
	only := make(map[string]bool, len(users))
	for _, u := range users {
		only[u] = true
	}
	count := 0
	for _, r := range all {
		if !only[r.User] || !b.host.Allowed(r.User) {
			continue
		}
		count++
		b.post(r.User, func(ctx context.Context) {
			u := &bridges.User{JID: r.User}
			if reg, err := b.host.Registration(ctx, r.User); err == nil {
				u.Registration = reg
			}
			n, err := b.network(ctx, u, r.Server, r.Nick)
			if err != nil {
				b.host.Log().Error("cannot rejoin a persistent irc channel", "user", r.User, "err", err)
				return
			}
			n.join(ctx, r.Name, "", r.Nick, historyReq{}, "")
		})
	}
	if count > 0 {
		b.host.Log().Info("rejoining persistent irc channels", "count", count)
	}
}
