package irc

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"math"
	"slices"
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
	// queued are the views of the connections here whose users' copies
	// of this line were queued with it by the connection that archived
	// it (by), when it did (see lineLog.queuedWith); set before its
	// archived.finish.
	queued map[string]*roomView
	skip   map[string]bool // users of queued left out (see includable)
	by     string
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
	// ahead are the lines of messages recorded before they were sent
	// (ownLines with ahead), in seq order. A server relays each user's
	// messages in the order they were sent, but not in that order among
	// the others' lines: a connection matches them by sender, the first
	// after its cursor for that sender (ownCursor), and after the floor
	// its connection set as it left the channel (a line recorded before
	// that it never gets).
	ahead     []*sharedLine
	ownCursor map[ownKey]uint64
	floor     map[string]uint64
	// busy counts, by user, the lines their connection matched and has
	// not finished queuing its copies of (see done): until it has, the
	// copies of a later line are not queued for them by another
	// connection (see includable), which would put them first.
	busy map[string]int
}

// ownKey names a connection's cursor in the messages of one sender.
type ownKey struct{ user, sender string }

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
	// views is, by channel, what each connection here in it shows of
	// it (see roomView): the connection that archives a line queues its
	// copies for all of them in the same transaction, and the others,
	// when the line reaches them, queue only what it could not (see
	// covered). A channel's map is never changed once handed out
	// (viewsOf): a change replaces it.
	views map[lineChan]map[string]*roomView
	// hidden is, by channel and user, the (folded) nick another
	// connection saw leave (hideNick): a view with that nick is not shown
	// again until the user's connection joins again or left.
	hidden map[lineChan]map[string]string
	// joins is, by channel and user, the last line claimed when their
	// connection last sent a JOIN there, for lineTTL (see joining).
	joins map[lineChan]map[string]joinMark
}

// joinMark is when a connection sent a JOIN: the last line claimed then.
type joinMark struct {
	seq uint64
	at  time.Time
}

// roomView is what a connection shows of a channel, for the copies of
// its lines: the room's JID as its user's clients know it, its nick
// there, and the resources in the room (sorted). Never changed once
// shown.
type roomView struct {
	room  string
	nick  string
	fulls []string
}

// equal reports whether v and w show the same.
func (v *roomView) equal(w *roomView) bool {
	if v == nil || w == nil {
		return v == w
	}
	return v.room == w.room && v.nick == w.nick && slices.Equal(v.fulls, w.fulls)
}

// show records user's view of c (nil: it shows nothing of c), unless
// another connection saw its nick leave (hideNick).
func (g *lineLog) show(c lineChan, user string, v *roomView, fold func(string) string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if nick, ok := g.hidden[c][user]; ok && v != nil && fold(v.nick) == nick {
		v = nil
	}
	g.showLocked(c, user, v)
}

func (g *lineLog) showLocked(c lineChan, user string, v *roomView) {
	old := g.views[c]
	if old[user] == v {
		return
	}
	views := make(map[string]*roomView, len(old)+1)
	for u, w := range old {
		if u != user {
			views[u] = w
		}
	}
	if v != nil {
		views[user] = v
	}
	if g.views == nil {
		g.views = map[lineChan]map[string]*roomView{}
	}
	if len(views) == 0 {
		delete(g.views, c)
		return
	}
	g.views[c] = views
}

// viewsOf returns the views of c's connections here (not to be changed).
func (g *lineLog) viewsOf(c lineChan) map[string]*roomView {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.views[c]
}

// queuedWith records, before their archived.finish, that the copies of
// lines were queued with them by user's connection for the connections
// shown in views but those in skip (see covered).
func (g *lineLog) queuedWith(lines []*sharedLine, user string, views map[string]*roomView, skip map[string]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range lines {
		l.queued, l.skip, l.by = views, skip, user
	}
}

// markBusy counts a line user's connection matched or archives. Callers
// hold g.mu.
func (cl *chanLines) markBusy(user string) {
	if cl.busy == nil {
		cl.busy = map[string]int{}
	}
	cl.busy[user]++
}

// busyWith counts a line of c user's connection archives as its own.
func (g *lineLog) busyWith(c lineChan, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cl := g.chans[c]; cl != nil {
		cl.markBusy(user)
	}
}

// done records that user's connection queued its copies of a line of c
// it matched or archived (claimLine, busyWith).
func (g *lineLog) done(c lineChan, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cl := g.chans[c]; cl != nil && cl.busy[user] > 0 {
		if cl.busy[user]--; cl.busy[user] == 0 {
			delete(cl.busy, user)
		}
	}
}

