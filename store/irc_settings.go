package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// The IRC bridge's settings: a user's settings for each network (ad-hoc
// "configure" on the network), and for each channel (ad-hoc "configure"
// on the room, and the nick to rejoin it with). A channel is named by its
// key, the name folded with the server's case mapping (see
// RekeyIRCServer), and keeps its spelling.

// IRCNetworkSettings returns user's settings for server, as the bridge
// stored them (JSON), or ErrNotFound.
func (s *Store) IRCNetworkSettings(ctx context.Context, user, server string) ([]byte, error) {
	var raw string
	err := s.db.QueryRowContext(ctx, `SELECT settings FROM irc_networks WHERE jid = ? AND server = ?`, user, server).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read the irc network settings: %w", err)
	}
	return []byte(raw), nil
}

// PutIRCNetworkSettings replaces user's settings for server.
func (s *Store) PutIRCNetworkSettings(ctx context.Context, user, server string, settings []byte) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO irc_networks (jid, server, settings) VALUES (?, ?, ?)
		ON CONFLICT (jid, server) DO UPDATE SET settings = excluded.settings`, user, server, string(settings))
	if err != nil {
		return fmt.Errorf("failed to store the irc network settings: %w", err)
	}
	return nil
}

// IRCChannelSettings are a user's settings for one channel.
type IRCChannelSettings struct {
	Persistent bool // stay in the channel when all the user's clients left it
	Record     bool // keep the channel's history
}

// IRCChannelSettings returns user's settings for the channel key on
// server; a channel never configured has the defaults (recorded, not
// persistent).
func (s *Store) IRCChannelSettings(ctx context.Context, user, server, key string) (IRCChannelSettings, error) {
	cs := IRCChannelSettings{Record: true}
	err := s.db.QueryRowContext(ctx,
		`SELECT persistent, record_history FROM irc_channels WHERE jid = ? AND server = ? AND channel = ?`,
		user, server, key).Scan(&cs.Persistent, &cs.Record)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return IRCChannelSettings{Record: true}, fmt.Errorf("failed to read the irc channel settings: %w", err)
	}
	return cs, nil
}

// PutIRCChannelSettings stores user's settings for the channel key on
// server; a new row (or one from before the spelling was kept) takes
// name as the channel's spelling.
func (s *Store) PutIRCChannelSettings(ctx context.Context, user, server, key, name string, cs IRCChannelSettings) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO irc_channels (jid, server, channel, name, persistent, record_history) VALUES (?, ?, ?, ?, ?, ?)
		 ON CONFLICT (jid, server, channel) DO UPDATE SET persistent = excluded.persistent, record_history = excluded.record_history,
		 name = CASE irc_channels.name WHEN '' THEN excluded.name ELSE irc_channels.name END`,
		user, server, key, name, cs.Persistent, cs.Record)
	if err != nil {
		return fmt.Errorf("failed to store the irc channel settings: %w", err)
	}
	return nil
}

// PutIRCChannelNick stores the nick user joined the channel key on server
// with, and the spelling of that join, for rejoining.
func (s *Store) PutIRCChannelNick(ctx context.Context, user, server, key, name, nick string) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO irc_channels (jid, server, channel, name, nick) VALUES (?, ?, ?, ?, ?)
		 ON CONFLICT (jid, server, channel) DO UPDATE SET nick = excluded.nick, name = excluded.name`, user, server, key, name, nick)
	if err != nil {
		return fmt.Errorf("failed to store the irc nick of a channel: %w", err)
	}
	return nil
}

// IRCRejoin is a persistent channel to rejoin after a start.
type IRCRejoin struct {
	User, Server string
	Name         string // the spelling (the key, in rows from before the spelling was kept)
	Nick         string
}

// PersistentIRCChannels lists the persistent channels that were joined
// with a nick: every user's, or those of users when some are named.
func (s *Store) PersistentIRCChannels(ctx context.Context, users ...string) ([]IRCRejoin, error) {
	q := `SELECT jid, server, CASE name WHEN '' THEN channel ELSE name END, nick FROM irc_channels WHERE persistent = 1 AND nick != ''`
	var args []any
	var only map[string]bool
	switch {
	case len(users) > 0 && len(users) <= claimChunk:
		q += ` AND jid IN (?` + strings.Repeat(`, ?`, len(users)-1) + `)`
		for _, u := range users {
			args = append(args, u)
		}
	case len(users) > 0:
		only = make(map[string]bool, len(users))
		for _, u := range users {
			only[u] = true
		}
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to read the persistent irc channels: %w", err)
	}
	defer rows.Close()
	var all []IRCRejoin
	for rows.Next() {
		var r IRCRejoin
		if err := rows.Scan(&r.User, &r.Server, &r.Name, &r.Nick); err != nil {
			return nil, fmt.Errorf("failed to read the persistent irc channels: %w", err)
		}
		if only == nil || only[r.User] {
			all = append(all, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the persistent irc channels: %w", err)
	}
	return all, nil
}
