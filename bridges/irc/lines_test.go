package irc

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges/bridgetest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// The copies of a channel's line, one per user's connection, are matched
// to one archived line in order: a line said twice is two lines, a user's
// own line is not theirs to match, a connection that missed a line does
// not take a later one for it, and a line older than lineTTL is archived
// again.
func TestLineLog(t *testing.T) {
	var g lineLog
	c := lineChan{"srv", "#c"}
	t0 := time.Now()
	type step struct {
		user, nick, body string
		own              bool
		at               time.Duration
		line             int  // the line it is: its index in the order lines were made
		archive          bool // the caller archives it
	}
	var lines []*sharedLine
	for i, s := range []step{
		{"a", "bob", "ok", false, 0, 0, true},
		{"b", "bob", "ok", false, 0, 0, false},
		{"a", "bob", "ok", false, 0, 1, true},              // said again: another line
		{"c", "bob", "ok", false, 0, 0, false},             // c takes the first, then the second
		{"c", "bob", "ok", false, 0, 1, false},             //
		{"b", "bob", "ok", false, 0, 1, false},             //
		{"a", "a", "mine", true, 0, 2, true},               // a's own line, archived as sent
		{"a", "bob", "ok", false, 0, 3, true},              // a does not match its own line, nor go back
		{"b", "a", "mine", false, 0, 2, false},             // the others' copies of a's line
		{"d", "bob", "ok", false, 0, 0, false},             // d just joined: the oldest line it has not matched
		{"b", "bob", "ok", false, 0, 3, false},             //
		{"b", "bob", "late", false, 0, 4, true},            //
		{"c", "bob", "late", false, 2 * lineTTL, 5, true},  // too late: archived again
		{"d", "bob", "other", false, 2 * lineTTL, 6, true}, //
	} {
		l, archive := g.claim(c, s.user, s.nick, s.body, s.own, t0.Add(s.at))
		if archive {
			l.finish(int64(len(lines)+1), nil)
			lines = append(lines, l)
		}
		if archive != s.archive || s.line >= len(lines) || lines[s.line] != l {
			t.Fatalf("step %d (%+v): archive %v, line %d", i, s, archive, l.seq)
		}
		if id, err := l.wait(context.Background()); err != nil || id != int64(s.line+1) {
			t.Fatalf("step %d: id %d, %v", i, id, err)
		}
	}
	// The expired lines are forgotten, and a channel without lines too.
	g.claim(lineChan{"srv", "#d"}, "a", "bob", "x", false, t0.Add(4*lineTTL))
	if cl := g.chans[c]; cl != nil {
		t.Errorf("#c still holds %d lines", len(cl.lines))
	}
	// A line not archived yet is waited for; the wait ends with ctx.
	l, _ := g.claim(c, "a", "bob", "wait", false, t0.Add(4*lineTTL))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with a cancelled context: %v", err)
	}
}

// windowFaults is the store with window and archive writes that fail on
// demand.
type windowFaults struct {
	*store.Store
	open, close, closeAll, archive atomic.Bool
}

var errFault = errors.New("injected fault")

func (s *windowFaults) OpenIRCWindow(ctx context.Context, user, server, channel string) error {
	if s.open.Load() {
		return errFault
	}
	return s.Store.OpenIRCWindow(ctx, user, server, channel)
}

func (s *windowFaults) CloseIRCWindow(ctx context.Context, user, server, channel string) error {
	if s.close.Load() {
		return errFault
	}
	return s.Store.CloseIRCWindow(ctx, user, server, channel)
}

func (s *windowFaults) CloseIRCWindows(ctx context.Context) error {
	if s.closeAll.Load() {
		return errFault
	}
	return s.Store.CloseIRCWindows(ctx)
}

func (s *windowFaults) ArchiveIRCMessage(ctx context.Context, m store.IRCMessage) (int64, error) {
	if s.archive.Load() {
		return 0, errFault
	}
	return s.Store.ArchiveIRCMessage(ctx, m)
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
	fx := &fixture{b: New(Options{AllowPrivate: true}), h: h, f: newFakeIRC(t)}
	fx.b.db = db
	ctx := startOn(t, fx.b, h)
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts = []int{fx.f.port()}, nil
	if err := fx.b.saveNetConfig(ctx, testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
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
	fx.say(t, "#c", "one") // archived, not in the user's window
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
