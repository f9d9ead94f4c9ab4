package irc

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store/storetest"
)

// echoFixture is the test user in #c, which keeps its history, from two
// resources, r and r2, with the channel's window open.
func echoFixture(t *testing.T) *fixture {
	t.Helper()
	h := newFakeHost(t)
	h.Logs = &bridgetest.LogBuffer{}
	fx, _ := storeFixture(t, h, h.St.Store)
	fx.enter(t, "nick bob")
	fx.presence(t, testUser+"/r2", "#c")
	fx.h.Expect(t, "self-presence to r2", func(e *xmlel.Element) bool { return e.Attr("to") == testUser+"/r2" && selfPresence(e) })
	fx.say(t, "#c", "hello") // the window is open once its handling is done
	fx.h.Run(func(context.Context) {})
	return fx
}

// sendOwn has the user say body in #c from r, and returns the room's echo
// of it to r and to r2, once the handling of the message is done.
func (fx *fixture) sendOwn(t *testing.T, body string) map[string]*xmlel.Element {
	t.Helper()
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example' type='groupchat' id='"+body+"'><body>"+body+"</body></message>")
	fx.f.expect(t, "PRIVMSG #c "+body)
	fx.h.Run(func(context.Context) {})
	echoes := map[string]*xmlel.Element{}
	for _, m := range fx.h.Messages() {
		if m.Attr("id") == body && m.Attr("type") == "groupchat" {
			echoes[m.Attr("to")] = m
		}
	}
	return echoes
}

func stanzaID(m *xmlel.Element) string { return m.Child(stanza.NSStanzaID, "stanza-id").Attr("id") }

