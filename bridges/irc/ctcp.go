package irc

import (
	"context"
	"strconv"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// ctcpTimeout is how long an IQ waits for a CTCP reply.
const ctcpTimeout = 20 * time.Second

// ctcpIQ turns a jabber:iq:version or ping IQ to an IRC user into a CTCP
// request; the reply (a NOTICE) answers the IQ. It reports whether st
// was such an IQ.
func (b *Bridge) ctcpIQ(u *bridges.User, st *xmlel.Element, server, nick string) bool {
	if st.Attr("type") != "get" {
		return false
	}
	var cmd string
	switch {
	case st.Child(stanza.NSVersion, "query") != nil:
		cmd = "VERSION"
	case st.Child(stanza.NSPing, "ping") != nil:
		cmd = "PING"
	default:
		return false
	}
	n := b.networkOf(u.JID, server)
	if n == nil || n.c == nil || !n.registered {
		bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", "Not connected to "+server+"."))
		return true
	}
	text := "\x01" + cmd + "\x01"
	if cmd == "PING" {
		text = "\x01PING " + strconv.FormatInt(time.Now().UnixNano(), 10) + "\x01"
	}
	if err := n.send("PRIVMSG", nick, text); err != nil {
		bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", err.Error()))
		return true
	}
	key := n.fold(nick) + " " + cmd
	if n.ctcpWait == nil {
		n.ctcpWait = map[string][]*xmlel.Element{}
	}
	n.ctcpWait[key] = append(n.ctcpWait[key], st)
	time.AfterFunc(ctcpTimeout, func() {
		b.post(u.JID, func(ctx context.Context) {
			for i, w := range n.ctcpWait[key] {
				if w == st {
					n.ctcpWait[key] = append(n.ctcpWait[key][:i:i], n.ctcpWait[key][i+1:]...)
					bridges.Refuse(b.host, st, stanza.Errorf("remote-server-timeout", nick+" did not answer."))
					return
				}
			}
		})
	})
	return true
}

// ctcpReply answers the IQs waiting for a CTCP reply from nick; it
// reports whether there were any.
func (n *network) ctcpReply(nick, cmd, arg string) bool {
	key := n.fold(nick) + " " + cmd
	waiting := n.ctcpWait[key]
	if len(waiting) == 0 {
		return false
	}
	delete(n.ctcpWait, key)
	for _, st := range waiting {
		var payload *xmlel.Element
		if cmd == "VERSION" {
			payload = xmlel.New(stanza.NSVersion, "query")
			payload.AddText("name", xmlel.CleanText(decodeText(stripFormatting(arg))))
		}
		n.b.host.Send(stanza.Result(st, payload))
	}
	return true
}
