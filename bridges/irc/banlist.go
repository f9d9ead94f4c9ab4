package irc

import (
	"context"
	"time"

	irc "gopkg.in/irc.v4"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// banReq is a muc#admin outcast list waiting for the ban list (367/368).
type banReq struct {
	st  *xmlel.Element
	gen int
}

// banList is the state of one channel's ban list retrieval.
type banList struct {
	reqs  []banReq
	masks []banEntry
	gen   int
}

type banEntry struct{ mask, setter string }

// mucAdminList answers a muc#admin get: the occupants with a role or
// affiliation, or the ban list for affiliation outcast.
func (b *Bridge) mucAdminList(u *bridges.User, st *xmlel.Element, n *network, ch *channel) {
	item := st.Child(stanza.NSMUCAdmin, "query").Child(stanza.NSMUCAdmin, "item")
	if item == nil {
		bridges.Refuse(b.host, st, stanza.Errorf("bad-request", "Ask for a role or an affiliation."))
		return
	}
	role, aff := item.Attr("role"), item.Attr("affiliation")
	switch {
	case role == "moderator" || role == "participant" || role == "visitor":
	case aff == "owner" || aff == "admin" || aff == "member" || aff == "outcast":
	default:
		bridges.Refuse(b.host, st, stanza.Errorf("bad-request", "Ask for the role moderator, participant or visitor, or the affiliation owner, admin, member or outcast."))
		return
	}
	if n == nil || ch == nil || ch.resources[u.Full] == nil {
		bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "Join the room first."))
		return
	}
	if aff == "outcast" && role == "" {
		n.requestBans(st, ch)
		return
	}
	q := xmlel.New(stanza.NSMUCAdmin, "query")
	for m := range ch.members.all() {
		r, a := roleAffiliation(m.modes)
		if (role != "" && r != role) || (aff != "" && a != aff) {
			continue
		}
		q.Add(xmlel.New(stanza.NSMUCAdmin, "item").SetAttr("affiliation", a).SetAttr("role", r).
			SetAttr("nick", m.nick).SetAttr("jid", n.userJID(m.nick)))
	}
	b.host.Send(stanza.Result(st, q))
}

// requestBans asks the server for ch's ban list ("MODE #chan +b"), once
// for all the requests waiting, and answers st when it ends.
func (n *network) requestBans(st *xmlel.Element, ch *channel) {
	if n.c == nil || !n.registered {
		bridges.Refuse(n.b.host, st, stanza.Errorf("recipient-unavailable", "Not connected to "+n.server+"."))
		return
	}
	key := n.fold(ch.name)
	if n.bans == nil {
		n.bans = map[string]*banList{}
	}
	bl := n.bans[key]
	if bl == nil {
		bl = &banList{}
		n.bans[key] = bl
	}
	if len(bl.reqs) == 0 {
		if err := n.send("MODE", ch.name, "+b"); err != nil {
			bridges.Refuse(n.b.host, st, stanza.Errorf("recipient-unavailable", "Cannot ask "+n.server+" for the ban list: "+err.Error()))
			return
		}
		bl.gen++
		bl.masks = nil
	}
	gen := bl.gen
	bl.reqs = append(bl.reqs, banReq{st: st, gen: gen})
	time.AfterFunc(n.b.banTimeout, func() {
		n.b.post(n.user, func(ctx context.Context) {
			if n.bans[key] != bl || bl.gen != gen || len(bl.reqs) == 0 {
				return
			}
			n.endBans(key, stanza.Errorf("remote-server-timeout", n.server+" did not send the ban list of "+ch.name+"."))
		})
	})
}

// banReply handles the ban list numerics (367, 368) and the errors that
// end a pending ban list request; it reports whether m was consumed.
func (n *network) banReply(m *irc.Message) bool {
	if len(n.bans) == 0 || len(m.Params) < 2 {
		return false
	}
	key := n.fold(m.Params[1])
	bl := n.bans[key]
	if bl == nil || len(bl.reqs) == 0 {
		return false
	}
	switch m.Command {
	case "367":
		if len(m.Params) > 2 {
			bl.masks = append(bl.masks, banEntry{mask: m.Params[2], setter: m.Param(3)})
		}
	case "368":
		n.endBans(key, nil)
	case "403", "442", "481", "482":
		n.endBans(key, stanza.Errorf("forbidden", n.server+" refused the ban list: "+decodeText(m.Trailing())))
	default:
		return false
	}
	return true
}

// endBans answers the requests waiting for key's ban list, with the
// list or with e.
func (n *network) endBans(key string, e *stanza.Error) {
	bl := n.bans[key]
	delete(n.bans, key)
	if bl == nil {
		return
	}
	for _, r := range bl.reqs {
		if e != nil {
			bridges.Refuse(n.b.host, r.st, e)
			continue
		}
		q := xmlel.New(stanza.NSMUCAdmin, "query")
		for _, be := range bl.masks {
			it := xmlel.New(stanza.NSMUCAdmin, "item").SetAttr("affiliation", "outcast").SetAttr("jid", be.mask)
			if be.setter != "" {
				it.AddText("reason", "Banned by "+be.setter+".")
			}
			q.Add(it)
		}
		n.b.host.Send(stanza.Result(r.st, q))
	}
}

// dropBanRequests answers every waiting ban list request when the
// connection ends.
func (n *network) dropBanRequests() {
	for key := range n.bans {
		n.endBans(key, stanza.Errorf("recipient-unavailable", "The connection to "+n.server+" was lost."))
	}
}
