package irc

import (
	"context"
	"strings"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// Handle implements bridges.Bridge.
func (b *Bridge) Handle(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	local := stanza.Local(st.Attr("to"))
	if local == "" {
		bridges.Refuse(b.host, st, stanza.Errorf("service-unavailable", "Address a channel, a user or a network: #chan%server@"+b.host.Domain()+"."))
		return
	}
	a, err := mapping.ParseIRCLocal(local, "")
	if err != nil {
		bridges.Refuse(b.host, st, stanza.Errorf("jid-malformed", err.Error()))
		return
	}
	if n := b.networkOf(u.JID, a.Server); n != nil && a.Kind != mapping.IRCServer {
		// Reparse with the server's CHANTYPES.
		if a2, err := mapping.ParseIRCLocal(local, n.chantypes); err == nil {
			a = a2
		}
	}
	switch a.Kind {
	case mapping.IRCChannel:
		b.handleChannel(ctx, u, st, a)
	case mapping.IRCUser:
		b.handleUser(ctx, u, st, a)
	case mapping.IRCServer:
		b.handleServer(ctx, u, st, a)
	}
}

func (b *Bridge) handleChannel(ctx context.Context, u *bridges.User, st *xmlel.Element, a mapping.IRCAddr) {
	nick := stanza.Resource(st.Attr("to"))
	switch st.Local {
	case "presence":
		// The resources in the room may have changed: the lineLog sees
		// it now rather than at the next IRC message (publish).
		defer func() {
			if n := b.networkOf(u.JID, a.Server); n != nil {
				n.publish(ctx)
			}
		}()
		typ := st.Attr("type")
		if typ == "unavailable" || typ == "error" {
			if n := b.networkOf(u.JID, a.Server); n != nil {
				n.leave(a.Name, u.Full)
			}
			return
		}
		if typ != "" {
			return
		}
		if nick == "" {
			b.host.Send(presenceError(st.Attr("to"), u.Full, stanza.Errorf("jid-malformed", "Join with a nick: room/nick.")))
			return
		}
		if e := ValidNick(nick); e != nil {
			b.host.Send(presenceError(st.Attr("to"), u.Full, stanza.Errorf("jid-malformed", e.Text)))
			return
		}
		n, err := b.network(ctx, u, a.Server, nick)
		if err != nil {
			b.host.Log().Error("cannot open an irc network", "user", u.JID, "err", err)
			b.host.Send(presenceError(st.Attr("to"), u.Full, stanza.Errorf("internal-server-error", "The gateway cannot read its database.")))
			return
		}
		if ch := n.chans[n.fold(a.Name)]; ch != nil && ch.resources[u.Full] != nil {
			// Presence without <x/> from a joined resource: a nick change.
			if st.Child(stanza.NSMUC, "x") == nil && nick != n.nick && n.registered {
				if err := n.send("NICK", nick); err != nil {
					b.host.Send(presenceError(st.Attr("to"), u.Full, stanza.Errorf("recipient-unavailable", err.Error())))
				}
			}
			return
		}
		pw := st.Child(stanza.NSMUC, "x").ChildText("", "password")
		if strings.ContainsAny(pw, " ,\r\n\x00") {
			b.host.Send(presenceError(st.Attr("to"), u.Full, stanza.Errorf("not-acceptable", "A channel key cannot contain spaces, commas or line breaks.")))
			return
		}
		n.join(ctx, a.Name, u.Full, nick, parseHistory(st.Child(stanza.NSMUC, "x")), pw)
	case "message":
		n := b.networkOf(u.JID, a.Server)
		var ch *channel
		if n != nil {
			ch = n.chans[n.fold(a.Name)]
		}
		if nick != "" {
			if st.Attr("type") == "error" {
				return
			}
			if n == nil || ch == nil || ch.resources[u.Full] == nil {
				bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "Join the room before sending private messages from it."))
				return
			}
			b.private(ctx, u, st, a.Server, nick)
			return
		}
		switch st.Attr("type") {
		case "error":
			return
		case "groupchat":
		default:
			bridges.Refuse(b.host, st, stanza.Errorf("bad-request", "Send groupchat messages to a room."))
			return
		}
		if ch == nil {
			bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "Join the room before sending messages to it."))
			return
		}
		b.groupchat(ctx, u, st, n, ch)
	case "iq":
		to := iqRoom
		if nick != "" {
			to = iqOccupant
		}
		b.handleIQ(ctx, iqReq{u: u, st: st, a: a, nick: nick}, to)
	}
}

func (b *Bridge) handleUser(ctx context.Context, u *bridges.User, st *xmlel.Element, a mapping.IRCAddr) {
	switch st.Local {
	case "message":
		if st.Attr("type") == "error" || st.Attr("type") == "groupchat" {
			bridges.Refuse(b.host, st, stanza.Errorf("bad-request", "Send chat messages to IRC users."))
			return
		}
		b.private(ctx, u, st, a.Server, a.Name)
		if st.ChildText("", "body") != "" {
			b.host.Contact(ctx, u.JID, a.Local(), a.Name)
			if n := b.networkOf(u.JID, a.Server); n != nil {
				n.watchNick(a.Name, u.Registration != nil)
			}
		}
	case "presence":
		b.contactPresence(u.JID, st, a.Server, a.Name)
	case "iq":
		b.handleIQ(ctx, iqReq{u: u, st: st, a: a}, iqUser)
	}
}

func (b *Bridge) handleServer(ctx context.Context, u *bridges.User, st *xmlel.Element, a mapping.IRCAddr) {
	switch st.Local {
	case "message":
		if st.Attr("type") == "error" {
			return
		}
		b.raw(ctx, u, st, a.Server)
	case "presence":
		bridges.AnswerContactPresence(b.host, st)
	case "iq":
		b.handleIQ(ctx, iqReq{u: u, st: st, a: a}, iqNetwork)
	}
}
