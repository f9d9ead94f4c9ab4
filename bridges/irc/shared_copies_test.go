package irc

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/component/xmlel"
	"passerelle/store/storetest"
)

// relayIRC is an IRC server for several connections in one channel: it
// registers each, answers its JOINs, and relays a member's PRIVMSG to
// the channel's other members, as a server does.
type relayIRC struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[string]net.Conn // by nick, once registered
	open  map[net.Conn]bool   // every connection accepted, until the test ends
	ended bool                // the test's cleanup began: a connection is closed as it comes
	shut  bool                // new connections are closed as they come (a test's server going away)
	in    map[string]bool     // nicks in #c
	hold  map[string][]string // lines held back from a nick (see holdFrom)
	held  map[string]bool
	said  map[string]bool // "nick text" of the lines relayed to #c
	heard chan struct{}   // closed and replaced when a line is relayed
}

func newRelayIRC(t *testing.T) *relayIRC {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &relayIRC{ln: ln, conns: map[string]net.Conn{}, open: map[net.Conn]bool{}, in: map[string]bool{}, hold: map[string][]string{}, held: map[string]bool{},
		said: map[string]bool{}, heard: make(chan struct{})}
	var wg sync.WaitGroup
	// Every connection is closed at the end, registered or not: the
	// bridge may still be reconnecting one (a test that closed it).
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		s.ended = true
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.ended {
				s.mu.Unlock()
				c.Close()
				return
			}
			if s.shut {
				s.mu.Unlock()
				c.Close()
				continue
			}
			s.open[c] = true
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(c)
			}()
		}
	}()
	return s
}

func (s *relayIRC) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *relayIRC) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	nick := ""
	write := func(lines ...string) {
		for _, l := range lines {
			c.Write([]byte(l + "\r\n"))
		}
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd, params := command(l)
		params = strings.TrimRight(params, "\r\n")
		switch cmd {
		case "CAP":
			if strings.HasPrefix(params, "LS") {
				write(":srv CAP * LS :")
			}
		case "NICK":
			nick = lastParam(params)
		case "USER":
			s.mu.Lock()
			s.conns[nick] = c
			s.mu.Unlock()
			write(":srv 001 "+nick+" :Welcome", ":srv 376 "+nick+" :End")
		case "PING":
			write(":srv PONG srv :" + lastParam(params))
		case "JOIN":
			s.mu.Lock()
			s.in[nick] = true
			s.mu.Unlock()
			write(":"+nick+"!u@h JOIN #c", ":srv 366 "+nick+" #c :End")
		case "PRIVMSG":
			if strings.HasPrefix(params, "#c ") {
				s.relay(nick, ":"+nick+"!u@h PRIVMSG "+params)
				s.mu.Lock()
				s.said[nick+" "+lastParam(params)] = true
				close(s.heard)
				s.heard = make(chan struct{})
				s.mu.Unlock()
			}
		}
	}
}

// relay sends line to the members of #c but from.
func (s *relayIRC) relay(from, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for nick := range s.in {
		if nick == from {
			continue
		}
		if s.held[nick] {
			s.hold[nick] = append(s.hold[nick], line)
			continue
		}
		s.conns[nick].Write([]byte(line + "\r\n"))
	}
}

// relayed waits until the server has relayed nick's text to #c: the
// bridge queues a user's line to its connection and returns, and a line
// said to the others after that could reach them first.
func (s *relayIRC) relayed(t *testing.T, nick, text string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		ok, heard := s.said[nick+" "+text], s.heard
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-heard:
		case <-timeout:
			t.Fatalf("the server did not relay %s's %q", nick, text)
		}
	}
}

// say sends a line to one member (or, with to "", to all of #c).
func (s *relayIRC) say(to, line string) {
	if to == "" {
		s.relay("", line)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[to].Write([]byte(line + "\r\n"))
}

// holdFrom holds back the lines relayed to nick until release.
func (s *relayIRC) holdFrom(nick string) (release func()) {
	s.mu.Lock()
	s.held[nick] = true
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.held, nick)
		for _, l := range s.hold[nick] {
			s.conns[nick].Write([]byte(l + "\r\n"))
		}
		delete(s.hold, nick)
	}
}

// roomFixture is three users of the bridge, alice, bob and carol, in #c
// on one server, each from one resource (r), the channel keeping history.
type roomFixture struct {
	b   *Bridge
	h   *bridgetest.Host
	srv *relayIRC
}

var roomUsers = []string{"alice", "bob", "carol"}

func userOf(nick string) string { return nick + "@example.org" }

