package irc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// defaultHistory is how many archived messages a join gets without a
// <history/> element.
const defaultHistory = 20

// chanSettings are a user's settings for one channel.
type chanSettings struct {
	Persistent bool
	Record     bool
}

func (b *Bridge) loadChanSettings(ctx context.Context, user, server, name string) (chanSettings, error) {
	cs := chanSettings{Record: true}
	key, done := b.storedKey(ctx, server, name)
	defer done()
	err := b.host.Store().DB().QueryRowContext(ctx,
		`SELECT persistent, record_history FROM irc_channels WHERE jid = ? AND server = ? AND channel = ?`,
		user, server, key).Scan(&cs.Persistent, &cs.Record)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return cs, fmt.Errorf("failed to read the irc channel settings: %w", err)
	}
	return cs, nil
}

// saveChanSettings stores a channel's settings; a new row (or one from
// before the spelling was kept) takes name as the channel's spelling.
func (b *Bridge) saveChanSettings(ctx context.Context, user, server, name string, cs chanSettings) error {
	key, done := b.storedKey(ctx, server, name)
	defer done()
	_, err := b.host.Store().DB().ExecContext(ctx,
		`INSERT INTO irc_channels (jid, server, channel, name, persistent, record_history) VALUES (?, ?, ?, ?, ?, ?)
		 ON CONFLICT (jid, server, channel) DO UPDATE SET persistent = excluded.persistent, record_history = excluded.record_history,
		 name = CASE irc_channels.name WHEN '' THEN excluded.name ELSE irc_channels.name END`,
		user, server, key, name, cs.Persistent, cs.Record)
	if err != nil {
		return fmt.Errorf("failed to store the irc channel settings: %w", err)
	}
	return nil
}

// rememberNick stores the nick and the channel's spelling for rejoining.
func (b *Bridge) rememberNick(ctx context.Context, user, server, name, nick string) {
	key, done := b.storedKey(ctx, server, name)
	defer done()
	_, err := b.host.Store().DB().ExecContext(ctx,
		`INSERT INTO irc_channels (jid, server, channel, name, nick) VALUES (?, ?, ?, ?, ?)
		 ON CONFLICT (jid, server, channel) DO UPDATE SET nick = excluded.nick, name = excluded.name`, user, server, key, name, nick)
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
			}
		}
	}
	return &bridges.CommandResult{Done: true, Note: "Settings for " + a.Name + " saved."}, nil
}

// record archives a channel message when the channel keeps history. It
// returns the stanza-id: the archive id, or a random one when not archived.
func (n *network) record(ctx context.Context, ch *channel, nick, body string) string {
	if !ch.settings.Record {
		return stanza.NewID()
	}
	key, done := n.b.storedKey(ctx, n.server, ch.name)
	res, err := n.b.host.Store().DB().ExecContext(ctx,
		`INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES (?, ?, ?, ?, ?, ?)`,
		n.user, n.server, key, nick, body, time.Now().UnixMilli())
	done()
	if err != nil {
		n.b.host.Log().Warn("cannot archive an irc message", "user", n.user, "err", err)
		return stanza.NewID()
	}
	id, err := res.LastInsertId()
	if err != nil {
		return stanza.NewID()
	}
	return strconv.FormatInt(id, 10)
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
func (n *network) sendHistory(ch *channel, full string, h historyReq) {
	if h.maxStanzas == 0 || h.maxChars == 0 {
		return
	}
	msgs, err := n.history(ch, full, h)
	if err != nil {
		n.b.host.Log().Warn("cannot read the irc history", "user", n.user, "err", err)
		return
	}
	for i := len(msgs) - 1; i >= 0; i-- {
		n.b.host.Send(msgs[i])
	}
}

// history reads the messages sendHistory replays, newest first.
func (n *network) history(ch *channel, full string, h historyReq) ([]*xmlel.Element, error) {
	key, done := n.b.storedKey(n.b.ctx, n.server, ch.name)
	defer done()
	rows, err := n.b.host.Store().DB().QueryContext(n.b.ctx,
		`SELECT id, nick, body, stamp FROM irc_history WHERE jid = ? AND server = ? AND channel = ? AND stamp >= ?
		 ORDER BY id DESC LIMIT ?`, n.user, n.server, key, h.since.UnixMilli(), h.maxStanzas)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var msgs []*xmlel.Element
	chars := 0
	for rows.Next() {
		var id, stamp int64
		var nick, body string
		if err := rows.Scan(&id, &nick, &body, &stamp); err != nil {
			break
		}
		msg := stanza.Message(ch.jid(n)+"/"+nick, full, "groupchat", stanza.NewID(), body)
		msg.Add(xmlel.New(stanza.NSDelay, "delay").SetAttr("from", ch.jid(n)).
			SetAttr("stamp", time.UnixMilli(stamp).UTC().Format("2006-01-02T15:04:05.000Z")))
		msg.Add(xmlel.New(stanza.NSStanzaID, "stanza-id").SetAttr("id", strconv.FormatInt(id, 10)).SetAttr("by", ch.jid(n)))
		chars += len(msg.String())
		if h.maxChars >= 0 && chars > h.maxChars {
			break
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// restore rejoins the persistent channels after a start.
func (b *Bridge) restore(ctx context.Context) {
	// The channel is rejoined under its spelling; rows from before the
	// spelling was kept have only the key.
	rows, err := b.host.Store().DB().QueryContext(ctx,
		`SELECT jid, server, CASE name WHEN '' THEN channel ELSE name END, nick FROM irc_channels WHERE persistent = 1 AND nick != ''`)
	if err != nil {
		b.host.Log().Error("cannot read the persistent irc channels", "err", err)
		return
	}
	type row struct{ jid, server, channel, nick string }
	var all []row
	for rows.Next() {
		var r row
		if rows.Scan(&r.jid, &r.server, &r.channel, &r.nick) == nil {
			all = append(all, r)
		}
	}
	rows.Close()
	for _, r := range all {
		r := r
		if !b.host.Allowed(r.jid) {
			continue
		}
		b.post(r.jid, func(ctx context.Context) {
			u := &bridges.User{JID: r.jid}
			if reg, err := b.host.Registration(ctx, r.jid); err == nil {
				u.Registration = reg
			}
			n, err := b.network(ctx, u, r.server, r.nick)
			if err != nil {
				b.host.Log().Error("cannot rejoin a persistent irc channel", "user", r.jid, "err", err)
				return
			}
			n.join(ctx, r.channel, "", r.nick, historyReq{}, "")
		})
	}
	if len(all) > 0 {
		b.host.Log().Info("rejoining persistent irc channels", "count", len(all))
	}
}
