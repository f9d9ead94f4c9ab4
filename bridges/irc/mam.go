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
	"passerelle/store"
)

const mamMax = 100

// withFilter reads the "with" field of a query on room's archive:
// room/nick selects one occupant's messages (nicks compared without
// case), the bare room JID selects all, any other JID none (the archive
// holds no real JIDs).
func withFilter(with, room string) (nick string, none bool, e *stanza.Error) {
	bare, nick, _ := strings.Cut(with, "/")
	if bare == "" || strings.ContainsAny(with, " \t\r\n") {
		return "", false, stanza.Errorf("bad-request", "with is not a JID.")
	}
	if !strings.EqualFold(bare, room) {
		return "", true, nil
	}
	return nick, false, nil
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
	q := st.Child(stanza.NSMAM, "query")
	if st.Attr("type") != "set" {
		if st.Attr("type") == "get" {
			// The form of supported fields.
			f := &form.Form{Type: "form", Fields: []form.Field{
				{Var: "FORM_TYPE", Type: form.Hidden, Values: []string{stanza.NSMAM}},
				{Var: "with", Type: form.JIDSingle}, {Var: "start", Type: form.TextSingle}, {Var: "end", Type: form.TextSingle}}}
			b.host.Send(stanza.Result(st, xmlel.New(stanza.NSMAM, "query").Add(f.Element())))
		}
		return
	}
	room := mapping.IRCAddr{Kind: mapping.IRCChannel, Name: a.Name, Server: a.Server}.Local() + "@" + b.host.Domain()
	aq, none, e := archiveQuery(q, room)
	if e != nil {
		bridges.Refuse(b.host, st, e)
		return
	}
	aq.User, aq.Server = u.JID, a.Server
	var items []store.IRCMessage
	more := false
	if !none {
		err := b.withKey(ctx, a.Server, a.Name, func(key string) (err error) {
			aq.Channel = key
			items, more, err = b.db.QueryIRCArchive(ctx, aq)
			return err
		})
		if err != nil {
			b.host.Log().Error("cannot query the irc archive", "user", u.JID, "err", err)
			bridges.Refuse(b.host, st, stanza.Errorf("internal-server-error", "The archive cannot be read."))
			return
		}
	}
	for _, it := range items {
		// A forwarded stanza is a client's (XEP-0297), not the component's.
		inner := stanza.AsClient(stanza.Message(room+"/"+it.Nick, u.JID, "groupchat", "", it.Body))
		res := xmlel.New(stanza.NSMAM, "result").SetAttr("queryid", q.Attr("queryid")).SetAttr("id", strconv.FormatInt(it.ID, 10))
		res.Add(xmlel.New(stanza.NSForward, "forwarded").Add(
			xmlel.New(stanza.NSDelay, "delay").SetAttr("stamp", it.Stamp.UTC().Format("2006-01-02T15:04:05.000Z")),
			inner))
		b.host.Send(stanza.New("message", room, u.Full, "", "").Add(res))
	}
	fin := xmlel.New(stanza.NSMAM, "fin")
	if !more {
		fin.SetAttr("complete", "true")
	}
	rs := xmlel.New(stanza.NSRSM, "set")
	if len(items) > 0 {
		rs.Add(xmlel.New(stanza.NSRSM, "first").WithText(strconv.FormatInt(items[0].ID, 10)))
		rs.Add(xmlel.New(stanza.NSRSM, "last").WithText(strconv.FormatInt(items[len(items)-1].ID, 10)))
	}
	b.host.Send(stanza.Result(st, fin.Add(rs)))
}

// archiveQuery reads the form and the RSM set of a MAM query on room's
// archive (not the user, server and channel); none is a query nothing can
// match.
func archiveQuery(q *xmlel.Element, room string) (aq store.IRCArchiveQuery, none bool, e *stanza.Error) {
	aq.Max = mamMax
	if f, err := form.Find(q); err == nil {
		for _, fl := range []struct {
			name string
			dst  **time.Time
		}{{"start", &aq.Start}, {"end", &aq.End}} {
			if v := f.Get(fl.name); v != "" {
				t, err := time.Parse(time.RFC3339, v)
				if err != nil {
					return aq, false, stanza.Errorf("bad-request", fl.name+" is not an XEP-0082 date-time")
				}
				*fl.dst = &t
			}
		}
		if w := f.Get("with"); w != "" {
			if aq.Nick, none, e = withFilter(w, room); e != nil {
				return aq, false, e
			}
		}
	}
	set := q.Child(stanza.NSRSM, "set")
	if set == nil {
		return aq, none, nil
	}
	if v, err := strconv.Atoi(set.ChildText(stanza.NSRSM, "max")); err == nil && v >= 0 && v < aq.Max {
		aq.Max = v
	}
	if after := set.Child(stanza.NSRSM, "after"); after != nil {
		if aq.After, e = rsmID(after.Text); e != nil {
			return aq, false, e
		}
	}
	if before := set.Child(stanza.NSRSM, "before"); before != nil {
		aq.Last = true // the page just before (the last page when empty)
		if before.Text != "" {
			if aq.Before, e = rsmID(before.Text); e != nil {
				return aq, false, e
			}
		}
	}
	return aq, none, nil
}

func rsmID(s string) (*int64, *stanza.Error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil, stanza.Errorf("item-not-found", "Unknown RSM id.")
	}
	return &id, nil
}
