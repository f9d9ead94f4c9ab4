package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// IRC channels are stored under a key: the channel name folded with the
// case mapping the server last announced (irc_servers). When a server
// announces another mapping, RekeyIRCServer moves its rows to the keys of
// the new one.

// IRCCasemap returns the case mapping of server's stored keys, or
// ErrNotFound when none was recorded.
func (s *Store) IRCCasemap(ctx context.Context, server string) (string, error) {
	var cm string
	err := s.db.QueryRowContext(ctx, `SELECT casemapping FROM irc_servers WHERE server = ?`, server).Scan(&cm)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("failed to read the irc case mapping of %s: %w", server, err)
	}
	return cm, nil
}

// IRCChannelRef is a user's channel, by key.
type IRCChannelRef struct{ User, Key string }

// RekeyIRCServer records cm as the case mapping of server's stored keys
// and moves every user's channel settings and archive of server to the
// keys fold gives their spelling (an archive without settings: its key),
// in one transaction. Channels that become one merge: persistent or
// recording if either was, with the spelling and nick of the row that
// matters most (persistent, then joined with a nick, then already under
// the new key), and the archive of both. It returns the settings of every
// channel of the server, by new key.
func (s *Store) RekeyIRCServer(ctx context.Context, server, cm string, fold func(name string) string) (map[IRCChannelRef]IRCChannelSettings, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to begin: %w", err)
	}
	defer tx.Rollback()
	chans, err := rekeyChannels(ctx, tx, server)
	if err != nil {
		return nil, err
	}
	archived, err := rekeyArchived(ctx, tx, server)
	if err != nil {
		return nil, err
	}
	p := planRekey(chans, archived, fold)

	// The archive, one statement per user: a chain of moves (a to b, b
	// to c) must not move a's rows twice. The lines moved no longer name
	// the line before them (see ArchiveIRCLine): two channels' chains
	// that become one would name the same (their first lines, none), and
	// the next line is written after the newest of either.
	for user, pairs := range p.moves {
		values := strings.Repeat("(?, ?), ", len(pairs)/2)
		if _, err := tx.ExecContext(ctx,
			`WITH r(old_key, new_key) AS (VALUES `+values[:len(values)-2]+`)
			 UPDATE irc_history SET channel = r.new_key, prev_id = NULL FROM r WHERE jid = ? AND server = ? AND channel = r.old_key`,
			append(pairs, user, server)...); err != nil {
			return nil, fmt.Errorf("failed to re-key the archive: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`WITH r(old_key, new_key) AS (VALUES `+values[:len(values)-2]+`)
			 UPDATE irc_history_windows SET channel = r.new_key FROM r WHERE jid = ? AND server = ? AND channel = r.old_key`,
			append(pairs, user, server)...); err != nil {
			return nil, fmt.Errorf("failed to re-key the archive windows: %w", err)
		}
	}
	// The settings: the rows whose key changes or that merge are deleted,
	// then written again under their new key, merged.
	for _, r := range p.deletes {
		if _, err := tx.ExecContext(ctx, `DELETE FROM irc_channels WHERE jid = ? AND server = ? AND channel = ?`, r.User, server, r.Key); err != nil {
			return nil, fmt.Errorf("failed to re-key the channels: %w", err)
		}
	}
	for _, r := range p.inserts {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO irc_channels (jid, server, channel, name, nick, persistent, record_history) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			r.user, server, r.key, r.name, r.nick, r.persistent, r.record); err != nil {
			return nil, fmt.Errorf("failed to re-key the channels: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO irc_servers (server, casemapping) VALUES (?, ?)
		ON CONFLICT (server) DO UPDATE SET casemapping = excluded.casemapping`, server, cm); err != nil {
		return nil, fmt.Errorf("failed to store the case mapping: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("failed to commit: %w", err)
	}
	return p.merged, nil
}

// ircChannelRow is a row of irc_channels of one server.
type ircChannelRow struct {
	user, key, name, nick string
	persistent, record    bool
}

func rekeyChannels(ctx context.Context, tx *sql.Tx, server string) ([]ircChannelRow, error) {
	rows, err := tx.QueryContext(ctx,
		`SELECT jid, channel, name, nick, persistent, record_history FROM irc_channels WHERE server = ?`, server)
	if err != nil {
		return nil, fmt.Errorf("failed to read the channels: %w", err)
	}
	defer rows.Close()
	var all []ircChannelRow
	for rows.Next() {
		var r ircChannelRow
		if err := rows.Scan(&r.user, &r.key, &r.name, &r.nick, &r.persistent, &r.record); err != nil {
			return nil, fmt.Errorf("failed to read the channels: %w", err)
		}
		all = append(all, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the channels: %w", err)
	}
	return all, nil
}

// rekeyArchived lists the archived channels of server, by user: "" for
// the channels' lines, and each user's windows and own rows.
func rekeyArchived(ctx context.Context, tx *sql.Tx, server string) ([]IRCChannelRef, error) {
	rows, err := tx.QueryContext(ctx, `SELECT jid, channel FROM irc_history WHERE server = ?
		UNION SELECT jid, channel FROM irc_history_windows WHERE server = ?`, server, server)
	if err != nil {
		return nil, fmt.Errorf("failed to read the archive: %w", err)
	}
	defer rows.Close()
	var all []IRCChannelRef
	for rows.Next() {
		var ref IRCChannelRef
		if err := rows.Scan(&ref.User, &ref.Key); err != nil {
			return nil, fmt.Errorf("failed to read the archive: %w", err)
		}
		all = append(all, ref)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the archive: %w", err)
	}
	return all, nil
}

// rekeyPlan is what re-keying one server's rows writes.
type rekeyPlan struct {
	moves   map[string][]any // by user: the archive's old and new keys, in pairs
	deletes []IRCChannelRef  // the settings rows removed,
	inserts []ircChannelRow  // and those written instead
	merged  map[IRCChannelRef]IRCChannelSettings
}

// planRekey computes the re-keying of a server's channel rows and
// archived channels with fold (see RekeyIRCServer).
func planRekey(chans []ircChannelRow, archived []IRCChannelRef, fold func(string) string) rekeyPlan {
	groups := map[IRCChannelRef][]ircChannelRow{}
	moves := map[IRCChannelRef]string{} // old key → new key, for the archive
	lineSpelling := map[IRCChannelRef]string{}
	for _, r := range chans {
		if r.name == "" {
			r.name = r.key // a row from before the spelling was kept
		}
		nk := IRCChannelRef{r.user, fold(r.name)}
		groups[nk] = append(groups[nk], r)
		moves[IRCChannelRef{r.user, r.key}] = nk.Key
		// The channels' lines (user ""): the spelling of a user's row
		// with their key (the first by name, when users spell it
		// differently and the new mapping tells the spellings apart).
		lines := IRCChannelRef{"", r.key}
		if spelling, ok := lineSpelling[lines]; !ok || r.name < spelling {
			lineSpelling[lines] = r.name
			moves[lines] = fold(r.name)
		}
	}
	// Archived channels without a settings row: their key is the spelling.
	for _, ref := range archived {
		if _, ok := moves[ref]; !ok {
			moves[ref] = fold(ref.Key)
		}
	}
	p := rekeyPlan{moves: map[string][]any{}, merged: make(map[IRCChannelRef]IRCChannelSettings, len(groups))}
	for ref, nk := range moves {
		if nk != ref.Key {
			p.moves[ref.User] = append(p.moves[ref.User], ref.Key, nk)
		}
	}
	for nk, rs := range groups {
		cs := IRCChannelSettings{}
		for _, r := range rs {
			cs.Persistent = cs.Persistent || r.persistent
			cs.Record = cs.Record || r.record
		}
		p.merged[nk] = cs
		if len(rs) == 1 && rs[0].key == nk.Key {
			continue
		}
		for _, r := range rs {
			p.deletes = append(p.deletes, IRCChannelRef{r.user, r.key})
		}
		// The spelling and nick of the row that matters most: persistent,
		// then joined with a nick, then already under this key.
		sort.SliceStable(rs, func(i, j int) bool {
			a, b := rs[i], rs[j]
			switch {
			case a.persistent != b.persistent:
				return a.persistent
			case (a.nick != "") != (b.nick != ""):
				return a.nick != ""
			case (a.key == nk.Key) != (b.key == nk.Key):
				return a.key == nk.Key
			}
			return a.name < b.name
		})
		nick := rs[0].nick
		for _, r := range rs {
			if nick == "" {
				nick = r.nick
			}
		}
		p.inserts = append(p.inserts, ircChannelRow{user: nk.User, key: nk.Key, name: rs[0].name, nick: nick,
			persistent: cs.Persistent, record: cs.Record})
	}
	return p
}
