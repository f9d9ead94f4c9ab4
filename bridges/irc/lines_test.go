package irc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges/bridgetest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// The copies of a channel's line, one per user's connection, are matched
// to one archived message in order: a line said twice is two lines, a
// user's own message is not theirs to match (and the others match each
// IRC line it was sent as), a connection that missed a line does not take
// a later one for it, and a line older than lineTTL is archived again.
func TestLineLog(t *testing.T) {
	var g lineLog
	c := lineChan{"srv", "#c"}
	t0 := time.Now()
	type step struct {
		user, nick, body string
		own              []string // the parts of the user's own message
		at               time.Duration
		msg              int  // the message it is: its index in the order they were archived
		archive          bool // the caller archives it
	}
	var msgs []*archived
	for i, s := range []step{
		{"a", "bob", "ok", nil, 0, 0, true},
		{"b", "bob", "ok", nil, 0, 0, false},
		{"a", "bob", "ok", nil, 0, 1, true},  // said again: another line
		{"c", "bob", "ok", nil, 0, 0, false}, // c takes the first, then the second
		{"c", "bob", "ok", nil, 0, 1, false},
		{"b", "bob", "ok", nil, 0, 1, false},
		{"a", "a", "mine", []string{"mine"}, 0, 2, true}, // a's own message, archived as sent
		{"a", "bob", "ok", nil, 0, 3, true},              // a does not match its own line, nor go back
		{"b", "a", "mine", nil, 0, 2, false},             // the others' copies of a's message
		{"d", "bob", "ok", nil, 0, 0, false},             // d just joined: the oldest line it has not matched
		{"b", "bob", "ok", nil, 0, 3, false},
		{"b", "a", "long\nlong", []string{"long", "long"}, 0, 4, true}, // sent as two lines
		{"c", "a", "long", nil, 0, 4, false},
		{"c", "a", "long", nil, 0, 4, false},
		{"c", "a", "long", nil, 0, 5, true}, // a third: another message
		{"b", "bob", "late", nil, 0, 6, true},
		{"c", "bob", "late", nil, 2 * lineTTL, 7, true}, // too late: archived again
		{"d", "bob", "other", nil, 2 * lineTTL, 8, true},
	} {
		var a *archived
		archive := true
		if s.own != nil {
			a = g.own(c, s.user, s.nick, s.own, t0.Add(s.at))
		} else {
			a, archive = g.claim(c, s.user, s.nick, s.body, t0.Add(s.at))
		}
		if archive {
			a.finish(int64(len(msgs)+1), nil)
			msgs = append(msgs, a)
		}
		if archive != s.archive || s.msg >= len(msgs) || msgs[s.msg] != a {
			t.Fatalf("step %d (%+v): archive %v, message %v", i, s, archive, a)
		}
		if id, err := a.wait(context.Background()); err != nil || id != int64(s.msg+1) {
			t.Fatalf("step %d: id %d, %v", i, id, err)
		}
	}
	// The expired lines are forgotten, and a channel without lines too.
	g.claim(lineChan{"srv", "#d"}, "a", "bob", "x", t0.Add(4*lineTTL))
	if cl := g.chans[c]; cl != nil {
		t.Errorf("#c still holds %d lines", len(cl.lines))
	}
	// A message not archived yet is waited for; the wait ends with ctx.
	a, _ := g.claim(c, "a", "bob", "wait", t0.Add(4*lineTTL))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with a cancelled context: %v", err)
	}
}

