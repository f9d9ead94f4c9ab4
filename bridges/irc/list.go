package irc

import (
	"sort"
	"strconv"

	irc "gopkg.in/irc.v4"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// listEntry is one channel of a LIST reply.
type listEntry struct {
	name  string
	users int
}

// listChannels answers disco#items on the network JID with the channel
// list (LIST), paged with RSM.
func (b *Bridge) listChannels(u *bridges.User, st *xmlel.Element, server string) {
	n := b.networkOf(u.JID, server)
	if n == nil || n.c == nil || !n.registered {
		bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", "Not connected to "+server+": join a channel there first."))
		return
	}
	n.listReqs = append(n.listReqs, st)
	if len(n.listReqs) == 1 {
		n.listBuf = nil
		if err := n.send("LIST"); err != nil {
			n.listReqs = nil
			bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", err.Error()))
		}
	}
}

// onList handles 322 (RPL_LIST).
func (n *network) onList(m *irc.Message) {
	if len(n.listReqs) == 0 || len(m.Params) < 3 {
		return
	}
	users, _ := strconv.Atoi(m.Param(2))
	n.listBuf = append(n.listBuf, listEntry{name: m.Param(1), users: users})
}

// onListEnd handles 323: answers every waiting disco#items.
func (n *network) onListEnd() {
	entries := n.listBuf
	sort.Slice(entries, func(i, j int) bool { return n.fold(entries[i].name) < n.fold(entries[j].name) })
	for _, st := range n.listReqs {
		n.b.host.Send(stanza.Result(st, n.listPage(st, entries)))
	}
	n.listReqs, n.listBuf = nil, nil
}

func (n *network) listPage(st *xmlel.Element, entries []listEntry) *xmlel.Element {
	q := xmlel.New(stanza.NSDiscoItems, "query")
	set := st.Child(stanza.NSDiscoItems, "query").Child(stanza.NSRSM, "set")
	start, max := 0, len(entries)
	if set != nil {
		if v, err := strconv.Atoi(set.ChildText(stanza.NSRSM, "max")); err == nil && v >= 0 {
			max = v
		}
		if after := set.ChildText(stanza.NSRSM, "after"); after != "" {
			for i, e := range entries {
				if n.chanJID(e.name) == after {
					start = i + 1
				}
			}
		}
	}
	end := min(len(entries), start+max)
	for _, e := range entries[start:end] {
		q.Add(xmlel.New(stanza.NSDiscoItems, "item").SetAttr("jid", n.chanJID(e.name)).
			SetAttr("name", e.name+" ("+strconv.Itoa(e.users)+" users)"))
	}
	if set != nil {
		rs := xmlel.New(stanza.NSRSM, "set")
		if end > start {
			rs.Add(xmlel.New(stanza.NSRSM, "first").SetAttr("index", strconv.Itoa(start)).WithText(n.chanJID(entries[start].name)))
			rs.Add(xmlel.New(stanza.NSRSM, "last").WithText(n.chanJID(entries[end-1].name)))
		}
		rs.Add(xmlel.New(stanza.NSRSM, "count").WithText(strconv.Itoa(len(entries))))
		q.Add(rs)
	}
	return q
}

func (n *network) chanJID(name string) string {
	return mapping.IRCAddr{Kind: mapping.IRCChannel, Name: name, Server: n.server}.Local() + "@" + n.b.host.Domain()
}
