package irc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Case mappings announced by CASEMAPPING in ISUPPORT (005). Nick and
// channel comparisons on a connection use the server's; rfc1459 is the
// default until 005.
//
// Stored keys (irc_channels: channel settings and the nick for rejoining;
// irc_history: the archive) are the channel name folded with the mapping
// the server last announced, kept per server in irc_servers (rfc1459 for
// a server never seen announcing one): they are read before the
// connection exists, and on an ascii server #a[b and #a{b are two
// channels with their own settings and archive. Each irc_channels row
// also keeps the channel's spelling (name; empty in rows written before
// the column existed, whose key is then the spelling).
//
// When a connection's 005 announces a mapping other than the stored one,
// every user's rows of that server are re-keyed in one transaction: a
// channel's new key is its spelling folded with the new mapping, and its
// archive follows it. Channels that become one merge: persistent or
// recording if either was, the archive of both kept. If the re-keying
// fails, the old mapping stays in use for the stored keys, and the next
// connection tries again.
const (
	caseASCII         = "ascii"
	caseRFC1459       = "rfc1459"
	caseRFC1459Strict = "rfc1459-strict"
)

// fold is the server's case folding.
func (n *network) fold(s string) string { return foldWith(n.casemap, s) }

// foldWith folds s with the case mapping cm; an unknown mapping folds
// like rfc1459.
func foldWith(cm string, s string) string {
	i := 0
	for ; i < len(s); i++ {
		if folds(cm, s[i]) != s[i] {
			break
		}
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		b[i] = folds(cm, b[i])
	}
	return string(b)
}

func folds(cm string, c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case cm == caseASCII:
		return c
	case c == '[' || c == ']' || c == '\\':
		return c + '{' - '['
	case c == '~' && cm != caseRFC1459Strict:
		return '^'
	}
	return c
}

// setCasemap switches to the mapping cm, re-keying the channels and
// their members (joins queued before 005 were keyed with the default),
// and the stored rows of the server when their mapping was another.
func (n *network) setCasemap(cm string) {
	switch cm {
	// The constants, not cm, which may be a slice of the ISUPPORT line
	// (kept for the whole connection, it would keep the line).
	case caseASCII:
		cm = caseASCII
	case caseRFC1459:
		cm = caseRFC1459
	case caseRFC1459Strict:
		cm = caseRFC1459Strict
	default:
		n.b.host.Log().Info("unknown irc case mapping, using rfc1459", "server", n.server, "casemapping", cm)
		cm = caseRFC1459
	}
	if merged := n.b.storeCasemap(n.b.ctx, n.server, cm); merged != nil {
		// Channels loaded under the old keys take the settings of the
		// row they are now (merged rows may have changed).
		for _, ch := range n.chans {
			if cs, ok := merged[chanRef{n.user, foldWith(cm, ch.name)}]; ok {
				ch.settings = cs
			}
		}
	}
	if cm == n.casemap {
		return
	}
	n.casemap = cm
	chans := make(map[string]*channel, len(n.chans))
	for _, ch := range n.chans {
		chans[n.fold(ch.name)] = ch
		ch.members.setCasemap(cm)
		if ch.before != nil {
			ch.before.setCasemap(cm)
		}
	}
	for _, p := range n.echoes {
		if ch := n.chans[p.channel]; ch != nil {
			p.channel = n.fold(ch.name)
		}
	}
	n.chans = chans
}

// storedKeys holds the mapping of each server's stored keys. Any user's
// goroutine reads them; one re-keys a server's rows when its connection
// learns of a new mapping.
type storedKeys struct {
	// mu is held for reading from the computing of a key to the end of
	// the statement using it, and for writing while rows are re-keyed:
	// no row is written under a key of the old mapping after the switch.
	mu  sync.RWMutex
	cmu sync.Mutex        // guards cms
	cms map[string]string // by server: the mapping of its stored keys
}

// storedKey returns the stored key of channel name on server, and the
// function to call once the statements using it are done (the server's
// rows are not re-keyed in between). Never hold two keys at once.
func (b *Bridge) storedKey(ctx context.Context, server, name string) (string, func()) {
	b.keys.mu.RLock()
	return foldWith(b.storedCasemap(ctx, server), name), b.keys.mu.RUnlock
}

// storedCasemap returns the mapping of server's stored keys, read once
// from irc_servers. A database error gives rfc1459 (the mapping of keys
// written before irc_servers existed), not remembered. Callers hold
// b.keys.mu.
func (b *Bridge) storedCasemap(ctx context.Context, server string) string {
	k := &b.keys
	k.cmu.Lock()
	cm, ok := k.cms[server]
	k.cmu.Unlock()
	if ok {
		return cm
	}
	err := b.host.Store().DB().QueryRowContext(ctx, `SELECT casemapping FROM irc_servers WHERE server = ?`, server).Scan(&cm)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		cm = caseRFC1459
	case err != nil:
		b.host.Log().Warn("cannot read the irc case mapping of a server, using rfc1459", "server", server, "err", err)
		return caseRFC1459
	}
	k.remember(server, cm)
	return cm
}

func (k *storedKeys) remember(server, cm string) {
	k.cmu.Lock()
	defer k.cmu.Unlock()
	if k.cms == nil {
		k.cms = map[string]string{}
	}
	k.cms[server] = cm
}

// chanRef is a user's channel in irc_channels.
type chanRef struct{ jid, key string }