func newRoomFixture(t *testing.T) *roomFixture {
	t.Helper()
	h := newFakeHost(t)
	h.Logs = &bridgetest.LogBuffer{}
	fx := &roomFixture{b: New(Options{AllowPrivate: true}), h: h, srv: newRelayIRC(t)}
	ctx := startOn(t, fx.b, h)
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts = []int{fx.srv.port()}, nil
	for _, nick := range roomUsers {
		if err := fx.b.saveNetConfig(ctx, userOf(nick), "localhost", cfg); err != nil {
			t.Fatal(err)
		}
		fx.join(t, nick, userOf(nick)+"/r")
	}
	// Every connection has shown its window: a line from each, seen by
	// all.
	fx.sync(t)
	return fx
}

// join joins #c from full as nick and waits for the self-presence.
func (fx *roomFixture) join(t *testing.T, nick, full string) {
	t.Helper()
	fx.handle(t, full, "<presence xmlns='jabber:component:accept' from='"+full+"' to='"+roomJID("#c")+"/"+nick+"'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
	fx.h.Expect(t, "self-presence of "+full, func(e *xmlel.Element) bool { return e.Attr("to") == full && selfPresence(e) })
}

func (fx *roomFixture) handle(t *testing.T, full, raw string) {
	t.Helper()
	st, err := xmlel.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	user, _, _ := strings.Cut(full, "/")
	fx.h.Run(func(ctx context.Context) { fx.b.Handle(ctx, &bridges.User{JID: user, Full: full}, st) })
}

// sync waits until each connection handled everything the server sent it
// before: a private message to each, which its own connection handles.
func (fx *roomFixture) sync(t *testing.T, nicks ...string) {
	t.Helper()
	if nicks == nil {
		nicks = roomUsers
	}
	id := time.Now().Format("150405.000000000")
	for _, nick := range nicks {
		fx.srv.say(nick, ":peer!u@h PRIVMSG "+nick+" :sync "+id)
	}
	for _, nick := range nicks {
		fx.h.WaitMessage(t, "the sync of "+nick, func(e *xmlel.Element) bool {
			return strings.HasPrefix(e.Attr("to"), userOf(nick)) && e.ChildText("", "body") == "sync "+id
		})
	}
	fx.h.Run(func(context.Context) {})
}

// copies returns the groupchat messages with body, by recipient.
func (fx *roomFixture) copies(body string) map[string][]*xmlel.Element {
	got := map[string][]*xmlel.Element{}
	for _, m := range fx.h.Messages() {
		if m.Attr("type") == "groupchat" && m.ChildText("", "body") == body {
			got[m.Attr("to")] = append(got[m.Attr("to")], m)
		}
	}
	return got
}

// once checks that each of fulls got exactly one copy of body, from
// from, with the stanza-id id (any when empty), and nobody else.
func (fx *roomFixture) once(t *testing.T, body, from, id string, fulls ...string) {
	t.Helper()
	got := fx.copies(body)
	for _, full := range fulls {
		switch ms := got[full]; {
		case len(ms) != 1:
			t.Errorf("%q: %d copies to %s, want 1: %v", body, len(ms), full, ms)
		case ms[0].Attr("from") != from:
			t.Errorf("%q to %s from %s, want %s", body, full, ms[0].Attr("from"), from)
		case id != "" && stanzaID(ms[0]) != id:
			t.Errorf("%q to %s: stanza-id %s, want %s", body, full, stanzaID(ms[0]), id)
		}
		delete(got, full)
	}
	for to, ms := range got {
		t.Errorf("%q: %d copies to %s, who is not in the room", body, len(ms), to)
	}
}

func (fx *roomFixture) column(t *testing.T, query string) string {
	t.Helper()
	var v string
	if err := fx.h.St.DB().QueryRow(query).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

var allR = []string{"alice@example.org/r", "bob@example.org/r", "carol@example.org/r"}

// A line from IRC costs one commit for all the users here: the connection
// that archives it queues every user's copy with it, and the others,
// when it reaches them, queue nothing. Each resource gets one copy, with
// the line's archive id.
func TestSharedCopiesFromIRC(t *testing.T) {
	fx := newRoomFixture(t)
	before := fx.h.St.Commits(t)
	fx.srv.say("", ":peer!u@h PRIVMSG #c :hello all")
	fx.sync(t)
	// The three syncs (a private message each) and the line.
	if n := fx.h.St.Commits(t) - before; n != 4 {
		t.Errorf("a line to three users: %d commits with the syncs' 3, want 4", n)
	}
	id := fx.column(t, `SELECT id FROM irc_history WHERE body = 'hello all'`)
	fx.once(t, "hello all", roomJID("#c")+"/peer", id, allR...)
}

// A user's own message, recorded before it is sent, is matched by the
// others' connections whatever lines the server relays between: each
// copy has the line's archive id, and the line is archived once (before,
// a connection that got another line first archived it again).
func TestSharedCopiesOwn(t *testing.T) {
	fx := newRoomFixture(t)
	// carol gets a line from the peer before alice's (recorded first):
	// her connection still matches alice's to the line alice archived.
	release := fx.srv.holdFrom("carol")
	fx.handle(t, "alice@example.org/r", "<message xmlns='jabber:component:accept' from='alice@example.org/r' to='"+roomJID("#c")+"' type='groupchat' id='m1'><body>mine</body></message>")
	fx.srv.relayed(t, "alice", "mine")
	fx.srv.say("carol", ":peer!u@h PRIVMSG #c :between")
	release()
	fx.srv.say("alice", ":peer!u@h PRIVMSG #c :between")
	fx.srv.say("bob", ":peer!u@h PRIVMSG #c :between")
	fx.sync(t)
	id := fx.column(t, `SELECT id FROM irc_history WHERE body = 'mine'`)
	fx.once(t, "mine", roomJID("#c")+"/alice", id, allR...)
	fx.once(t, "between", roomJID("#c")+"/peer", "", allR...)
	if n := fx.column(t, `SELECT count(*) FROM irc_history WHERE body IN ('mine', 'between')`); n != "2" {
		t.Errorf("%s lines archived, want 2", n)
	}
}

// A resource that joined after the view the archiving connection used
// still gets the line: its connection queues what was not queued for it.
func TestSharedCopiesNewResource(t *testing.T) {
	fx := newRoomFixture(t)
	fx.join(t, "bob", "bob@example.org/r2")
	// The view of bob's connection as it was before r2 joined.
	fx.h.Run(func(context.Context) {
		n := fx.b.networkOf("bob@example.org", "localhost")
		sv := n.views["#c"]
		stale := &roomView{room: sv.view.room, nick: sv.view.nick, fulls: []string{"bob@example.org/r"}}
		fx.b.lines.show(sv.c, "bob@example.org", stale, strings.ToLower)
		n.views["#c"] = shownView{sv.c, stale}
	})
	// alice's connection archives the line, bob's gets it last.
	releaseBob, releaseCarol := fx.srv.holdFrom("bob"), fx.srv.holdFrom("carol")
	fx.srv.say("", ":peer!u@h PRIVMSG #c :to r2 too")
	fx.sync(t, "alice")
	releaseCarol()
	releaseBob()
	fx.sync(t)
	fx.once(t, "to r2 too", roomJID("#c")+"/peer", fx.column(t, `SELECT id FROM irc_history WHERE body = 'to r2 too'`), append(allR, "bob@example.org/r2")...)
}

// A user kicked from the channel gets no copy of a line said after it,
// although its connection has not handled the KICK yet when another
// archives the line: that one saw the KICK and hid the user's view.
func TestSharedCopiesKicked(t *testing.T) {
	fx := newRoomFixture(t)
	releaseBob := fx.srv.holdFrom("bob")
	fx.srv.say("", ":op!u@h KICK #c bob :out")
	fx.srv.mu.Lock()
	delete(fx.srv.in, "bob")
	fx.srv.mu.Unlock()
	fx.srv.say("", ":peer!u@h PRIVMSG #c :after the kick")
	fx.sync(t, "alice", "carol")
	releaseBob()
	fx.h.Expect(t, "bob's kicked self-presence", func(e *xmlel.Element) bool {
		return e.Attr("to") == "bob@example.org/r" && e.Attr("type") == "unavailable"
	})
	fx.once(t, "after the kick", roomJID("#c")+"/peer", "", allR[0], allR[2])
}

// A line said again after a user joined the channel is not taken for
// the one said before it joined: the user gets it once, with its id.
func TestSharedCopiesRejoined(t *testing.T) {
	fx := newRoomFixture(t)
	fx.handle(t, "bob@example.org/r", "<presence xmlns='jabber:component:accept' from='bob@example.org/r' to='"+roomJID("#c")+"/bob' type='unavailable'/>")
	fx.srv.mu.Lock()
	delete(fx.srv.in, "bob")
	fx.srv.mu.Unlock()
	fx.srv.say("", ":peer!u@h PRIVMSG #c :ok")
	fx.sync(t, "alice", "carol")
	fx.join(t, "bob", "bob@example.org/r")
	fx.sync(t)
	fx.srv.say("", ":peer!u@h PRIVMSG #c :ok")
	fx.sync(t)
	got := fx.copies("ok")["bob@example.org/r"]
	var ids []string
	for _, m := range got {
		ids = append(ids, stanzaID(m))
	}
	last := fx.column(t, `SELECT max(id) FROM irc_history WHERE body = 'ok'`)
	if len(got) != 1 || ids[0] != last {
		t.Errorf("bob, back in the channel: copies of the second ok with stanza-ids %v, want one, %s", ids, last)
	}
}

// A message refused before it is sent (the connection lost) records
// nothing for the other connections to match.
func TestSharedCopiesWithdrawn(t *testing.T) {
	fx := newRoomFixture(t)
	// The connection does not come back before the message (the bridge
	// reconnects it at once).
	fx.srv.mu.Lock()
	fx.srv.shut = true
	fx.srv.mu.Unlock()
	fx.h.Run(func(context.Context) {
		n := fx.b.networkOf("alice@example.org", "localhost")
		n.c.close("")
	})
	fx.h.Expect(t, "alice's connection lost", func(e *xmlel.Element) bool {
		return e.Attr("to") == "alice@example.org" && strings.Contains(e.ChildText("", "body"), "ost")
	})
	fx.handle(t, "alice@example.org/r", "<message xmlns='jabber:component:accept' from='alice@example.org/r' to='"+roomJID("#c")+"' type='groupchat' id='w1'><body>unsent</body></message>")
	fx.h.Expect(t, "the refusal", func(e *xmlel.Element) bool { return e.Attr("id") == "w1" && e.Attr("type") == "error" })
	fx.h.Run(func(context.Context) {
		for c, cl := range fx.b.lines.chans {
			if len(cl.ahead) != 0 {
				t.Errorf("%v: %d lines recorded ahead after the refusal, want 0", c, len(cl.ahead))
			}
		}
	})
}

// When the line and the copies cannot be written, each connection queues
// its own user's copies, as for a line that is not archived: nobody
// misses it.
func TestSharedCopiesFail(t *testing.T) {
	fx := newRoomFixture(t)
	lift := storetest.Refuse(t, fx.h.St.Store, storetest.Insert, "irc_history", "")
	fx.srv.say("", ":peer!u@h PRIVMSG #c :unarchived")
	fx.sync(t)
	fx.once(t, "unarchived", roomJID("#c")+"/peer", "", allR...)
	fx.handle(t, "alice@example.org/r", "<message xmlns='jabber:component:accept' from='alice@example.org/r' to='"+roomJID("#c")+"' type='groupchat' id='m2'><body>mine unarchived</body></message>")
	fx.srv.relayed(t, "alice", "mine unarchived")
	fx.sync(t)
	fx.once(t, "mine unarchived", roomJID("#c")+"/alice", "", allR...)
	lift()
	fx.h.Logs.Wait(t, "cannot archive an irc message")
}

// A user who left the channel is no longer shown: the next line's copies
// go to those still in it.
func TestSharedCopiesLeft(t *testing.T) {
	fx := newRoomFixture(t)
	fx.handle(t, "carol@example.org/r", "<presence xmlns='jabber:component:accept' from='carol@example.org/r' to='"+roomJID("#c")+"/carol' type='unavailable'/>")
	fx.h.Expect(t, "carol's unavailable self-presence", func(e *xmlel.Element) bool {
		return e.Attr("to") == "carol@example.org/r" && e.Attr("type") == "unavailable"
	})
	fx.srv.mu.Lock()
	delete(fx.srv.in, "carol")
	fx.srv.mu.Unlock()
	fx.srv.say("", ":peer!u@h PRIVMSG #c :after carol")
	fx.sync(t, "alice", "bob")
	fx.once(t, "after carol", roomJID("#c")+"/peer", "", allR[:2]...)
}

// Each user gets the lines in the order their connection got them: a
// line another connection archives after one this user's connection has
// not handled yet (alice's own message, whose copies each connection
// queues) is not queued for the user by that connection.
func TestSharedCopiesOrder(t *testing.T) {
	fx := newRoomFixture(t)
	release := fx.srv.holdFrom("bob")
	fx.handle(t, "alice@example.org/r", "<message xmlns='jabber:component:accept' from='alice@example.org/r' to='"+roomJID("#c")+"' type='groupchat' id='o1'><body>first</body></message>")
	// The server relayed it (held for bob) before the peer's line.
	fx.h.WaitMessage(t, "carol's first", func(e *xmlel.Element) bool {
		return e.Attr("to") == "carol@example.org/r" && e.ChildText("", "body") == "first"
	})
	fx.srv.say("", ":peer!u@h PRIVMSG #c :second")
	fx.sync(t, "alice", "carol")
	release()
	fx.sync(t)
	var order []string
	for _, m := range fx.h.Messages() {
		if m.Attr("to") == "bob@example.org/r" && m.Attr("type") == "groupchat" {
			order = append(order, m.ChildText("", "body"))
		}
	}
	if strings.Join(order, ",") != "first,second" {
		t.Errorf("bob got %v, want first then second", order)
	}
	fx.once(t, "second", roomJID("#c")+"/peer", fx.column(t, `SELECT id FROM irc_history WHERE body = 'second'`), allR...)
}
