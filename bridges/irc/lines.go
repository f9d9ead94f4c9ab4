package irc

import (
	"context"
	"sync"
	"time"

	"passerelle/store"
)

// A channel line reaches the gateway once per bridged user in the
// channel (each has a connection of their own), and is archived once:
// by the first connection that sees it (or the sender, as it is sent);
// the others find it here and give their users the same stanza-id. Each
// user sees it in the archive through their window (store.OpenIRCWindow).
//
// A server relays a channel's lines to its members in one order, so the
// copies are matched in order: a connection's line is the first one with
// its nick and text after the last line that connection matched (its
// cursor). So a line said twice is two lines, and a connection that
// missed a line (it was not in the channel yet) does not take a later
// one for it. A user's own message, archived as it is sent, is one the
// server does not send back to them: it is not matched for its sender,
// and does not move their cursor. The others get it as the IRC lines it
// was split into: each of those is matched to the one archived message.

// Other instances sharing the database may have users in the channel
// too: each archives the channel's lines in order, after the last one it
// archived or found there (the chanLines' last), and the store finds the
// line another instance archived first (store.ArchiveIRCLine). When that
// is a message sent as several IRC lines, its next lines are expected
// here as copies of it, as a user's own.

// lineTTL is how long a line waits for the other connections' copies; a
// copy later than that (a connection that far behind) is archived again.
const lineTTL = time.Minute

// lineChan names a channel's lines: its server and key.
type lineChan struct{ server, key string }

// sharedLine is a line as the connections get it, and the archived
// message it belongs to.
type sharedLine struct {
	seq        uint64
	nick, body string
	own        string // the user who sent it, or ""
	*archived
}

// archived is a message being, or having been, archived.
type archived struct {
	at   time.Time
	done chan struct{} // closed once archived (or failed)
	id   int64
	err  error
}

// finish records the archive's answer for the connections waiting.
func (l *archived) finish(id int64, err error) {
	l.id, l.err = id, err
	close(l.done)
}

// wait returns the archive id once the message is archived.
func (l *archived) wait(ctx context.Context) (int64, error) {
	select {
	case <-l.done:
		return l.id, l.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// chanLines are a channel's recent lines, oldest first, and each user's
// cursor: the seq of the last line they matched.
type chanLines struct {
	lines  []*sharedLine
	cursor map[string]uint64
}

// lineLog is the bridge's recent lines, by channel.
type lineLog struct {
	mu    sync.Mutex
	seq   uint64
	chans map[lineChan]*chanLines
	sweep time.Time // when to look for the channels whose lines all expired
	// newest is, by channel, the archive id of the last line archived
	// or found there: kept when the lines expire, so that a quiet
	// channel's next line is written in one statement.
	newest map[lineChan]int64
	// first is, by channel, its newest line when the first of the
	// connections now in it here joined (store.IRCLine.Joined).
	first map[lineChan]int64
	// in is, by channel, the users whose connection here is in it (their
	// window open). newest and first are kept while one is: a channel
	// left by the last is forgotten, and joined again, starts anew.
	in map[lineChan]map[string]bool
}

// known returns the id of c's last line archived or found (0: none yet)
// and c's newest line when the first of the connections now in it here
// joined (0: none).
func (g *lineLog) known(c lineChan) (last, joined int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.newest[c], g.first[c]
}

// joined records that user's connection joined c (its window opened),
// when c's newest line was newest (store.OpenIRCWindow). The first
// connection in c here sets c's first: a line after it may be a copy of
// one another instance archived, none before. No line before it is
// this instance's to look for: c's last line is at least newest.
func (g *lineLog) joined(c lineChan, user string, newest int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.in == nil {
		g.in, g.first, g.newest = map[lineChan]map[string]bool{}, map[lineChan]int64{}, map[lineChan]int64{}
	}
	users := g.in[c]
	if users == nil {
		users = map[string]bool{}
		g.in[c] = users
	}
	if len(users) == 0 {
		g.first[c] = newest
		g.newest[c] = max(g.newest[c], newest)
	}
	users[user] = true
}

// left records that user's connection left c (its window closed): once
// no connection here is in c, its first and last lines are forgotten.
func (g *lineLog) left(c lineChan, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.in[c], user)
	if len(g.in[c]) == 0 {
		delete(g.in, c)
		delete(g.first, c)
		delete(g.newest, c)
	}
}

// archived records where the archive put a line of c by nick, before
// a.finish: the channel's last line, and when it came from IRC (fromIRC)
// and is a message of several IRC lines another instance archived, its
// next lines as copies of a for the connections here.
func (g *lineLog) archived(c lineChan, nick string, l store.ArchivedLine, fromIRC bool, a *archived) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.newest == nil {
		g.newest = map[lineChan]int64{}
	}
	g.newest[c] = max(g.newest[c], l.ID)
	if fromIRC && len(l.Lines) > 1 {
		cl := g.lines(c, a.at)
		for _, p := range l.Lines[1:] {
			g.add(cl, nick, p, "", a)
		}
	}
}

// claim returns the message of the line user's connection got, and
// whether the caller archives it (then it calls finish).
func (g *lineLog) claim(c lineChan, user, nick, body string, now time.Time) (*archived, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cl := g.lines(c, now)
	after := cl.cursor[user]
	for _, l := range cl.lines {
		if l.seq > after && l.own != user && l.nick == nick && l.body == body {
			cl.cursor[user] = l.seq
			return l.archived, false
		}
	}
	a := &archived{at: now, done: make(chan struct{})}
	cl.cursor[user] = g.add(cl, nick, body, "", a)
	return a, true
}

// own returns the message user sends, which the caller archives (then it
// calls finish), and which the others get as the IRC lines parts.
func (g *lineLog) own(c lineChan, user, nick string, parts []string, now time.Time) *archived {
	g.mu.Lock()
	defer g.mu.Unlock()
	cl := g.lines(c, now)
	a := &archived{at: now, done: make(chan struct{})}
	for _, p := range parts {
		g.add(cl, nick, p, user, a)
	}
	return a
}

// lines returns c's lines, the expired ones forgotten. Callers hold g.mu.
func (g *lineLog) lines(c lineChan, now time.Time) *chanLines {
	if g.chans == nil {
		g.chans = map[lineChan]*chanLines{}
	}
	if now.After(g.sweep) {
		for c, cl := range g.chans {
			if cl.expire(now) {
				delete(g.chans, c)
			}
		}
		// The last lines of the channels no connection here is in
		// (archived as it left, or with no window opened).
		for c := range g.newest {
			if len(g.in[c]) == 0 {
				delete(g.newest, c)
			}
		}
		g.sweep = now.Add(lineTTL)
	}
	cl := g.chans[c]
	if cl != nil {
		cl.expire(now)
	} else {
		cl = &chanLines{cursor: map[string]uint64{}}
		g.chans[c] = cl
	}
	return cl
}

// add appends a line of a to cl and returns its seq. Callers hold g.mu.
func (g *lineLog) add(cl *chanLines, nick, body, own string, a *archived) uint64 {
	g.seq++
	cl.lines = append(cl.lines, &sharedLine{seq: g.seq, nick: nick, body: body, own: own, archived: a})
	return g.seq
}

// expire forgets the lines older than lineTTL and reports whether none
// is left. Callers hold the lineLog's lock.
func (cl *chanLines) expire(now time.Time) bool {
	i := 0
	for i < len(cl.lines) && now.Sub(cl.lines[i].at) > lineTTL {
		cl.lines[i] = nil
		i++
	}
	cl.lines = cl.lines[i:]
	return len(cl.lines) == 0
}
