package irc

import (
	"context"
	"sync"
	"time"
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
// one for it. A user's own line, archived as it is sent, is one the
// server does not send back to them: it is not matched for its sender,
// and does not move their cursor.

// lineTTL is how long a line waits for the other connections' copies; a
// copy later than that (a connection that far behind) is archived again.
const lineTTL = time.Minute

// lineChan names a channel's lines: its server and key.
type lineChan struct{ server, key string }

// sharedLine is a line being, or having been, archived.
type sharedLine struct {
	seq        uint64
	nick, body string
	own        string // the user who sent it, or ""
	at         time.Time

	done chan struct{} // closed once archived (or failed)
	id   int64
	err  error
}

// finish records the archive's answer for the connections waiting.
func (l *sharedLine) finish(id int64, err error) {
	l.id, l.err = id, err
	close(l.done)
}

// wait returns the archive id once the line is archived.
func (l *sharedLine) wait(ctx context.Context) (int64, error) {
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
}

// claim returns the line user's connection got (own: the line user
// sends), and whether the caller archives it (then it calls finish).
func (g *lineLog) claim(c lineChan, user, nick, body string, own bool, now time.Time) (*sharedLine, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.chans == nil {
		g.chans = map[lineChan]*chanLines{}
	}
	if now.After(g.sweep) {
		for c, cl := range g.chans {
			if cl.expire(now) {
				delete(g.chans, c)
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
	if !own {
		after := cl.cursor[user]
		for _, l := range cl.lines {
			if l.seq > after && l.own != user && l.nick == nick && l.body == body {
				cl.cursor[user] = l.seq
				return l, false
			}
		}
	}
	g.seq++
	l := &sharedLine{seq: g.seq, nick: nick, body: body, at: now, done: make(chan struct{})}
	if own {
		l.own = user
	} else {
		cl.cursor[user] = l.seq
	}
	cl.lines = append(cl.lines, l)
	return l, true
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
