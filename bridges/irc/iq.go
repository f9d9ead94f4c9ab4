package irc

import (
	"context"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// iqTarget is what an IQ is addressed to.
type iqTarget uint8

const (
	iqRoom     iqTarget = iota // #chan%server@domain
	iqOccupant                 // #chan%server@domain/nick
	iqUser                     // nick%server@domain
	iqNetwork                  // server@domain
)

// iqKey selects the handler of an IQ: its target, and its payload's
// namespace and name.
type iqKey struct {
	to           iqTarget
	space, local string
}

// iqReq is an IQ being handled.
type iqReq struct {
	u    *bridges.User
	st   *xmlel.Element
	a    mapping.IRCAddr
	nick string // the occupant's nick, for iqOccupant
}

// iqHandlers answer IQs. A handler that returns false leaves the IQ to
// the usual answers of its target (iqDefault).
var iqHandlers = map[iqKey]func(b *Bridge, ctx context.Context, q iqReq) bool{
	{iqRoom, stanza.NSMAM, "query"}: func(b *Bridge, ctx context.Context, q iqReq) bool {
		b.mamQuery(ctx, q.u, q.st, q.a)
		return true
	},
	{iqRoom, stanza.NSMUCOwner, "query"}: func(b *Bridge, ctx context.Context, q iqReq) bool {
		b.mucOwner(ctx, q.u, q.st, q.a)
		return true
	},
	{iqRoom, stanza.NSMUCAdmin, "query"}: func(b *Bridge, ctx context.Context, q iqReq) bool {
		n := b.networkOf(q.u.JID, q.a.Server)
		var ch *channel
		if n != nil {
			ch = n.chans[n.fold(q.a.Name)]
		}
		b.mucAdmin(q.u, q.st, n, ch)
		return true
	},
	{iqOccupant, stanza.NSVersion, "query"}: (*Bridge).occupantCTCP,
	{iqOccupant, stanza.NSPing, "ping"}: func(b *Bridge, ctx context.Context, q iqReq) bool {
		if b.occupantCTCP(ctx, q) {
			return true
		}
		if q.st.Attr("type") != "get" {
			return false
		}
		// XEP-0410 self-ping (and pings to occupants), answered here:
		// fine when the sender's resource is in the room.
		if n, _ := b.inRoom(q); n == nil {
			bridges.Refuse(b.host, q.st, stanza.Errorf("not-acceptable", "You are not in this room."))
			return true
		}
		b.host.Send(stanza.Result(q.st, nil))
		return true
	},
	{iqUser, stanza.NSMAM, "query"}: func(b *Bridge, ctx context.Context, q iqReq) bool {
		// See mamQuery: one-to-one archives belong to the user's server.
		bridges.Refuse(b.host, q.st, stanza.Errorf("service-unavailable", "Private messages are archived by your own server: query its archive, with this contact as the with filter."))
		return true
	},
	{iqUser, stanza.NSVersion, "query"}: func(b *Bridge, ctx context.Context, q iqReq) bool {
		return b.ctcpIQ(q.u, q.st, q.a.Server, q.a.Name)
	},
	{iqUser, stanza.NSPing, "ping"}: func(b *Bridge, ctx context.Context, q iqReq) bool {
		return b.ctcpIQ(q.u, q.st, q.a.Server, q.a.Name)
	},
	{iqNetwork, stanza.NSDiscoItems, "query"}: func(b *Bridge, ctx context.Context, q iqReq) bool {
		if q.st.Attr("type") != "get" || q.st.Child(stanza.NSDiscoItems, "query").Attr("node") != "" {
			return false
		}
		b.listChannels(q.u, q.st, q.a.Server)
		return true
	},
}

// handleIQ answers an IQ to a room, an occupant, an IRC user or a
// network: by its handler in iqHandlers, else as a contact would.
func (b *Bridge) handleIQ(ctx context.Context, q iqReq, to iqTarget) {
	if len(q.st.Children) > 0 {
		p := q.st.Children[0]
		if h := iqHandlers[iqKey{to, p.Space, p.Local}]; h != nil && h(b, ctx, q) {
			return
		}
	}
	switch to {
	case iqRoom:
		bridges.AnswerContactIQ(b.host, q.st, bridges.Identity{Category: "conference", Type: "irc", Name: q.a.Name}, stanza.NSMUC, stanza.NSMAM)
	case iqOccupant:
		bridges.AnswerContactIQ(b.host, q.st, bridges.Identity{Category: "client", Type: "pc", Name: q.nick})
	case iqUser:
		bridges.AnswerContactIQ(b.host, q.st, bridges.Identity{Category: "client", Type: "pc", Name: q.a.Name})
	case iqNetwork:
		bridges.AnswerContactIQ(b.host, q.st, bridges.Identity{Category: "gateway", Type: "irc", Name: q.a.Server}, stanza.NSCommands, stanza.NSDiscoItems)
	}
}

// inRoom returns the network and the channel of an IQ to an occupant
// when the sender's resource is in the room (nil otherwise).
func (b *Bridge) inRoom(q iqReq) (*network, *channel) {
	n := b.networkOf(q.u.JID, q.a.Server)
	if n == nil {
		return nil, nil
	}
	ch := n.chans[n.fold(q.a.Name)]
	if ch == nil || ch.resources[q.u.Full] == nil {
		return nil, nil
	}
	return n, ch
}

// occupantCTCP sends an IQ to another occupant of a room the sender is
// in as a CTCP request (see ctcpIQ).
func (b *Bridge) occupantCTCP(ctx context.Context, q iqReq) bool {
	n, _ := b.inRoom(q)
	return n != nil && n.fold(q.nick) != n.fold(n.nick) && b.ctcpIQ(q.u, q.st, q.a.Server, q.nick)
}