// storeCasemap makes cm the mapping of server's stored keys. When it was
// another, every user's rows of the server are re-keyed and the merged
// settings by new key are returned; nil when nothing changed or the
// re-keying failed (logged; the old keys stay in use).
func (b *Bridge) storeCasemap(ctx context.Context, server, cm string) map[chanRef]chanSettings {
	b.keys.mu.Lock()
	defer b.keys.mu.Unlock()
	old := b.storedCasemap(ctx, server)
	if old == cm {
		return nil
	}
	merged, err := b.rekeyServer(ctx, server, cm)
	if err != nil {
		b.host.Log().Error("cannot re-key the stored irc channels for the server's case mapping; keeping the old one",
			"server", server, "stored", old, "casemapping", cm, "err", err)
		return nil
	}
	b.keys.remember(server, cm)
	b.host.Log().Info("irc case mapping changed; stored channels re-keyed", "server", server, "from", old, "to", cm, "channels", len(merged))
	return merged
}

// rekeyServer re-keys server's rows of irc_channels and irc_history for
// the mapping cm and records it in irc_servers, in one transaction.
func (b *Bridge) rekeyServer(ctx context.Context, server, cm string) (map[chanRef]chanSettings, error) {
	tx, err := b.host.Store().DB().BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to begin: %w", err)
	}
	defer tx.Rollback()
	type row struct {
		key, name, nick    string
		persistent, record bool
	}
	rows, err := tx.QueryContext(ctx,
		`SELECT jid, channel, name, nick, persistent, record_history FROM irc_channels WHERE server = ?`, server)
	if err != nil {
		return nil, fmt.Errorf("failed to read the channels: %w", err)
	}
	groups := map[chanRef][]row{}
	moves := map[chanRef]string{} // old key → new key, for the archive
	for rows.Next() {
		var jid string
		var r row
		if err := rows.Scan(&jid, &r.key, &r.name, &r.nick, &r.persistent, &r.record); err != nil {
			rows.Close()
			return nil, fmt.Errorf("failed to read the channels: %w", err)
		}
		if r.name == "" {
			r.name = r.key
		}
		nk := chanRef{jid, foldWith(cm, r.name)}
		groups[nk] = append(groups[nk], r)
		moves[chanRef{jid, r.key}] = nk.key
	}
	rows.Close()
	// Archived channels without a settings row: their key is the spelling.
	rows, err = tx.QueryContext(ctx, `SELECT DISTINCT jid, channel FROM irc_history WHERE server = ?`, server)
	if err != nil {
		return nil, fmt.Errorf("failed to read the archive: %w", err)
	}
	for rows.Next() {
		var ref chanRef
		if rows.Scan(&ref.jid, &ref.key) != nil {
			continue
		}
		if _, ok := moves[ref]; !ok {
			moves[ref] = foldWith(cm, ref.key)
		}
	}
	rows.Close()

	// The archive, one statement per user: a chain of moves (a to b, b
	// to c) must not move a's rows twice.
	byUser := map[string][]any{}
	for ref, nk := range moves {
		if nk != ref.key {
			byUser[ref.jid] = append(byUser[ref.jid], ref.key, nk)
		}
	}
	for jid, pairs := range byUser {
		values := strings.Repeat("(?, ?), ", len(pairs)/2)
		if _, err := tx.ExecContext(ctx,
			`WITH r(old_key, new_key) AS (VALUES `+values[:len(values)-2]+`)
			 UPDATE irc_history SET channel = r.new_key FROM r WHERE jid = ? AND server = ? AND channel = r.old_key`,
			append(pairs, jid, server)...); err != nil {
			return nil, fmt.Errorf("failed to re-key the archive: %w", err)
		}
	}

	// The settings: the rows whose key changes or that merge are deleted,
	// then written again under their new key, merged.
	merged := make(map[chanRef]chanSettings, len(groups))
	var rewrite []chanRef
	for nk, rs := range groups {
		cs := chanSettings{}
		for _, r := range rs {
			cs.Persistent = cs.Persistent || r.persistent
			cs.Record = cs.Record || r.record
		}
		merged[nk] = cs
		if len(rs) > 1 || rs[0].key != nk.key {
			rewrite = append(rewrite, nk)
		}
	}
	for _, nk := range rewrite {
		for _, r := range groups[nk] {
			if _, err := tx.ExecContext(ctx, `DELETE FROM irc_channels WHERE jid = ? AND server = ? AND channel = ?`, nk.jid, server, r.key); err != nil {
				return nil, fmt.Errorf("failed to re-key the channels: %w", err)
			}
		}
	}
	for _, nk := range rewrite {
		rs := groups[nk]
		// The spelling and nick of the row that matters most: persistent,
		// then joined with a nick, then already under this key.
		sort.SliceStable(rs, func(i, j int) bool {
			a, b := rs[i], rs[j]
			switch {
			case a.persistent != b.persistent:
				return a.persistent
			case (a.nick != "") != (b.nick != ""):
				return a.nick != ""
			case (a.key == nk.key) != (b.key == nk.key):
				return a.key == nk.key
			}
			return a.name < b.name
		})
		nick := rs[0].nick
		for _, r := range rs {
			if nick == "" {
				nick = r.nick
			}
		}
		cs := merged[nk]
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO irc_channels (jid, server, channel, name, nick, persistent, record_history) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			nk.jid, server, nk.key, rs[0].name, nick, cs.Persistent, cs.Record); err != nil {
			return nil, fmt.Errorf("failed to re-key the channels: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO irc_servers (server, casemapping) VALUES (?, ?)
		 ON CONFLICT (server) DO UPDATE SET casemapping = excluded.casemapping`, server, cm); err != nil {
		return nil, fmt.Errorf("failed to store the case mapping: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("failed to commit: %w", err)
	}
	return merged, nil
}
