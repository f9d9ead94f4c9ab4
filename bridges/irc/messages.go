package irc

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	irc "gopkg.in/irc.v4"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// handle processes one message from the IRC server.
func (n *network) handle(ctx context.Context, m *irc.Message) {
	defer n.syncWindows(ctx)
	if label, ok := m.Tags["label"]; ok && n.labeledResponse(ctx, label, m) {
		return
	}
	if n.banReply(m) || n.whoisReply(ctx, m) || n.presenceReply(ctx, m) {
		return
	}
	n.hideGone(m)
	n.presenceEvent(m)
	switch m.Command {
	case "CAP":
		n.handleCap(ctx, m)
	case "001":
		n.welcome(ctx, m)
	case "005":
		if len(m.Params) > 2 {
			n.isupport(ctx, m)
		}
	case "433", "436", "432", "464", "465":
		switch {
		case !n.registered:
			n.registrationError(ctx, m)
		case m.Command == "464" || m.Command == "465":
			n.status(ctx, decodeText(m.Trailing()))
		default:
			n.nickError(m)
		}
	case "AUTHENTICATE":
		n.authenticate(m)
	case "900", "901", "902", "903", "904", "905", "906", "907", "908":
		n.saslResult(ctx, m)
	case "JOIN":
		n.onJoin(m)
	case "353":
		n.onNames(m)
	case "366":
		n.onEndOfNames(ctx, m)
	case "332":
		if ch := n.chans[n.fold(m.Param(1))]; ch != nil {
			n.onTopic(ctx, ch, "", m.Trailing())
		}
	case "TOPIC":
		if ch := n.chans[n.fold(m.Param(0))]; ch != nil {
			n.onTopic(ctx, ch, m.Name, m.Param(1))
		}
	case "403", "405", "471", "473", "474", "475", "477":
		n.onJoinError(ctx, m)
	case "PART":
		n.onPart(m)
	case "QUIT":
		n.onQuit(m)
	case "KICK":
		n.onKick(m)
	case "NICK":
		n.onNick(m)
	case "MODE":
		n.onMode(ctx, m)
	case "PRIVMSG", "NOTICE":
		if len(m.Tags) > 0 && n.replayed(m) {
			return
		}
		n.onMessage(ctx, m)
	case "BATCH":
		n.onBatch(m)
	case "322":
		n.onList(m)
	case "323":
		n.onListEnd()
	case "401", "404":
		// No such nick / cannot send to channel: an error from that address.
		if len(m.Params) > 2 {
			from := n.userJID(m.Param(1))
			if ch := n.chans[n.fold(m.Param(1))]; ch != nil {
				from = ch.jid(n)
			}
			e := stanza.New("message", from, n.user, "error", stanza.NewID())
			e.Add(stanza.Errorf("recipient-unavailable", decodeText(m.Param(1)+": "+m.Trailing())).Element())
			n.b.host.Send(e)
		}
	case "376", "422": // the end of the MOTD, or none: ISUPPORT was sent
		n.startWatch(ctx)
	case "ERROR":
		n.status(ctx, "Error from "+n.server+": "+decodeText(m.Trailing()))
	default:
		if len(m.Command) == 3 && (m.Command[0] == '4' || m.Command[0] == '5') && len(m.Params) > 1 {
			n.status(ctx, decodeText(strings.Join(m.Params[1:], " ")))
		}
	}
}

// nickError reports a refused NICK change to the resources in every room.
func (n *network) nickError(m *irc.Message) {
	e := stanza.Errorf("conflict", "The nick "+m.Param(1)+" is already in use on "+n.server+".")
	if m.Command == "432" {
		e = stanza.Errorf("not-acceptable", "The nick "+m.Param(1)+" is not accepted by "+n.server+".")
	}
	for _, ch := range n.chans {
		n.broadcast(ch, func(full string) *xmlel.Element { return presenceError(ch.jid(n)+"/"+m.Param(1), full, e) })
	}
}

