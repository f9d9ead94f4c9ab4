package irc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// mucAdmin handles muc#admin sets on a room: kick (role none), voice
// (role participant / visitor), op (role moderator, affiliation admin).
func (b *Bridge) mucAdmin(u *bridges.User, st *xmlel.Element, n *network, ch *channel) {
	q := st.Child(stanza.NSMUCAdmin, "query")
	switch st.Attr("type") {
	case "get":
		b.mucAdminList(u, st, n, ch)
		return
	case "set":
	default:
		return
	}
	if n == nil || ch == nil || ch.resources[u.Full] == nil {
		bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "Join the room first."))
		return
	}
	if n.c == nil || !n.registered {
		bridges.Refuse(b.host, st, stanza.Errorf("recipient-unavailable", "Not connected to "+n.server+"."))
		return
	}
	type line struct{ cmd, a, b, c string }
	var lines []line
	for _, it := range q.ChildrenNamed(stanza.NSMUCAdmin, "item") {
		nick := it.Attr("nick")
		if nick == "" {
			bridges.Refuse(b.host, st, stanza.Errorf("bad-request", "Give the occupant's nick."))
			return
		}
		reason := strings.Join(strings.Fields(it.ChildText("", "reason")), " ")
		switch {
		case it.Attr("role") == "none":
			lines = append(lines, line{"KICK", ch.name, nick, reason})
		case it.Attr("role") == "visitor":
			lines = append(lines, line{"MODE", ch.name, "-v", nick})
		case it.Attr("role") == "participant", it.Attr("affiliation") == "member":
			lines = append(lines, line{"MODE", ch.name, "+v", nick})
		case it.Attr("role") == "moderator", it.Attr("affiliation") == "admin":
			lines = append(lines, line{"MODE", ch.name, "+o", nick})
		case it.Attr("affiliation") == "none":
			lines = append(lines, line{"MODE", ch.name, "-o", nick})
		default:
			bridges.Refuse(b.host, st, stanza.Errorf("feature-not-implemented", "This change has no IRC equivalent."))
			return
		}
	}
	for _, l := range lines {
		var err error
		if l.cmd == "KICK" && l.c == "" {
			err = n.send("KICK", l.a, l.b)
		} else {
			err = n.send(l.cmd, l.a, l.b, l.c)
		}
		if err != nil {
			bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", err.Error()))
			return
		}
	}
	b.host.Send(stanza.Result(st, nil))
}

// connectionInfo is the "get-irc-connection-info" command.
func (b *Bridge) connectionInfo(u *bridges.User, server string) *bridges.CommandResult {
	n := b.networkOf(u.JID, server)
	if n == nil {
		return &bridges.CommandResult{Done: true, Note: "You are not connected to " + server + "."}
	}
	var s strings.Builder
	switch {
	case n.c != nil && n.registered:
		link := "not encrypted"
		if n.c.encrypted {
			link = "encrypted with TLS"
		}
		fmt.Fprintf(&s, "Connected to %s (%s, %s) as %s since %s.", server, n.c.nc.RemoteAddr(), link, n.nick, n.connectedAt.UTC().Format(time.RFC3339))
	case n.c != nil:
		fmt.Fprintf(&s, "Connecting to %s (%s).", server, n.c.nc.RemoteAddr())
	default:
		fmt.Fprintf(&s, "Not connected to %s; next attempt at %s.", server, n.retryAt.UTC().Format(time.RFC3339))
	}
	var names []string
	for _, ch := range n.chans {
		names = append(names, ch.name)
	}
	sort.Strings(names)
	if len(names) > 0 {
		s.WriteString(" Channels: " + strings.Join(names, ", ") + ".")
	}
	return &bridges.CommandResult{Done: true, Note: s.String()}
}