// A line from IRC that the archive found as another instance's message
// of several IRC lines: the copies of its next lines here are that
// message, not lines to archive; the channel's last line is kept after
// its lines expire, and a message of one line adds none.
func TestLineLogOtherInstance(t *testing.T) {
	var g lineLog
	c := lineChan{"srv", "#c"}
	t0 := time.Now()
	a, first := g.claim(c, "u", "al", "six", t0)
	if !first {
		t.Fatal("the first copy is not to archive")
	}
	g.archived(c, "al", store.ArchivedLine{ID: 7, Lines: []string{"six", "seven"}}, true, a)
	a.finish(7, nil)
	for _, user := range []string{"u", "v"} {
		if user == "v" {
			if b, first := g.claim(c, user, "al", "six", t0); first || b != a {
				t.Fatalf("%s's copy of six: archive %v", user, first)
			}
		}
		if b, first := g.claim(c, user, "al", "seven", t0); first || b != a {
			t.Fatalf("%s's copy of seven: archive %v", user, first)
		}
	}
	if b, first := g.claim(c, "u", "al", "seven", t0); !first || b == a {
		t.Fatal("seven said again: taken for the message")
	}
	if last, _ := g.known(c); last != 7 {
		t.Errorf("last line %d, want 7", last)
	}
	// A line of one message, or the user's own message: nothing expected.
	b, _ := g.claim(c, "u", "bob", "x", t0.Add(2*lineTTL))
	g.archived(c, "bob", store.ArchivedLine{ID: 9}, true, b)
	g.archived(c, "al", store.ArchivedLine{ID: 8, Lines: []string{"y", "z"}}, false, b)
	if n := len(g.chans[c].lines); n != 1 {
		t.Errorf("%d lines after x, want 1", n)
	}
}

// A channel's first line (store.IRCLine.Joined) is its newest when the
// first of the connections now in it here joined; the last line is at
// least that. Once the last connection here left, both are forgotten,
// and a join later starts anew: the lines in between are not looked for
// (they were never sent here). The last lines of the channels no
// connection here is in are forgotten as the lines expire.
func TestLineLogJoins(t *testing.T) {
	var g lineLog
	c := lineChan{"srv", "#c"}
	known := func(what string, last, joined int64) {
		t.Helper()
		if l, j := g.known(c); l != last || j != joined {
			t.Errorf("%s: last line %d, joined at %d; want %d and %d", what, l, j, last, joined)
		}
	}
	t0 := time.Now()
	g.joined(c, "u", 3)
	known("u joined", 3, 3)
	a, _ := g.claim(c, "u", "bob", "x", t0)
	g.archived(c, "bob", store.ArchivedLine{ID: 9}, true, a)
	g.joined(c, "v", 8) // another connection here: c's first stays
	known("v joined", 9, 3)
	g.left(c, "u")
	known("u left", 9, 3)
	g.left(c, "v")
	g.left(c, "v") // again: nothing
	known("all left", 0, 0)
	if len(g.in)+len(g.first)+len(g.newest) != 0 {
		t.Errorf("kept after all left: in %v, first %v, newest %v", g.in, g.first, g.newest)
	}
	g.joined(c, "u", 40) // hours later
	known("u joined again", 40, 40)
	g.joined(c, "v", 30) // the channel's newest line, as v joined (v's store was behind)
	known("v joined again", 40, 40)

	// A line archived as the last connection left, or in a channel
	// with no window opened here, is forgotten once the lines expire.
	d := lineChan{"srv", "#d"}
	b, _ := g.claim(d, "u", "bob", "y", t0)
	g.archived(d, "bob", store.ArchivedLine{ID: 50}, true, b)
	g.claim(c, "u", "bob", "z", t0.Add(2*lineTTL))
	if last, _ := g.known(d); last != 0 {
		t.Errorf("#d, where no connection here is: last line %d kept", last)
	}
	known("#c after the sweep", 40, 40)
}

// windowFaults is the store with window and archive writes that fail on
// demand.
type windowFaults struct {
	*store.Store
	open, close, closeAll, archive atomic.Bool
}

var errFault = errors.New("injected fault")

func (s *windowFaults) OpenIRCWindow(ctx context.Context, user, server, channel string) (int64, error) {
	if s.open.Load() {
		return 0, errFault
	}
	return s.Store.OpenIRCWindow(ctx, user, server, channel)
}