// onMessage handles PRIVMSG and NOTICE.
func (n *network) onMessage(ctx context.Context, m *irc.Message) {
	target, text := m.Param(0), decodeText(m.Param(1))
	notice := m.Command == "NOTICE"
	if cmd, arg, ok := ctcp(text); ok {
		switch {
		case cmd == "ACTION":
			text = "/me " + arg
		case notice:
			if n.ctcpReply(m.Name, cmd, arg) {
				return
			}
			text = "CTCP " + cmd + " reply: " + arg
		default:
			n.answerCTCP(m.Name, cmd, arg)
			return
		}
	}
	body := stripFormatting(text)
	if n.labeled() && n.fold(m.Name) == n.fold(n.nick) {
		// An echo without a label we know: sent by another client of
		// ours (or a private message echo); show channel ones as ours.
		if ch := n.chans[n.fold(target)]; ch != nil && ch.state.shown() && m.Command == "PRIVMSG" {
			n.reflect(ctx, ch, nil, body, nil)
		}
		return
	}
	if target == "" || m.Name == "" || (m.User == "" && strings.Contains(m.Name, ".")) || target == "*" || target == "AUTH" {
		n.status(ctx, body)
		return
	}
	if strings.ContainsRune(n.chantypes, rune(target[0])) {
		ch := n.chans[n.fold(target)]
		if ch == nil || !ch.state.shown() {
			return
		}
		if notice {
			body = "[notice] " + body
		}
		n.roomMessage(ctx, ch, m.Name, body, m)
		return
	}
	if notice {
		body = "[notice] " + body
	}
	msg := stanza.Message(n.userJID(m.Name), n.user, "chat", stanza.NewID(), body)
	addDelay(msg, m, n.server)
	if err := n.b.host.SendMessage(ctx, msg); err != nil {
		n.b.host.Log().Warn("cannot queue a private message", "user", n.user, "err", err)
	}
	n.b.host.Contact(ctx, n.user, stanza.Local(n.userJID(m.Name)), m.Name)
	n.watchNick(m.Name, false)
}

// answerCTCP answers VERSION, PING and TIME requests.
func (n *network) answerCTCP(nick, cmd, arg string) {
	var reply string
	switch cmd {
	case "VERSION":
		reply = "VERSION Passerelle XMPP gateway"
	case "PING":
		reply = "PING " + arg
	case "TIME":
		reply = "TIME " + time.Now().UTC().Format(time.RFC1123)
	default:
		return
	}
	reply = strings.Map(func(r rune) rune {
		if r == 1 || r == '\r' || r == '\n' || r == 0 {
			return -1
		}
		return r
	}, reply)
	n.send("NOTICE", nick, "\x01"+reply+"\x01")
}

// roomMessage sends a groupchat message from ch (or ch/nick) to every
// resource in it.
func (n *network) roomMessage(ctx context.Context, ch *channel, nick, body string, m *irc.Message) {
	build := func(room, full string) *xmlel.Element {
		from := room
		if nick != "" {
			from += "/" + nick
		}
		msg := stanza.Message(from, full, "groupchat", stanza.NewID(), body)
		if m != nil {
			addDelay(msg, m, n.server)
		}
		return msg
	}
	var copies roomCopies
	for full := range ch.resources {
		copies.add(build(ch.jid(n), full), ch.jid(n))
	}
	sid, queued := stanza.NewID(), false
	if nick != "" {
		var release func()
		sid, queued, release = n.record(ctx, ch, nick, body, nil, &copies, nil, build)
		if release != nil {
			defer release()
		}
	}
	n.sendCopies(ctx, &copies, sid, queued, "cannot queue a groupchat message")
}

// roomCopies are a line's stanzas to the resources in a room, each with
// the room's stanza-id of the line as its last child.
type roomCopies struct {
	msgs []*xmlel.Element
	sids []*xmlel.Element // the stanza-id of each
}

// add adds msg, with a stanza-id by the room.
func (c *roomCopies) add(msg *xmlel.Element, room string) {
	sid := xmlel.New(stanza.NSStanzaID, "stanza-id").SetAttr("by", room)
	msg.Add(sid)
	c.msgs, c.sids = append(c.msgs, msg), append(c.sids, sid)
}