// joining records that user's connection is sending a JOIN of c: the
// lines claimed so far are none of its own (a line said again after it
// joined is not taken for one said before).
//
// Until another connection here has matched or archived a line after it
// (see caughtUp), that one may still have lines before it to handle which
// this one never got: this one queues no copies for it.
func (g *lineLog) joining(c lineChan, user string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cl := g.chans[c]; cl != nil {
		cl.cursor[user] = g.seq
	}
	if g.joins == nil {
		g.joins = map[lineChan]map[string]joinMark{}
	}
	if g.joins[c] == nil {
		g.joins[c] = map[string]joinMark{}
	}
	g.joins[c][user] = joinMark{g.seq, now}
	delete(g.hidden[c], user)
}

// hideNick hides the views of c whose nick is nick (as fold folds it):
// a connection saw it leave c or the server, or change, before its own
// connection did; the lines after are not queued for it by others.
func (g *lineLog) hideNick(c lineChan, nick string, fold func(string) string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	nick = fold(nick)
	for user, v := range g.views[c] {
		if fold(v.nick) == nick {
			g.showLocked(c, user, nil)
			if g.hidden == nil {
				g.hidden = map[lineChan]map[string]string{}
			}
			if g.hidden[c] == nil {
				g.hidden[c] = map[string]string{}
			}
			g.hidden[c][user] = nick
		}
	}
}

// includable returns the users of views whose copies of the line at seq
// the connection of by may not queue (nil: none): their connection has
// not queued its copies of every line before it yet (busy, or a line
// after its cursors whose copies were not queued for them with it), or
// may have lines to handle that by's never got (it matched or archived
// no line since by's joined). The copies of each user are queued in the
// order their connection got the lines.
func (g *lineLog) includable(c lineChan, views map[string]*roomView, seq uint64, by string, fold func(string) string) (skip map[string]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cl := g.chans[c]
	if cl == nil {
		return nil
	}
	since := g.joins[c][by].seq
	for user := range views {
		if user == by || cl.caughtUp(user, seq, since, fold) {
			continue
		}
		if skip == nil {
			skip = map[string]bool{}
		}
		skip[user] = true
	}
	return skip
}

// caughtUp reports whether user's connection queued its copies of every
// line of cl before seq, or those it did not were queued for it, and
// has matched or archived a line after since (see joining). Callers hold
// the lineLog's lock.
func (cl *chanLines) caughtUp(user string, seq, since uint64, fold func(string) string) bool {
	if cl.busy[user] > 0 || (since > 0 && cl.cursor[user] <= since) {
		return false
	}
	after := cl.cursor[user]
	from, _ := slices.BinarySearchFunc(cl.lines, after+1, func(l *sharedLine, seq uint64) int { return cmp.Compare(l.seq, seq) })
	for _, l := range cl.lines[from:] {
		if l.seq >= seq {
			break
		}
		if l.own != user && l.coversLocked(user, fold) == nil {
			return false
		}
	}
	for _, l := range cl.ahead {
		if l.seq >= seq {
			break
		}
		if l.own != user && l.seq > max(cl.ownCursor[ownKey{user, l.own}], cl.floor[user]) && l.coversLocked(user, fold) == nil {
			return false
		}
	}
	return true
}

// coversLocked reports whether user's copies of l were queued with it
// (see covered). Callers hold the lineLog's lock.
func (l *sharedLine) coversLocked(user string, fold func(string) string) *roomView {
	v := l.queued[user]
	if v == nil || user == l.by || l.skip[user] || fold(v.nick) == fold(l.nick) {
		return nil
	}
	return v
}