func (s *windowFaults) CloseIRCWindow(ctx context.Context, user, server, channel string) error {
	if s.close.Load() {
		return errFault
	}
	return s.Store.CloseIRCWindow(ctx, user, server, channel)
}

func (s *windowFaults) CloseIRCWindows(ctx context.Context, domain string) error {
	if s.closeAll.Load() {
		return errFault
	}
	return s.Store.CloseIRCWindows(ctx, domain)
}

func (s *windowFaults) ArchiveIRCLine(ctx context.Context, l store.IRCLine) (store.ArchivedLine, error) {
	if s.archive.Load() {
		return store.ArchivedLine{}, errFault
	}
	return s.Store.ArchiveIRCLine(ctx, l)
}

// storeFixture starts a bridge on h with the store db, the test user's
// network being the fake server.
func storeFixture(t *testing.T, h *bridgetest.Host, db ircStore) (*fixture, context.Context) {
	t.Helper()
	fx := &fixture{b: New(Options{AllowPrivate: true}), h: h, f: newFakeIRC(t)}
	fx.b.db = db
	ctx := startOn(t, fx.b, h)
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts = []int{fx.f.port()}, nil
	if err := fx.b.saveNetConfig(ctx, testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
	return fx, ctx
}

// A window that cannot be opened or closed is logged and tried again at
// the next IRC message; a line that cannot be archived still reaches the
// room; windows left open by the last run that cannot be closed at the
// start are logged.
func TestArchiveWindowFailures(t *testing.T) {
	h := newFakeHost(t)
	h.Logs = &bridgetest.LogBuffer{}
	db := &windowFaults{Store: h.St.Store}
	db.closeAll.Store(true)
	db.open.Store(true)
	fx, ctx := storeFixture(t, h, db)
	logged := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(h.Logs.String(), want); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("log without %q:\n%s", want, h.Logs)
			}
		}
	}
	logged("cannot close the irc archive windows of the last run")

	fx.enter(t, "nick bob")
	logged("cannot open an irc archive window")
	// The window is tried again after each message is handled, once
	// its stanza went out: "one" is archived, not in the user's window,
	// and the window is opened only after "two".
	fx.say(t, "#c", "one")
	fx.h.Run(func(context.Context) {}) // its handling done, the window's retry with it
	db.open.Store(false)
	fx.say(t, "#c", "two") // opens it, after archiving the line
	fx.say(t, "#c", "three")
	db.archive.Store(true)
	fx.f.send(t, ":bob!u@h PRIVMSG #c :four")
	m := fx.h.Expect(t, "four", func(e *xmlel.Element) bool { return e.ChildText("", "body") == "four" })
	if m.Child(stanza.NSStanzaID, "stanza-id").Attr("id") == "" {
		t.Errorf("a line not archived has no stanza-id: %s", m)
	}
	logged("cannot archive an irc message")
	db.archive.Store(false)
	if got := fx.archive(t, "#c"); got != "three" {
		t.Errorf("archive: %q, want %q", got, "three")
	}

	// Turned off, the channel's window closes; once it can.
	db.close.Store(true)
	fx.configure(t, "#c", chanSettings{Record: false})
	logged("cannot close an irc archive window")
	db.close.Store(false)
	fx.say(t, "#c", "five")
	fx.h.Run(func(context.Context) {}) // the message's handling, and the window's closing, are done
	if _, err := h.St.ArchiveIRCMessage(ctx, store.IRCMessage{Server: "localhost", Channel: "#c", Nick: "bob", Body: "hidden", Stamp: time.Now()}); err != nil {
		t.Fatal(err)
	}
	fx.configure(t, "#c", chanSettings{Record: true})
	fx.say(t, "#c", "six")
	if got := fx.archive(t, "#c"); got != "three six" {
		t.Errorf("archive: %q, want %q", got, "three six")
	}
}

// lineSpy is the store, recording the lines given to ArchiveIRCLine.
type lineSpy struct {
	*store.Store
	mu    sync.Mutex
	lines []store.IRCLine
}