// drop removes the copies to the resources fulls (sorted).
func (c *roomCopies) drop(fulls []string) {
	i := 0
	for j, msg := range c.msgs {
		if _, found := slices.BinarySearch(fulls, msg.Attr("to")); !found {
			c.msgs[i], c.sids[i] = msg, c.sids[j]
			i++
		}
	}
	clear(c.msgs[i:])
	clear(c.sids[i:])
	c.msgs, c.sids = c.msgs[:i], c.sids[:i]
}

// name gives the copies the stanza-id id.
func (c *roomCopies) name(id string) {
	for _, sid := range c.sids {
		sid.SetAttr("id", id)
	}
}

// echo returns the copies as the archive queues them with their line
// (store.IRCEcho): each stanza's text, cut where the line's id goes.
// That is the value of the stanza-id's "id", its last attribute, set
// after "by", in the stanza's last child: only the closing tags follow
// it, so it is after the last idMark in the text.
//
// A copy where the mark is not followed by the stanza-id's end and the
// message's (a child added after the stanza-id) gives nil: the copies are
// then queued after the line, as when it is not archived here.
func (c *roomCopies) echo(domain string) *store.IRCEcho {
	c.name(idMark)
	e := &store.IRCEcho{Domain: domain, Stanzas: make([][2]string, len(c.msgs))}
	for i, msg := range c.msgs {
		s := msg.String()
		at := strings.LastIndex(s, idMark)
		if at < 0 || s[at+len(idMark):] != idTail {
			return nil
		}
		e.Stanzas[i] = [2]string{s[:at], s[at+len(idMark):]}
	}
	return e
}

// idTail is what follows the line's id in a copy's text: the end of the
// stanza-id, its last child, and of the message.
const idTail = `"/></message>`

// idMark stands for the line's id in roomCopies.echo: text that no
// closing tag holds.
const idMark = "ID"

// sendCopies gives the copies the stanza-id sid and sends them: queued,
// the archive queued them with their line (see record); else each is
// queued now.
func (n *network) sendCopies(ctx context.Context, c *roomCopies, sid string, queued bool, what string) {
	c.name(sid)
	if queued {
		n.b.host.Queued(c.msgs...)
		return
	}
	for _, msg := range c.msgs {
		if err := n.b.host.SendMessage(ctx, msg); err != nil {
			n.b.host.Log().Warn(what, "user", n.user, "err", err)
		}
	}
}

// addDelay adds an XEP-0203 delay from the server-time tag.
func addDelay(msg *xmlel.Element, m *irc.Message, server string) {
	if t, ok := m.Tags["time"]; ok {
		if ts, err := time.Parse(time.RFC3339Nano, t); err == nil && time.Since(ts) > 5*time.Second {
			msg.Add(xmlel.New(stanza.NSDelay, "delay").SetAttr("from", server).SetAttr("stamp", ts.UTC().Format(time.RFC3339)))
		}
	}
}

// lineBudget is the room for text in "PRIVMSG target :text" so that the
// line as relayed to others (with our prefix) fits in 512 bytes.
func (n *network) lineBudget(cmd, target string) int {
	prefix := len(n.nick) + 2 + 10 + 1 + 63 // ":nick!user@host" with the longest user/host
	if n.user0 != "" {
		prefix = len(n.nick) + 2 + len(n.user0)
	}
	return maxLine - prefix - 1 - len(cmd) - 1 - len(target) - 2 - 2
}

// textLines turns an XMPP body into IRC message texts ("/me" as ACTION).
func (n *network) textLines(target, body string) ([]string, *stanza.Error) {
	action := false
	if rest, ok := strings.CutPrefix(body, "/me "); ok {
		action, body = true, rest
	}
	budget := n.lineBudget("PRIVMSG", target)
	if action {
		budget -= len("\x01ACTION \x01")
	}
	lines := splitText(body, budget)
	if len(lines) == 0 {
		return nil, stanza.Errorf("not-acceptable", "The message is empty.")
	}
	if len(lines) > maxLinesPerMessage {
		return nil, stanza.Errorf("not-acceptable", "The message is too long for IRC: it would take "+
			strconv.Itoa(len(lines))+" lines, and at most "+strconv.Itoa(maxLinesPerMessage)+" are allowed.")
	}
	if action {
		for i, l := range lines {
			lines[i] = "\x01ACTION " + l + "\x01"
		}
	}
	return lines, nil
}

