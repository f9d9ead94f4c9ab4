package irc

import (
	"context"
	"strconv"
	"strings"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

const (
	nsMAM     = "urn:xmpp:mam:2"
	nsRSM     = "http://jabber.org/protocol/rsm"
	nsForward = "urn:xmpp:forward:0"
	mamMax    = 100
)

// withFilter turns the "with" field of a query on room's archive into an
// SQL condition: room/nick selects one occupant's messages (nicks compared
// without case), the bare room JID selects all, any other JID none (the
// archive holds no real JIDs).
func withFilter(with, room string) (string, []any, *stanza.Error) {
	bare, nick, _ := strings.Cut(with, "/")
	if bare == "" || strings.ContainsAny(with, " \t\r\n") {
		return "", nil, stanza.Errorf("bad-request", "with is not a JID.")
	}
	switch {
	case !strings.EqualFold(bare, room):
		return "0", nil, nil
	case nick == "":
		return "", nil, nil
	}
	return "nick = ? COLLATE NOCASE", []any{nick}, nil
}

// mamQuery answers an XEP-0313 query on a room's archive (the user's own
// archive of that channel), with RSM paging (at most 100 per page).
//
// Private messages are not archived here: XEP-0313 puts a user's
// one-to-one archive on the user's own server, which already stores the
// messages exchanged with nick%server contacts both ways; a query sent to
// a contact's JID would ask for that contact's archive, which the gateway
// cannot hold on the user's behalf.
func (b *Bridge) mamQuery(ctx context.Context, u *bridges.User, st *xmlel.Element, a mapping.IRCAddr) {
	q := st.Child(nsMAM, "query")
	if st.Attr("type") != "set" {
		if st.Attr("type") == "get" {
			// The form of supported fields.
			f := &form.Form{Type: "form", Fields: []form.Field{
				{Var: "FORM_TYPE", Type: form.Hidden, Values: []string{nsMAM}},
				{Var: "with", Type: form.JIDSingle}, {Var: "start", Type: form.TextSingle}, {Var: "end", Type: form.TextSingle}}}
			b.host.Send(stanza.Result(st, xmlel.New(nsMAM, "query").Add(f.Element())))
		}
		return
	}
	room := mapping.IRCAddr{Kind: mapping.IRCChannel, Name: a.Name, Server: a.Server}.Local() + "@" + b.host.Domain()
	where := []string{"jid = ?", "server = ?", "channel = ?"}
	args := []any{u.JID, a.Server, nil} // the channel's stored key, when querying
	if f, err := form.Find(q); err == nil {
		for _, fl := range []struct{ name, op string }{{"start", ">="}, {"end", "<="}} {
			if v := f.Get(fl.name); v != "" {
				t, err := time.Parse(time.RFC3339, v)
				if err != nil {
					bridges.Refuse(b.host, st, stanza.Errorf("bad-request", fl.name+" is not an XEP-0082 date-time"))
					return
				}
				where = append(where, "stamp "+fl.op+" ?")
				args = append(args, t.UnixMilli())
			}
		}
		if w := f.Get("with"); w != "" {
			cond, arg, e := withFilter(w, room)
			if e != nil {
				bridges.Refuse(b.host, st, e)
				return
			}
			if cond != "" {
				where, args = append(where, cond), append(args, arg...)
			}
		}
	}
	max := mamMax
	set := q.Child(nsRSM, "set")
	order := "ASC"
	if set != nil {
		if v, err := strconv.Atoi(set.ChildText(nsRSM, "max")); err == nil && v >= 0 && v < max {
			max = v
		}
		if after := set.Child(nsRSM, "after"); after != nil {
			id, err := strconv.ParseInt(after.Text, 10, 64)
			if err != nil {
				bridges.Refuse(b.host, st, stanza.Errorf("item-not-found", "Unknown RSM id."))
				return
			}
			where, args = append(where, "id > ?"), append(args, id)
		}
		if before := set.Child(nsRSM, "before"); before != nil {
			order = "DESC" // the page just before (the last page when empty)
			if before.Text != "" {
				id, err := strconv.ParseInt(before.Text, 10, 64)
				if err != nil {
					bridges.Refuse(b.host, st, stanza.Errorf("item-not-found", "Unknown RSM id."))
					return
				}
				where, args = append(where, "id < ?"), append(args, id)
			}
		}
	}
	type item struct {
		id         int64
		nick, body string
		stamp      int64
	}
	var items []item
	key, done := b.storedKey(ctx, a.Server, a.Name)
	args[2] = key
	rows, err := b.host.Store().DB().QueryContext(ctx,
		`SELECT id, nick, body, stamp FROM irc_history WHERE `+strings.Join(where, " AND ")+
			` ORDER BY id `+order+` LIMIT ?`, append(args, max+1)...)
	if err != nil {
		done()
		b.host.Log().Error("cannot query the irc archive", "user", u.JID, "err", err)
		bridges.Refuse(b.host, st, stanza.Errorf("internal-server-error", "The archive cannot be read."))
		return
	}
	for rows.Next() {
		var it item
		if rows.Scan(&it.id, &it.nick, &it.body, &it.stamp) == nil {
			items = append(items, it)
		}
	}
	rows.Close()
	done()
	complete := len(items) <= max
	if !complete {
		items = items[:max]
	}
	if order == "DESC" {
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	}
	for _, it := range items {
		inner := stanza.Message(room+"/"+it.nick, u.JID, "groupchat", "", it.body)
		res := xmlel.New(nsMAM, "result").SetAttr("queryid", q.Attr("queryid")).SetAttr("id", strconv.FormatInt(it.id, 10))
		res.Add(xmlel.New(nsForward, "forwarded").Add(
			xmlel.New(stanza.NSDelay, "delay").SetAttr("stamp", time.UnixMilli(it.stamp).UTC().Format("2006-01-02T15:04:05.000Z")),
			inner))
		b.host.Send(stanza.New("message", room, u.Full, "", "").Add(res))
	}
	fin := xmlel.New(nsMAM, "fin")
	if complete {
		fin.SetAttr("complete", "true")
	}
	rs := xmlel.New(nsRSM, "set")
	if len(items) > 0 {
		rs.Add(xmlel.New(nsRSM, "first").WithText(strconv.FormatInt(items[0].id, 10)))
		rs.Add(xmlel.New(nsRSM, "last").WithText(strconv.FormatInt(items[len(items)-1].id, 10)))
	}
	b.host.Send(stanza.Result(st, fin.Add(rs)))
}