// The room's echo of the user's own message costs one commit: the line
// archived and its echo to each of the user's resources, whose stanza-id
// is the line's archive id, queued in one transaction. (Its text and id
// hold the mark that stands for the archive id as the echo is written.)
func TestReflectionOneCommit(t *testing.T) {
	fx := echoFixture(t)
	before := fx.h.St.Commits(t)
	echoes := fx.sendOwn(t, "mineID")
	if n := fx.h.St.Commits(t) - before; n != 1 {
		t.Errorf("the echo of a line: %d commits, want 1", n)
	}
	id := fx.column(t, `SELECT id FROM irc_history WHERE body = 'mineID'`)
	if len(echoes) != 2 {
		t.Fatalf("echoed to %d resources, want 2: %v", len(echoes), echoes)
	}
	for to, m := range echoes {
		if stanzaID(m) != id {
			t.Errorf("the echo to %s: stanza-id %q, want the archive's %q: %s", to, stanzaID(m), id, m)
		}
	}
	rows, err := fx.h.St.DB().Query(`SELECT stanza FROM outbox WHERE stanza LIKE '%>mineID</body>%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for ; rows.Next(); n++ {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			t.Fatal(err)
		}
		m, err := xmlel.Parse(raw)
		if err != nil || stanzaID(m) != id || len(m.ChildrenNamed(stanza.NSStanzaID, "stanza-id")) != 1 {
			t.Errorf("queued echo %s (%v), want one stanza-id, %s", raw, err, id)
		}
	}
	if n != 2 {
		t.Errorf("%d echoes queued, want 2", n)
	}
}

// When the transaction of a line and its echo fails, neither is written:
// no line is archived without its echo. What the user gets is what a
// line that cannot be archived gets: its echo, queued with a stanza-id of
// its own, here refused too, and logged.
func TestReflectionFailsWhole(t *testing.T) {
	fx := echoFixture(t)
	lift := storetest.Refuse(t, fx.h.St.Store, storetest.Insert, "outbox", ">refused</body>")
	if echoes := fx.sendOwn(t, "refused"); len(echoes) != 0 {
		t.Errorf("echoes of a line whose echo was refused: %v", echoes)
	}
	if got := fx.column(t, `SELECT count(*) FROM irc_history WHERE body = 'refused'`); got != "0" {
		t.Errorf("a line whose echo was refused: archived %s times", got)
	}
	for _, want := range []string{"cannot archive an irc message", "cannot queue a reflection"} {
		fx.h.Logs.Wait(t, want)
	}
	lift()
	echoes := fx.sendOwn(t, "after")
	if len(echoes) != 2 || stanzaID(echoes[testUser+"/r"]) != fx.column(t, `SELECT id FROM irc_history WHERE body = 'after'`) {
		t.Errorf("the next line's echoes: %v", echoes)
	}
	if got := fx.archive(t, "#c"); got != "hello after" {
		t.Errorf("archive: %q, want %q", got, "hello after")
	}
}

// A line that cannot be archived is echoed all the same, with a stanza-id
// of its own (as a channel that keeps no history).
func TestReflectionNotArchived(t *testing.T) {
	fx := echoFixture(t)
	lift := storetest.Refuse(t, fx.h.St.Store, storetest.Insert, "irc_history", "")
	echoes := fx.sendOwn(t, "unarchived")
	if len(echoes) != 2 {
		t.Fatalf("echoed to %d resources, want 2: %v", len(echoes), echoes)
	}
	for to, m := range echoes {
		if sid := stanzaID(m); len(sid) != len(stanza.NewID()) {
			t.Errorf("the echo to %s of a line not archived: stanza-id %q", to, sid)
		}
	}
	fx.h.Logs.Wait(t, "cannot archive an irc message")
	lift()
	if got := fx.archive(t, "#c"); got != "hello" {
		t.Errorf("archive: %q, want %q", got, "hello")
	}
}

// The echo of the user's own message is queued before its line goes to a
// server without echo-message (see groupchat): here, when the echo is
// queued, the server has not got the line.
func TestReflectionBeforeSending(t *testing.T) {
	fx := echoFixture(t)
	got := make(chan string, 1)
	var once sync.Once
	fx.h.OnQueued = func(sts ...*xmlel.Element) {
		once.Do(func() {
			select {
			case l := <-fx.f.lines:
				got <- l
			case <-time.After(300 * time.Millisecond):
				got <- ""
			}
		})
	}
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example' type='groupchat' id='x1'><body>first</body></message>")
	fx.h.Run(func(context.Context) { fx.h.OnQueued = nil })
	select {
	case l := <-got:
		if l != "" {
			t.Fatalf("the server got %q before the echo was queued", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the echo was not queued")
	}
	fx.f.expect(t, "PRIVMSG #c first")
	if got := fx.archive(t, "#c"); got != "hello first" {
		t.Errorf("archive: %q, want %q", got, "hello first")
	}
}

// echoedRefused returns whether the message id was echoed to the sender
// and whether it was refused with condition; a refusal must not come
// before the echo.
func (fx *fixture) echoedRefused(t *testing.T, id, condition string) (echoed, refused bool) {
	t.Helper()
	for _, m := range fx.h.Stanzas() {
		switch {
		case m.Attr("id") == id && m.Attr("type") == "groupchat" && m.Attr("to") == testUser+"/r":
			if refused {
				t.Errorf("echoed after its refusal: %s", m)
			}
			echoed = true
		case m.Attr("id") == id && m.Attr("type") == "error":
			if e := m.Child("", "error"); e == nil || e.Child(stanza.NSStanzas, condition) == nil {
				t.Errorf("refused with %s, want %s", m, condition)
			}
			refused = true
		}
	}
	return echoed, refused
}

// A message to a connection that is closing (its loss not handled yet)
// is refused as before: not echoed, not archived.
func TestReflectionClosing(t *testing.T) {
	fx := echoFixture(t)
	st, err := xmlel.Parse("<message xmlns='jabber:component:accept' from='" + testUser + "/r' to='#c%localhost@irc.example' type='groupchat' id='c1'><body>closing</body></message>")
	if err != nil {
		t.Fatal(err)
	}
	fx.h.Run(func(ctx context.Context) {
		// On the user's goroutine: the connection's loss is not handled
		// before the message.
		fx.b.networkOf(testUser, "localhost").c.close("")
		fx.b.Handle(ctx, &bridges.User{JID: testUser, Full: testUser + "/r"}, st)
	})
	if echoed, refused := fx.echoedRefused(t, "c1", "recipient-unavailable"); echoed || !refused {
		t.Errorf("echoed %v, refused %v; want refused only", echoed, refused)
	}
	if got := fx.archive(t, "#c"); got != "hello" {
		t.Errorf("archive: %q, want %q", got, "hello")
	}
}

// A message whose lines cannot be queued to the server after its echo
// was (the connection closed by another goroutine meanwhile; here by the
// echo's queuing) is refused after its echo: the user's client shows it
// failed. The line recorded for the other connections is forgotten, so
// that a later line with the same text is not taken for it; the archive
// keeps the message.
func TestReflectionThenUnsent(t *testing.T) {
	fx := echoFixture(t)
	var once sync.Once
	fx.h.OnQueued = func(sts ...*xmlel.Element) {
		once.Do(func() { fx.b.networkOf(testUser, "localhost").c.close("") })
	}
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example' type='groupchat' id='u1'><body>unsent</body></message>")
	fx.h.Run(func(context.Context) { fx.h.OnQueued = nil })
	echoed, refused := fx.echoedRefused(t, "u1", "recipient-unavailable")
	if !echoed || !refused {
		t.Fatalf("echoed %v, refused %v; want both", echoed, refused)
	}
	fx.h.Run(func(context.Context) {
		for c, cl := range fx.b.lines.chans {
			if len(cl.ahead) != 0 {
				t.Errorf("%v: %d lines recorded ahead after the refusal, want 0", c, len(cl.ahead))
			}
		}
	})
	if got := fx.archive(t, "#c"); got != "hello unsent" {
		t.Errorf("archive: %q, want %q", got, "hello unsent")
	}
}

// A line from IRC, archived by this connection, costs one commit too:
// its copies to the user's resources are queued with it.
func TestRoomLineOneCommit(t *testing.T) {
	fx := echoFixture(t)
	before := fx.h.St.Commits(t)
	fx.say(t, "#c", "theirs")
	fx.h.Run(func(context.Context) {})
	if n := fx.h.St.Commits(t) - before; n != 1 {
		t.Errorf("a line from IRC: %d commits, want 1", n)
	}
	id := fx.column(t, `SELECT id FROM irc_history WHERE body = 'theirs'`)
	n := 0
	for _, m := range fx.h.Messages() {
		if m.ChildText("", "body") == "theirs" {
			n++
			if stanzaID(m) != id || m.Attr("from") != roomJID("#c")+"/bob" {
				t.Errorf("the copy to %s: %s, want stanza-id %s", m.Attr("to"), m, id)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d copies, want 2", n)
	}
}

// A copy whose stanza-id is not its last child cannot be cut where the
// line's id goes: echo gives nil and the copies are queued after the
// line, not with a wrong text.
func TestRoomCopiesCut(t *testing.T) {
	var c roomCopies
	msg := stanza.Message("#c%irc.example@irc.localhost/bob", "alice@localhost/a", "groupchat", "ID-1", "an ID in the text")
	c.add(msg, "#c%irc.example@irc.localhost")
	e := c.echo("irc.localhost")
	if e == nil || len(e.Stanzas) != 1 {
		t.Fatalf("echo: %+v, want one stanza", e)
	}
	if got, want := e.Stanzas[0][0]+"42"+e.Stanzas[0][1], strings.Replace(msg.String(), `id="ID"/>`, `id="42"/>`, 1); got != want {
		t.Errorf("the copy with its id: %s, want %s", got, want)
	}
	msg.Add(xmlel.New("urn:example", "after"))
	if e := c.echo("irc.localhost"); e != nil {
		t.Errorf("a copy with a child after its stanza-id: %+v, want nil", e)
	}
}

// A user's line goes to the server once the XMPP server has taken the
// echo (bridges.Host.Flushed), which the bridge asks after committing it.
func TestLineAfterEchoTaken(t *testing.T) {
	fx := echoFixture(t)
	fx.b.echoWait = time.Minute
	echoed := make(chan bool, 1)
	early := make(chan string, 1)
	fx.h.OnFlushed = func() <-chan struct{} {
		e, _ := fx.echoedRefused(t, "t1", "")
		echoed <- e
		// The echo is taken once nothing reached the server for a while.
		taken := make(chan struct{})
		go func() {
			defer close(taken)
			select {
			case l := <-fx.f.lines:
				early <- l
			case <-time.After(300 * time.Millisecond):
				early <- ""
			}
		}()
		return taken
	}
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example' type='groupchat' id='t1'><body>taken</body></message>")
	select {
	case e := <-echoed:
		if !e {
			t.Fatal("the bridge asked whether the echo was taken before committing it")
		}
	default:
		t.Fatal("the bridge did not wait for the echo to be taken")
	}
	if l := <-early; l != "" {
		t.Fatalf("the server got %q before the echo was taken", l)
	}
	fx.f.expect(t, "PRIVMSG #c taken")
}

// When the XMPP server does not take the echo (no confirmation comes),
// the line goes to the server all the same after echoWait.
func TestLineWhenEchoNotTaken(t *testing.T) {
	fx := echoFixture(t)
	fx.b.echoWait = time.Second
	early := make(chan string, 1)
	fx.h.OnFlushed = func() <-chan struct{} {
		go func() {
			select {
			case l := <-fx.f.lines:
				early <- l
			case <-time.After(300 * time.Millisecond):
				early <- ""
			}
		}()
		return make(chan struct{}) // never closed
	}
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example' type='groupchat' id='t2'><body>untaken</body></message>")
	select {
	case l := <-early:
		if l != "" {
			t.Fatalf("the server got %q without the bridge waiting for the echo to be taken", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge did not wait for the echo to be taken")
	}
	fx.f.expect(t, "PRIVMSG #c untaken")
}