// ready reports why a message of lines lines cannot be queued to the
// server now, or nil.
func (n *network) ready(lines int) *stanza.Error {
	if n.c == nil || !n.registered || n.c.closing() {
		return stanza.Errorf("recipient-unavailable", "Not connected to "+n.server+".")
	}
	if n.c.room() < lines {
		e := stanza.Errorf("resource-constraint", "Too many messages are waiting to be sent to "+n.server+"; try again.")
		e.Type = "wait"
		return e
	}
	return nil
}

// sendText sends lines to target, all of them or, when they do not all
// fit in the queue, none. With echo-message and labeled-response, every
// line carries a label and p (when not nil) waits for their echoes.
func (n *network) sendText(target string, lines []string, p *pendingEcho) *stanza.Error {
	if e := n.ready(len(lines)); e != nil {
		return e
	}
	built, e := n.privmsgs(target, lines, p)
	if e == nil {
		e = n.queueLines(built)
	}
	return e
}

// privmsgs builds the PRIVMSG lines of text to target; with echo-message
// and labeled-response, each with a label that p (when not nil) waits for.
func (n *network) privmsgs(target string, lines []string, p *pendingEcho) ([]string, *stanza.Error) {
	built := make([]string, len(lines))
	base := stanza.NewID()
	for i, l := range lines {
		line, err := buildLine("PRIVMSG", target, l)
		if err != nil {
			return nil, stanza.Errorf("recipient-unavailable", "Cannot send to "+n.server+": "+err.Error())
		}
		if n.labeled() {
			label := base + "." + strconv.Itoa(i)
			line = "@label=" + label + " " + line
			if p != nil {
				p.labels = append(p.labels, label)
				n.echoes[label] = p
			}
		}
		built[i] = line
	}
	return built, nil
}

// queueLines queues lines to the server, all of them or none.
func (n *network) queueLines(lines []string) *stanza.Error {
	if err := n.c.sendAll(lines); err != nil {
		return stanza.Errorf("recipient-unavailable", "Cannot send to "+n.server+": "+err.Error())
	}
	return nil
}

// groupchat handles a groupchat message from a resource to ch.
//
// A message to a server without echo-message is archived (when the
// channel keeps history) and its echo queued before its lines are queued
// to the server, as biboumi reflects a message before it sends it. Sent
// first, the line reached the other users' connections here (hundreds
// of them) while the echo was being committed, and the echo then waited
// for a CPU behind their copies: in BenchmarkIRCGateway at 500 users (the
// gateway alone, three runs each) the echo's p99 went from 18.8–24.1 ms
// to 11.7–13.7 ms, for no change to the server's copy beyond the runs'
// spread (p50 2.94–3.00 ms before, 2.76–3.18 after). The line therefore
// waits for that commit, as the echo did (a stalled store holds both).
// As before, a line queued may still be lost with its connection before
// it is written. Only a connection closed by another goroutine between
// the check (ready) and the queuing (conn.sendAll, all lines or none)
// leaves an echo and an archived message that the server never got: the
// user then gets the error after the echo, and the line recorded for the
// other connections here is forgotten (another instance sharing the
// archive may still take a later line with the same text for it).
func (b *Bridge) groupchat(ctx context.Context, u *bridges.User, st *xmlel.Element, n *network, ch *channel) {
	if _, ok := ch.resources[u.Full]; !ok {
		bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "Join the room before sending messages to it."))
		return
	}
	body := st.ChildText("", "body")
	if subj := st.Child("", "subject"); subj != nil && body == "" {
		topic := strings.Join(strings.Fields(strings.ReplaceAll(subj.Text, "\x00", "")), " ")
		if n.c == nil || !n.registered {
			bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", "Not connected to "+n.server+"."))
			return
		}
		if err := n.send("TOPIC", ch.name, topic); err != nil {
			bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", err.Error()))
		}
		return
	}
	if body == "" {
		return // chat states and the like
	}
	lines, e := n.textLines(ch.name, body)
	var p *pendingEcho
	if n.labeled() {
		p = &pendingEcho{st: st, channel: n.fold(ch.name), body: body}
	}
	switch {
	case e != nil:
	case p != nil:
		e = n.sendText(ch.name, lines, p)
	default:
		e = n.reflectAndSend(ctx, ch, st, body, lines)
	}
	if e != nil {
		n.dropEcho(p)
		bridges.Refuse(b.host, st, e)
	}
}