func (s *lineSpy) ArchiveIRCLine(ctx context.Context, l store.IRCLine) (store.ArchivedLine, error) {
	s.mu.Lock()
	s.lines = append(s.lines, l)
	s.mu.Unlock()
	return s.Store.ArchiveIRCLine(ctx, l)
}

func (s *lineSpy) last(t *testing.T) store.IRCLine {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lines) == 0 {
		t.Fatal("no line archived")
	}
	return s.lines[len(s.lines)-1]
}

// A channel left by the user's connection (the last here) and joined
// again later starts anew: its lines are archived after the channel's
// newest line at the new join (which another instance archived while
// the user was away), not looked for back to the first join.
func TestArchiveRejoinLater(t *testing.T) {
	h := newFakeHost(t)
	db := &lineSpy{Store: h.St.Store}
	fx, ctx := storeFixture(t, h, db)
	fx.enter(t, "nick bob")
	fx.say(t, "#c", "one")
	if l := db.last(t); l.Joined != 0 || l.After != 0 {
		t.Errorf("one, in a channel without lines: archived after %d, joined at %d; want 0 and 0", l.After, l.Joined)
	}
	fx.handle(t, "<presence xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example/nick' type='unavailable'/>")
	fx.f.expect(t, "PART #c")
	fx.f.expect(t, "QUIT")
	fx.f.closed(t)
	away, err := h.St.ArchiveIRCMessage(ctx, store.IRCMessage{Server: "localhost", Channel: "#c", Nick: "bob", Body: "away", Stamp: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	fx.enter(t, "nick bob")
	fx.say(t, "#c", "two")
	if l := db.last(t); l.Body != "two" || l.Joined != away || l.After != away {
		t.Errorf("%s, after the join again: archived after %d, joined at %d; want %d and %d (away)", l.Body, l.After, l.Joined, away, away)
	}
	if got := fx.archive(t, "#c"); got != "one two" {
		t.Errorf("archive: %q, want %q", got, "one two")
	}
}

// inHere reports whether the lineLog counts user's connection in c.
func (g *lineLog) inHere(c lineChan, user string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.in[c][user]
}

// A window that cannot be closed keeps the user's connection counted in
// the channel until it is (it is tried again, and the channel's lines
// looked for from the join it was opened at); when the network is
// forgotten, the connection is no longer counted whatever the store
// said.
func TestArchiveLeaveFailures(t *testing.T) {
	h := newFakeHost(t)
	h.Logs = &bridgetest.LogBuffer{}
	db := &windowFaults{Store: h.St.Store}
	fx, _ := storeFixture(t, h, db)
	c := lineChan{"localhost", "#c"}
	in := func(what string, want bool) {
		t.Helper()
		var got bool
		fx.h.Run(func(context.Context) { got = fx.b.lines.inHere(c, testUser) })
		if got != want {
			t.Errorf("%s: counted in #c %v, want %v", what, got, want)
		}
	}
	fx.enter(t, "nick bob")
	fx.say(t, "#c", "one")
	in("joined", true)
	db.close.Store(true)
	fx.configure(t, "#c", chanSettings{Record: false})
	in("window not closed", true)
	db.close.Store(false)
	fx.say(t, "#c", "two") // the close tried again
	fx.h.Run(func(context.Context) {})
	in("window closed", false)
	fx.configure(t, "#c", chanSettings{Record: true})
	in("window opened again", true)
	db.close.Store(true)
	fx.handle(t, "<presence xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example/nick' type='unavailable'/>")
	fx.f.expect(t, "QUIT")
	fx.f.closed(t)
	if !strings.Contains(h.Logs.String(), "cannot close an irc archive window") {
		t.Errorf("log without the failed close:\n%s", h.Logs)
	}
	in("network forgotten", false)
}

// A message recorded before it was sent (ahead) is matched in its
// sender's order, whatever the server relayed between; one withdrawn is
// matched no more; a connection that left the channel since it was
// recorded (it never gets it) does not take a later line for it; and the
// copies queued with a line cover only the users they were for.
func TestLineLogAhead(t *testing.T) {
	var g lineLog
	c := lineChan{"srv", "#c"}
	t0 := time.Now()
	g.joined(c, "a", 0)
	g.joined(c, "b", 0)
	fold := func(s string) string { return strings.ToLower(s) }

	// a says "x", recorded ahead; b gets a peer's line first, then a's.
	x, xl := g.ownLines(c, "a", "al", []string{"x"}, true, t0)
	if l, first := g.claimLine(c, "b", "peer", "between", t0); !first || l.own != "" {
		t.Fatalf("the peer's line: first %v", first)
	}
	if l, first := g.claimLine(c, "b", "al", "x", t0); first || l.archived != x {
		t.Fatalf("a's line after another: first %v, not a's", first)
	}
	// Copies queued by a for a and b's views: b's is covered, but not
	// for a line whose nick is b's own (b said it, from another client).
	views := map[string]*roomView{"a": {room: "r", nick: "al"}, "b": {room: "r", nick: "bo", fulls: []string{"b/1"}}}
	g.queuedWith(xl, "a", views, nil)
	if v := g.covered(xl[0], "b", fold); v != views["b"] {
		t.Errorf("b's copy of a's line: covered by %v", v)
	}
	if v := g.covered(xl[0], "a", fold); v != nil {
		t.Errorf("a's copy, queued by a: covered by %v", v)
	}
	views["b"] = &roomView{room: "r", nick: "AL"}
	if v := g.covered(xl[0], "b", fold); v != nil {
		t.Errorf("b, whose nick is the line's: covered by %v", v)
	}

	// A message not sent after all is withdrawn: the same text from IRC
	// is a line of its own, and the withdrawn one's waiters get an error.
	y, _ := g.ownLines(c, "a", "al", []string{"y"}, true, t0)
	g.withdraw(&ownLines{c: c, parts: []string{"y"}, lines: func() []*sharedLine { l := g.chans[c].ahead; return l[len(l)-1:] }(), a: y}, "a")
	if _, err := y.wait(context.Background()); !errors.Is(err, errWithdrawn) {
		t.Errorf("the withdrawn message: %v", err)
	}
	if _, first := g.claimLine(c, "b", "al", "y", t0); !first {
		t.Error("a line with a withdrawn message's text: not first")
	}

	// b leaves before a's "z" reaches it, and joins again: a's next "z"
	// is not taken for the one b never got.
	z, _ := g.ownLines(c, "a", "al", []string{"z"}, true, t0)
	g.left(c, "b")
	g.joined(c, "b", 0)
	z2, _ := g.ownLines(c, "a", "al", []string{"z"}, true, t0)
	if l, first := g.claimLine(c, "b", "al", "z", t0); first || l.archived != z2 || l.archived == z {
		t.Errorf("a's second z after b rejoined: first %v, the first z %v", first, l.archived == z)
	}

	// The sweep forgets the lines and the cursors before them; the
	// channel, with a line still young, stays.
	g.claimLine(c, "b", "peer", "alive", t0.Add(lineTTL-10*time.Second))
	g.claimLine(c, "b", "peer", "later", t0.Add(lineTTL+30*time.Second))
	if cl := g.chans[c]; len(cl.lines) != 2 || len(cl.ahead) != 0 || len(cl.ownCursor) != 0 || len(cl.floor) != 0 {
		t.Errorf("after the sweep: %d lines ahead, cursors %v, floors %v", len(cl.ahead), cl.ownCursor, cl.floor)
	}
}

// What a connection shows is replaced, never changed: a map handed out
// stays as it was; leaving the channel hides it.
func TestLineLogViews(t *testing.T) {
	var g lineLog
	c := lineChan{"srv", "#c"}
	g.joined(c, "a", 0)
	va := &roomView{room: "r", nick: "al", fulls: []string{"a/1"}}
	g.show(c, "a", va, strings.ToLower)
	before := g.viewsOf(c)
	g.show(c, "b", &roomView{room: "r", nick: "bo"}, strings.ToLower)
	if len(before) != 1 || len(g.viewsOf(c)) != 2 {
		t.Errorf("views: %v then %v", before, g.viewsOf(c))
	}
	g.left(c, "a")
	if v := g.viewsOf(c); len(v) != 1 || v["a"] != nil {
		t.Errorf("after a left: %v", v)
	}
	g.show(c, "b", nil, strings.ToLower)
	if v, ok := g.views[c]; ok {
		t.Errorf("nobody shown: %v", v)
	}
	// b's nick seen leaving by another connection: b's connection, not
	// there yet, does not show it again until it joins again.
	g.joined(c, "b", 0)
	g.show(c, "b", &roomView{room: "r", nick: "bo"}, strings.ToLower)
	g.hideNick(c, "BO", strings.ToLower)
	g.show(c, "b", &roomView{room: "r", nick: "bo", fulls: []string{"b/2"}}, strings.ToLower)
	if v := g.viewsOf(c); v["b"] != nil {
		t.Errorf("b's view shown again after its nick left: %v", v)
	}
	g.joining(c, "b", time.Now())
	g.show(c, "b", &roomView{room: "r", nick: "bo"}, strings.ToLower)
	if v := g.viewsOf(c); v["b"] == nil {
		t.Error("b's view not shown after it joined again")
	}
	if !va.equal(&roomView{room: "r", nick: "al", fulls: []string{"a/1"}}) || va.equal(nil) || va.equal(&roomView{room: "r", nick: "al"}) {
		t.Error("roomView.equal")
	}
}

// Another connection queues a user's copies of a line only when that
// user's connection queued (or had queued for it) its copies of every
// line before: a user's copies stay in the order their connection got
// the lines.
func TestLineLogIncludable(t *testing.T) {
	var g lineLog
	c := lineChan{"srv", "#c"}
	t0 := time.Now()
	fold := strings.ToLower
	for _, u := range []string{"x", "b", "a"} {
		g.joined(c, u, 0)
	}
	views := map[string]*roomView{"x": {room: "r", nick: "ex"}, "b": {room: "r", nick: "bee"}}
	has := func(what string, seq uint64, want bool) {
		t.Helper()
		if in := !g.includable(c, views, seq, "x", fold)["b"]; in != want {
			t.Errorf("%s: b included %v, want %v", what, in, want)
		}
	}
	// a's message (its copies queued by each connection): x matched it,
	// b not yet.
	g.ownLines(c, "a", "al", []string{"hi"}, true, t0)
	if _, first := g.claimLine(c, "x", "al", "hi", t0); first {
		t.Fatal("a's line: first")
	}
	g.done(c, "x")
	l1, _ := g.claimLine(c, "x", "peer", "yo", t0)
	has("a line after a's that b has not queued", l1.seq, false)
	// b matches a's line: busy until it queued its copies.
	g.claimLine(c, "b", "al", "hi", t0)
	has("b busy with a's line", l1.seq, false)
	g.done(c, "b")
	has("b done with a's line", l1.seq, true)
	g.queuedWith([]*sharedLine{l1}, "x", views, nil)
	// A line whose copies were queued for b does not hold it back.
	l2, _ := g.claimLine(c, "x", "peer", "again", t0)
	has("after a line queued for b", l2.seq, true)
	// One said by b's nick (from another client) is b's to queue.
	g.queuedWith([]*sharedLine{l2}, "x", views, nil)
	l3, _ := g.claimLine(c, "x", "BEE", "mine", t0)
	g.queuedWith([]*sharedLine{l3}, "x", views, nil)
	l4, _ := g.claimLine(c, "x", "peer", "next", t0)
	has("after b's own line", l4.seq, false)
	g.claimLine(c, "b", "peer", "yo", t0)
	g.claimLine(c, "b", "peer", "again", t0)
	g.claimLine(c, "b", "BEE", "mine", t0)
	for range 3 {
		g.done(c, "b")
	}
	has("b caught up", l4.seq, true)
	if skip := g.includable(c, views, l4.seq, "x", fold); skip != nil {
		t.Errorf("all included: skipped %v", skip)
	}

	// b archives a line itself whose copies are not queued with it (its
	// write failed, or another instance had it): busy until it queued
	// them (record's release).
	if _, first := g.claimLine(c, "b", "peer", "b first", t0); !first {
		t.Fatal("b's line: not first")
	}
	g.claimLine(c, "x", "peer", "b first", t0)
	g.done(c, "x")
	l6, _ := g.claimLine(c, "x", "peer", "after b's", t0)
	has("b archiving a line not queued yet", l6.seq, false)
	g.done(c, "b")
	has("b done with its line", l6.seq, true)

	// y joins: until b matched or archived a line since, it may have
	// lines to handle that y never got; y queues none for it.
	g.joining(c, "y", t0)
	l7, _ := g.claimLine(c, "y", "peer", "y's first", t0)
	if skip := g.includable(c, views, l7.seq, "y", fold); !skip["b"] || !skip["x"] {
		t.Errorf("after y joined: skipped %v, want b and x (neither matched a line since)", skip)
	}
	g.claimLine(c, "b", "peer", "y's first", t0)
	g.done(c, "b")
	l8, _ := g.claimLine(c, "y", "peer", "y's second", t0)
	g.done(c, "y")
	if skip := g.includable(c, views, l8.seq, "y", fold); skip["b"] {
		t.Errorf("b matched a line after y joined: skipped %v", skip)
	}
}

// A user's own message is counted from when it is recorded, before it
// is sent: another connection that gets it, then a line after it, leaves
// the user out of that line's copies until the echo is queued (or the
// message withdrawn). A JOIN's mark lasts lineTTL.
func TestLineLogSenderBusy(t *testing.T) {
	var g lineLog
	c := lineChan{"srv", "#c"}
	t0 := time.Now()
	fold := strings.ToLower
	views := map[string]*roomView{"x": {room: "r", nick: "ex"}, "a": {room: "r", nick: "al"}}
	o := &ownLines{c: c, parts: []string{"hi"}}
	o.a, o.lines = g.ownLines(c, "a", "al", o.parts, true, t0)
	g.claimLine(c, "x", "al", "hi", t0)
	g.done(c, "x")
	l, _ := g.claimLine(c, "x", "peer", "yo", t0)
	if !g.includable(c, views, l.seq, "x", fold)["a"] {
		t.Error("a, whose echo is not queued yet: included")
	}
	g.done(c, "a")
	if g.includable(c, views, l.seq, "x", fold)["a"] {
		t.Error("a, its echo queued: left out")
	}
	w := &ownLines{c: c, parts: []string{"unsent"}}
	w.a, w.lines = g.ownLines(c, "a", "al", w.parts, true, t0)
	g.withdraw(w, "a")
	if g.includable(c, views, l.seq, "x", fold)["a"] {
		t.Error("a, its message withdrawn: left out")
	}
	g.joining(c, "x", t0)
	g.claimLine(c, "x", "peer", "later", t0.Add(lineTTL+time.Second))
	if len(g.joins) != 0 {
		t.Errorf("a JOIN's mark after lineTTL: %v", g.joins)
	}
}

// claim is claimLine, returning the message.
func (g *lineLog) claim(c lineChan, user, nick, body string, now time.Time) (*archived, bool) {
	l, first := g.claimLine(c, user, nick, body, now)
	return l.archived, first
}

// own returns the message user sends, which the caller archives (then it
// calls finish), and which the others get as the IRC lines parts.
func (g *lineLog) own(c lineChan, user, nick string, parts []string, now time.Time) *archived {
	a, _ := g.ownLines(c, user, nick, parts, false, now)
	return a
}