// covered returns the view of user's connection for which the copies of
// l were queued with it (nil: none were, the connection queues its own).
// Those of the connection that archived it, and of one whose nick is the
// line's (its user said it, from another client: its connection shows
// it as their own), are not among them.
func (g *lineLog) covered(l *sharedLine, user string, fold func(string) string) *roomView {
	g.mu.Lock()
	defer g.mu.Unlock()
	return l.coversLocked(user, fold)
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
	g.showLocked(c, user, nil)
	delete(g.hidden[c], user)
	if len(g.hidden[c]) == 0 {
		delete(g.hidden, c)
	}
	if cl := g.chans[c]; cl != nil {
		// The messages recorded ahead so far reach it now or never.
		if cl.floor == nil {
			cl.floor = map[string]uint64{}
		}
		cl.floor[user] = g.seq
	}
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

// claimLine returns the line user's connection got, and whether the
// caller archives it (then it calls finish).
func (g *lineLog) claimLine(c lineChan, user, nick, body string, now time.Time) (*sharedLine, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cl := g.lines(c, now)
	for _, l := range cl.ahead {
		k := ownKey{user, l.own}
		if l.own != user && l.nick == nick && l.body == body && l.seq > max(cl.ownCursor[k], cl.floor[user]) {
			if cl.ownCursor == nil {
				cl.ownCursor = map[ownKey]uint64{}
			}
			cl.ownCursor[k] = l.seq
			cl.markBusy(user)
			return l, false
		}
	}
	after := cl.cursor[user]
	// The lines are in seq order: those after the cursor, from the first.
	from, _ := slices.BinarySearchFunc(cl.lines, after+1, func(l *sharedLine, seq uint64) int { return cmp.Compare(l.seq, seq) })
	for _, l := range cl.lines[from:] {
		if l.own != user && l.nick == nick && l.body == body {
			cl.cursor[user] = l.seq
			cl.markBusy(user)
			return l, false
		}
	}
	a := &archived{at: now, done: make(chan struct{})}
	l := g.add(cl, nick, body, "", a)
	cl.cursor[user] = l.seq
	cl.markBusy(user)
	return l, true
}

// ownLines returns the message user sends, which the caller archives
// (then it calls finish), and which the others get as the IRC lines
// parts, and its lines. ahead tells that the message is recorded before
// it is sent: the others' copies are then matched to it in its sender's
// order (see chanLines.ahead). A message recorded after it was sent (the
// server's echo of it) is matched in the channel's order, as a line from
// IRC: the others may have got it first.
func (g *lineLog) ownLines(c lineChan, user, nick string, parts []string, ahead bool, now time.Time) (*archived, []*sharedLine) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cl := g.lines(c, now)
	a := &archived{at: now, done: make(chan struct{})}
	lines := make([]*sharedLine, len(parts))
	if ahead {
		// Busy from now until its echo is queued (see done): no other
		// connection queues this user's copy of a later line before it.
		cl.markBusy(user)
	}
	for i, p := range parts {
		if ahead {
			g.seq++
			lines[i] = &sharedLine{seq: g.seq, nick: nick, body: p, own: user, archived: a}
			cl.ahead = append(cl.ahead, lines[i])
			continue
		}
		lines[i] = g.add(cl, nick, p, user, a)
	}
	return a, lines
}

// ownLines is a message recorded by ownLines before it was sent: its
// channel, its parts, its lines and the message.
type ownLines struct {
	c     lineChan
	parts []string
	lines []*sharedLine
	a     *archived
}

// errWithdrawn is the archive's answer for a message that was not sent.
var errWithdrawn = errors.New("the message was not sent")

// withdraw forgets the lines of o (nil: none), recorded for a message
// that record archives under other keys (the channel's case mapping
// changed since), and finishes it with errWithdrawn; its user is busy
// with it no more.
func (g *lineLog) withdraw(o *ownLines, user string) {
	if o == nil {
		return
	}
	g.unexpect(o)
	g.done(o.c, user)
	o.a.finish(0, errWithdrawn)
}

// unexpect forgets o's lines, archived but not sent after all, so that
// no connection matches a later line to them.
func (g *lineLog) unexpect(o *ownLines) {
	if o == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if cl := g.chans[o.c]; cl != nil {
		cl.ahead = slices.DeleteFunc(cl.ahead, func(l *sharedLine) bool { return slices.Contains(o.lines, l) })
	}
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
				continue
			}
			cl.prune()
		}
		for c, marks := range g.joins {
			maps.DeleteFunc(marks, func(_ string, m joinMark) bool { return now.Sub(m.at) > lineTTL })
			if len(marks) == 0 {
				delete(g.joins, c)
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

// add appends a line of a to cl and returns it. Callers hold g.mu.
func (g *lineLog) add(cl *chanLines, nick, body, own string, a *archived) *sharedLine {
	g.seq++
	l := &sharedLine{seq: g.seq, nick: nick, body: body, own: own, archived: a}
	cl.lines = append(cl.lines, l)
	return l
}

// expire forgets the lines older than lineTTL and reports whether none
// is left. Callers hold the lineLog's lock.
func (cl *chanLines) expire(now time.Time) bool {
	cl.lines, cl.ahead = expireLines(cl.lines, now), expireLines(cl.ahead, now)
	return len(cl.lines) == 0 && len(cl.ahead) == 0
}

// expireLines returns ls without its lines older than lineTTL.
func expireLines(ls []*sharedLine, now time.Time) []*sharedLine {
	i := 0
	for i < len(ls) && now.Sub(ls[i].at) > lineTTL {
		ls[i] = nil
		i++
	}
	return ls[i:]
}

// prune forgets the cursors in senders' messages and the floors that are
// before all of cl's lines: they no longer tell anything.
func (cl *chanLines) prune() {
	oldest := uint64(math.MaxUint64)
	if len(cl.lines) > 0 {
		oldest = cl.lines[0].seq
	}
	if len(cl.ahead) > 0 {
		oldest = min(oldest, cl.ahead[0].seq)
	}
	maps.DeleteFunc(cl.ownCursor, func(_ ownKey, seq uint64) bool { return seq < oldest })
	maps.DeleteFunc(cl.floor, func(_ string, seq uint64) bool { return seq < oldest })
}