// reflectAndSend reflects the user's message to ch, then queues its lines
// to the server (a server without echoes: see groupchat).
func (n *network) reflectAndSend(ctx context.Context, ch *channel, st *xmlel.Element, body string, lines []string) *stanza.Error {
	if e := n.ready(len(lines)); e != nil {
		return e
	}
	built, e := n.privmsgs(ch.name, lines, nil)
	if e != nil {
		return e
	}
	own := n.expectOwn(ctx, ch, body)
	n.reflect(ctx, ch, st, body, own)
	n.echoFirst(ctx)
	if e = n.queueLines(built); e != nil {
		n.b.lines.unexpect(own)
	}
	return e
}

// echoFirstWait bounds how long a user's line waits for the XMPP server
// to take the user's echo (echoFirst).
const echoFirstWait = 10 * time.Millisecond

// echoFirst waits, echoFirstWait at most (Bridge.echoWait), for the XMPP
// server to confirm the user's echo just committed (bridges.Host.Flushed)
// before the line goes to the IRC server. The server's relay of the line
// wakes the connection of every other user in the channel at once, and
// their copies follow: on a machine shared with the XMPP server, that
// work took the processors while the XMPP server still had the echo to
// route, or its client to read. BenchmarkIRCGateway at 500 users, with a
// packet capture: in each of the 12 slowest of 200 rounds the echo left
// the gateway within 1.3 ms of the message, then Prosody passed it on
// 4.8 to 7.2 ms after the message in five of them, and the client read
// it 3.7 to 5.7 ms after Prosody sent it in the others. Waiting costs
// the line a round trip through the XMPP server (a few tenths of a
// millisecond on its median to IRC there); a server slow to confirm, or an
// outbox with a backlog ahead of the echo, delays it by echoFirstWait at
// most.
func (n *network) echoFirst(ctx context.Context) {
	done := n.b.host.Flushed()
	select {
	case <-done:
		return
	default:
	}
	t := time.NewTimer(n.b.echoWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// reflect sends the user's own message back to every resource in the
// room, as a room does: orig's id and the elements a client may rely on
// (XEP-0359 origin-id, replies, corrections…) are kept, the body is the
// one sent and the stanza-id is the room's own. orig is nil for a message
// sent by another client of the user's.
//
// Its writes go ahead of the room copies queued for other users (see
// store.First): the sender waits for this echo, and at hundreds of users
// it would otherwise be written after the copies of their lines.
//
// own is the message as recorded before it was sent (expectOwn), so that
// the others' connections match their copies to it whatever the server
// relays between (see chanLines.ahead); nil for a message reflected as
// the server echoed it. The others' copies are queued by their own
// connections: queued here with the echo, they made the sender wait for
// them (the echo's median in BenchmarkIRCGateway at 200 users went from
// 2 to 4.5 ms), and queued in a write of their own just after it, the
// median was 4.4 to 4.9 ms all the same.
func (n *network) reflect(ctx context.Context, ch *channel, orig *xmlel.Element, body string, own *ownLines) {
	ctx = store.First(ctx)
	from := ch.jid(n) + "/" + n.nick
	id := stanza.NewID()
	if orig != nil {
		id = orig.Attr("id")
	}
	var copies roomCopies
	for full := range ch.resources {
		msg := stanza.Message(from, full, "groupchat", id, body)
		if orig != nil {
			for _, c := range orig.Children {
				if keptInReflection(c) {
					msg.Add(c.Copy())
				}
			}
		}
		copies.add(msg, ch.jid(n))
	}
	sid, queued, release := n.record(ctx, ch, n.nick, body, n.sentAs(ch.name, body), &copies, own, nil)
	if release != nil {
		defer release()
	}
	n.sendCopies(ctx, &copies, sid, queued, "cannot queue a reflection")
}

// expectOwn records, before it is sent, the message the user sends to ch
// (lineLog.ownLines), when ch keeps history; nil when it does not.
func (n *network) expectOwn(ctx context.Context, ch *channel, body string) *ownLines {
	if !ch.settings.Record {
		return nil
	}
	var o *ownLines
	n.b.withKey(ctx, n.server, ch.name, func(key string) error {
		o = &ownLines{c: lineChan{n.server, key}, parts: n.sentAs(ch.name, body)}
		o.a, o.lines = n.b.lines.ownLines(o.c, n.user, n.nick, o.parts, true, time.Now())
		return nil
	})
	return o
}

// sentAs returns what the other members of target get of body: its IRC
// lines, as onMessage turns each into a body.
func (n *network) sentAs(target, body string) []string {
	lines, e := n.textLines(target, body)
	if e != nil {
		return []string{body}
	}
	parts := make([]string, len(lines))
	for i, l := range lines {
		if cmd, arg, ok := ctcp(l); ok && cmd == "ACTION" {
			l = "/me " + arg
		}
		parts[i] = stripFormatting(l)
	}
	return parts
}

// keptInReflection reports whether a child of the user's message is
// copied into its reflection: all but the body (set from what was sent)
// and the stanza-ids, which only the room gives (XEP-0359 tells it to
// remove any a client put there).
func keptInReflection(c *xmlel.Element) bool {
	switch {
	case c.Local == "body" && (c.Space == "" || c.Space == stanza.NS):
		return false
	case c.Space == stanza.NSStanzaID && c.Local == "stanza-id":
		return false
	}
	return true
}

// private handles a chat message to an IRC user.
func (b *Bridge) private(ctx context.Context, u *bridges.User, st *xmlel.Element, server, nick string) {
	body := st.ChildText("", "body")
	if body == "" {
		return
	}
	n := b.networkOf(u.JID, server)
	if n == nil {
		bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", "Not connected to "+server+": join a channel there first."))
		return
	}
	lines, e := n.textLines(nick, body)
	if e == nil {
		e = n.sendText(nick, lines, nil)
	}
	if e != nil {
		bridges.Refuse(b.host, st, e)
	}
}

// raw handles a chat message to the network JID: each line is sent as a
// raw IRC line.
func (b *Bridge) raw(ctx context.Context, u *bridges.User, st *xmlel.Element, server string) {
	body := st.ChildText("", "body")
	if body == "" {
		return
	}
	n := b.networkOf(u.JID, server)
	if n == nil || n.c == nil || !n.registered {
		bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", "Not connected to "+server+": join a channel there first."))
		return
	}
	lines := splitText(body, 1<<20)
	if len(lines) > maxLinesPerMessage {
		bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "At most 20 raw lines at a time."))
		return
	}
	msgs := make([]*irc.Message, len(lines))
	for i, l := range lines {
		if len(l)+2 > maxLine {
			bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "A raw IRC line is limited to 510 bytes."))
			return
		}
		m, err := parseLine(l)
		if err != nil {
			bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "Not an IRC line: "+err.Error()))
			return
		}
		msgs[i] = m
	}
	if n.c.room() < len(lines) {
		bridges.Refuse(b.host, st, stanza.Errorf("resource-constraint", "Too many lines are waiting to be sent; try again."))
		return
	}
	for i, l := range lines {
		if err := n.c.send(l); err != nil {
			bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", err.Error()))
			return
		}
		n.userRequest(msgs[i])
	}
}
