package irc

import (
	"context"
	"errors"
	"sync"

	"passerelle/store"
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
func (n *network) setCasemap(ctx context.Context, cm string) {
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
	if merged := n.b.storeCasemap(ctx, n.server, cm); merged != nil {
		// Channels loaded under the old keys take the settings of the
		// row they are now (merged rows may have changed).
		for _, ch := range n.chans {
			if cs, ok := merged[store.IRCChannelRef{User: n.user, Key: foldWith(cm, ch.name)}]; ok {
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

// withKey runs fn with the stored key of channel name on server: the
// server's rows are not re-keyed while fn runs. fn takes no other key.
func (b *Bridge) withKey(ctx context.Context, server, name string, fn func(key string) error) error {
	b.keys.mu.RLock()
	defer b.keys.mu.RUnlock()
	return fn(foldWith(b.storedCasemap(ctx, server), name))
}

// storedCasemap returns the mapping of server's stored keys, read once
// from the store. A database error gives rfc1459 (the mapping of keys
// written before the mappings were stored), not remembered. Callers hold
// b.keys.mu.
func (b *Bridge) storedCasemap(ctx context.Context, server string) string {
	k := &b.keys
	k.cmu.Lock()
	cm, ok := k.cms[server]
	k.cmu.Unlock()
	if ok {
		return cm
	}
	cm, err := b.db.IRCCasemap(ctx, server)
	switch {
	case errors.Is(err, store.ErrNotFound):
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

// storeCasemap makes cm the mapping of server's stored keys. When it was
// another, every user's rows of the server are re-keyed and the merged
// settings by new key are returned; nil when nothing changed or the
// re-keying failed (logged; the old keys stay in use).
func (b *Bridge) storeCasemap(ctx context.Context, server, cm string) map[store.IRCChannelRef]chanSettings {
	b.keys.mu.Lock()
	defer b.keys.mu.Unlock()
	old := b.storedCasemap(ctx, server)
	if old == cm {
		return nil
	}
	merged, err := b.db.RekeyIRCServer(ctx, server, cm, func(name string) string { return foldWith(cm, name) })
	if err != nil {
		b.host.Log().Error("cannot re-key the stored irc channels for the server's case mapping; keeping the old one",
			"server", server, "stored", old, "casemapping", cm, "err", err)
		return nil
	}
	b.keys.remember(server, cm)
	b.host.Log().Info("irc case mapping changed; stored channels re-keyed", "server", server, "from", old, "to", cm, "channels", len(merged))
	return merged
}
