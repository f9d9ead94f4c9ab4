package irc

import (
	"context"
	"time"

	irc "gopkg.in/irc.v4"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/mapping"
)

// WHOIS answers the vCard of an IRC contact (its realname, RPL_WHOISUSER)
// and the away message of a watched one (RPL_AWAY). The realnames are
// cached in memory for realnameTTL, shared by the users of a network: a
// realname is public, changes only with a new connection of its owner,
// and costs one WHOIS to learn again after a restart, so it is not worth
// a table in the store.

const (
	// whoisTimeout bounds how long a WHOIS may go unanswered.
	whoisTimeout = 10 * time.Second
	// realnameTTL is how long a realname is taken from the cache.
	realnameTTL = 10 * time.Minute
	// maxRealnames bounds the cache.
	maxRealnames = 4096
)

// whoisResult is what a WHOIS told, or why it failed.
type whoisResult struct {
	realname string
	away     bool
	awayMsg  string
	err      *stanza.Error
	notFound bool // err is the nick's absence (ERR_NOSUCHNICK)
}

// whoisReq is a WHOIS under way; the requests for the same nick share it.
type whoisReq struct {
	nick  string
	res   whoisResult
	found bool // RPL_WHOISUSER came
	done  []func(context.Context, whoisResult)
	timer *time.Timer
}

// realname is a cached realname.
type realname struct {
	name string
	at   time.Time
}

// whoisNick sends a WHOIS for nick (or joins the one under way) and calls
// done on the user's goroutine with its outcome: when the server ends
// it, refuses it, or does not answer within whoisTimeout.
func (n *network) whoisNick(nick string, done func(context.Context, whoisResult)) {
	k := n.fold(nick)
	if r := n.whois[k]; r != nil {
		r.done = append(r.done, done)
		return
	}
	r := &whoisReq{nick: nick, done: []func(context.Context, whoisResult){done}}
	if err := n.send("WHOIS", nick); err != nil {
		r.res.err = stanza.Errorf("recipient-unavailable", "Cannot ask "+n.server+" about "+nick+": "+err.Error())
		n.b.post(n.user, func(ctx context.Context) { n.endWhoisReq(ctx, r) })
		return
	}
	if n.whois == nil {
		n.whois = map[string]*whoisReq{}
	}
	n.whois[k] = r
	r.timer = time.AfterFunc(n.b.whoisTimeout, func() {
		n.b.post(n.user, func(ctx context.Context) {
			if n.whois[k] != r {
				return
			}
			delete(n.whois, k)
			r.res = whoisResult{err: stanza.Errorf("remote-server-timeout", n.server+" did not answer the WHOIS of "+nick+" within "+n.b.whoisTimeout.String()+".")}
			n.b.host.Log().Info("an irc server did not answer a WHOIS", "user", n.user, "server", n.server, "nick", nick)
			n.endWhoisReq(ctx, r)
		})
	})
}

// whoisReply handles the replies to a WHOIS under way (311, 301, 318,
// and 401 for its nick). It reports whether m was one.
func (n *network) whoisReply(ctx context.Context, m *irc.Message) bool {
	switch m.Command {
	case "311", "301", "318", "401":
	default:
		return false
	}
	if len(n.whois) == 0 || len(m.Params) < 2 {
		return false
	}
	k := n.fold(m.Param(1))
	r := n.whois[k]
	if r == nil {
		return false
	}
	switch m.Command {
	case "311": // RPL_WHOISUSER: me nick user host * :realname
		r.found = true
		r.nick = m.Param(1)
		r.res.realname = decodeText(m.Trailing())
	case "301": // RPL_AWAY
		r.res.away, r.res.awayMsg = true, decodeText(m.Trailing())
	case "318", "401": // RPL_ENDOFWHOIS, ERR_NOSUCHNICK
		if m.Command == "401" || !r.found {
			r.res = whoisResult{notFound: true, err: stanza.Errorf("item-not-found", "There is no user "+r.nick+" on "+n.server+" now.")}
		}
		delete(n.whois, k)
		r.timer.Stop()
		n.endWhoisReq(ctx, r)
	}
	return true
}

// endWhoisReq applies a finished WHOIS (the realname cached, a watched
// nick's state) and calls its waiters.
func (n *network) endWhoisReq(ctx context.Context, r *whoisReq) {
	if r.res.err == nil {
		n.b.cacheRealname(n.server, n.fold(r.nick), r.res.realname)
		if c := n.watched(r.nick); c != nil {
			c.nick = r.nick
			c.known, c.online = true, true
			n.setAway(c, r.res.away, r.res.awayMsg)
		}
	}
	for _, f := range r.done {
		f(ctx, r.res)
	}
}

// dropWhois ends the WHOIS under way when the connection ends.
func (n *network) dropWhois(ctx context.Context) {
	ws := n.whois
	n.whois = nil
	for _, r := range ws {
		r.timer.Stop()
		r.res = whoisResult{err: stanza.Errorf("recipient-unavailable", "The connection to "+n.server+" was lost.")}
		n.endWhoisReq(ctx, r)
	}
}

// cacheRealname keeps a realname for realnameTTL.
func (b *Bridge) cacheRealname(server, folded, name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.realnames == nil {
		b.realnames = map[string]realname{}
	}
	if len(b.realnames) >= maxRealnames {
		for k, v := range b.realnames {
			if time.Since(v.at) > realnameTTL {
				delete(b.realnames, k)
			}
		}
		for k := range b.realnames {
			if len(b.realnames) < maxRealnames {
				break
			}
			delete(b.realnames, k)
		}
	}
	b.realnames[server+" "+folded] = realname{name: name, at: time.Now()}
}

// cachedRealname returns a realname learnt less than realnameTTL ago.
func (b *Bridge) cachedRealname(server, folded string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.realnames[server+" "+folded]
	if !ok || time.Since(r.at) > realnameTTL {
		return "", false
	}
	return r.name, true
}

// Profile implements bridges.Profiler: an IRC user's nick and realname.
// The realname comes from a WHOIS on the user's connection to the
// network (or the cache); without a connection the vCard has the nick
// only. A nick the network does not know is item-not-found; a network
// that does not answer, remote-server-timeout. Channels and networks
// are left to Handle.
func (b *Bridge) Profile(ctx context.Context, u *bridges.User, local string, answer func(context.Context, *bridges.Profile, error)) {
	a, err := mapping.ParseIRCLocal(local, "")
	if err != nil || a.Kind != mapping.IRCUser {
		answer(ctx, nil, nil)
		return
	}
	n := b.networkOf(u.JID, a.Server)
	if n == nil || n.c == nil || !n.registered {
		answer(ctx, &bridges.Profile{Nick: a.Name}, nil)
		return
	}
	if name, ok := b.cachedRealname(n.server, n.fold(a.Name)); ok {
		answer(ctx, &bridges.Profile{Nick: a.Name, Name: name}, nil)
		return
	}
	n.whoisNick(a.Name, func(ctx context.Context, r whoisResult) {
		if r.err != nil {
			answer(ctx, nil, r.err)
			return
		}
		answer(ctx, &bridges.Profile{Nick: a.Name, Name: r.realname}, nil)
	})
}

var (
	_ bridges.Profiler     = (*Bridge)(nil)
	_ bridges.UserPresence = (*Bridge)(nil)
)