// disconnectCommand is "disconnect-from-irc-server" on the gateway.
func (b *Bridge) disconnectCommand(ctx context.Context, u *bridges.User, f *form.Form) (*bridges.CommandResult, error) {
	nets := b.networksOf(u.JID)
	if f == nil {
		var servers []string
		for k := range nets {
			servers = append(servers, k)
		}
		if len(servers) == 0 {
			return &bridges.CommandResult{Done: true, Note: "You are not connected to any IRC server."}, nil
		}
		sort.Strings(servers)
		field := form.Field{Var: "irc-servers", Type: "list-multi", Label: "IRC servers to leave", Values: servers}
		for _, sv := range servers {
			field.Options = append(field.Options, form.Option{Label: sv, Value: sv})
		}
		return &bridges.CommandResult{Form: &form.Form{Type: "form", Title: "Disconnect from IRC servers",
			Fields: []form.Field{field, {Var: "quit-message", Type: form.TextSingle, Label: "Quit message", Values: []string{"Disconnected by the user"}}}}}, nil
	}
	fd, _ := f.Field("irc-servers")
	msg := strings.Join(strings.Fields(f.Get("quit-message")), " ")
	var done []string
	for _, server := range fd.Values {
		n := nets[server]
		if n == nil {
			continue
		}
		n.disconnect(msg)
		done = append(done, server)
	}
	if len(done) == 0 {
		return nil, stanza.Errorf("item-not-found", "None of these servers is connected.")
	}
	return &bridges.CommandResult{Done: true, Note: "Disconnected from " + strings.Join(done, ", ") + "."}, nil
}

// disconnect leaves every room (each resource sees its self-presence go
// unavailable with the reason) and quits.
func (n *network) disconnect(reason string) {
	for _, ch := range n.chans {
		for full := range ch.pending {
			n.b.host.Send(presenceError(ch.jid(n)+"/"+ch.pending[full], full, stanza.Errorf("recipient-unavailable", "Disconnected from "+n.server+".")))
		}
		n.broadcast(ch, func(full string) *xmlel.Element {
			p := stanza.Presence(ch.jid(n)+"/"+n.nick, full, "unavailable")
			p.Add(mucUserX(member{nick: n.nick}, "110", "332"))
			return p.AddText("status", "Disconnected from "+n.server+".")
		})
	}
	if n.c != nil {
		l, err := buildLine("QUIT", reason)
		if err != nil {
			l, _ = buildLine("QUIT", "Passerelle")
		}
		n.c.close(l)
		n.c = nil
	}
	n.forget()
}

// mucOwner serves the XEP-0045 room configuration form: the same settings
// as the channel's "configure" command.
func (b *Bridge) mucOwner(ctx context.Context, u *bridges.User, st *xmlel.Element, a mapping.IRCAddr) {
	q := st.Child(stanza.NSMUCOwner, "query")
	switch st.Attr("type") {
	case "get":
		res, err := b.channelCommand(ctx, u, a, nil)
		if err != nil {
			b.refuseErr(st, err)
			return
		}
		f := res.Form
		f.Fields = append([]form.Field{{Var: "FORM_TYPE", Type: form.Hidden, Values: []string{stanza.NSMUCRoomConfig}}}, f.Fields...)
		b.host.Send(stanza.Result(st, xmlel.New(stanza.NSMUCOwner, "query").Add(f.Element())))
	case "set":
		f, err := form.Find(q)
		if err != nil {
			bridges.Refuse(b.host, st, stanza.Errorf("bad-request", "Submit the room configuration form."))
			return
		}
		if f.Type == "cancel" {
			b.host.Send(stanza.Result(st, nil))
			return
		}
		if _, err := b.channelCommand(ctx, u, a, f); err != nil {
			b.refuseErr(st, err)
			return
		}
		b.host.Send(stanza.Result(st, nil))
	}
}

// refuseErr answers st with err (a *stanza.Error, or internal-server-error).
func (b *Bridge) refuseErr(st *xmlel.Element, err error) {
	var se *stanza.Error
	if errors.As(err, &se) {
		bridges.Refuse(b.host, st, se)
		return
	}
	b.host.Log().Error("irc room configuration failed", "err", err)
	bridges.Refuse(b.host, st, stanza.Errorf("internal-server-error", "The gateway cannot store the settings."))
}
