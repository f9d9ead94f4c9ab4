package main

// End-to-end tests of the IRC bridge: the built gateway between a real
// Prosody and a real ngircd, with a raw IRC client on the other side.

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// ircPeer is a raw IRC client.
type ircPeer struct {
	nick string
	nc   net.Conn
	mu   sync.Mutex
	cond *sync.Cond
	seen []string // lines received, oldest first
	read int      // lines consumed by expect
	err  error
	// every line received with the time it arrived, never consumed
	stamped []stampedLine
}

type stampedLine struct {
	at   time.Time
	line string
}

func dialIRC(t testing.TB, addr, nick string) *ircPeer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &ircPeer{nick: nick, nc: nc}
	p.cond = sync.NewCond(&p.mu)
	t.Cleanup(func() { nc.Close() })
	go func() {
		r := bufio.NewReader(nc)
		for {
			l, err := r.ReadString('\n')
			p.mu.Lock()
			if err != nil {
				p.err = err
				p.cond.Broadcast()
				p.mu.Unlock()
				return
			}
			l = strings.TrimRight(l, "\r\n")
			if strings.HasPrefix(l, "PING ") {
				fmt.Fprintf(nc, "PONG %s\r\n", l[5:])
			}
			p.seen = append(p.seen, l)
			p.stamped = append(p.stamped, stampedLine{time.Now(), l})
			p.cond.Broadcast()
			p.mu.Unlock()
		}
	}()
	p.send(t, "NICK %s", nick)
	p.send(t, "USER %s 0 * :raw peer", nick)
	p.expect(t, " 001 ")
	return p
}

func (p *ircPeer) send(t testing.TB, format string, args ...any) {
	t.Helper()
	if _, err := fmt.Fprintf(p.nc, format+"\r\n", args...); err != nil {
		t.Fatal(err)
	}
}

// expect waits for a line containing substr (after the last one consumed).
func (p *ircPeer) expect(t testing.TB, substr string) string {
	t.Helper()
	return p.find(t, wait, substr, false, func(l string) bool { return strings.Contains(l, substr) })
}

// take waits up to timeout for a line matching match among those not
// consumed by expect, in any order, and removes it (for lines whose order
// the test does not know, like many users' messages).
func (p *ircPeer) take(t testing.TB, timeout time.Duration, desc string, match func(string) bool) string {
	t.Helper()
	return p.find(t, timeout, desc, true, match)
}

func (p *ircPeer) find(t testing.TB, timeout time.Duration, desc string, remove bool, match func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		for i := p.read; i < len(p.seen); i++ {
			if l := p.seen[i]; match(l) {
				if remove {
					p.seen = append(p.seen[:i:i], p.seen[i+1:]...)
				} else {
					p.read = i + 1
				}
				return l
			}
		}
		if p.err != nil || time.Now().After(deadline) {
			t.Fatalf("irc %s: no line matching %q (err %v); got:\n%s", p.nick, desc, p.err, strings.Join(p.seen[p.read:], "\n"))
		}
		p.cond.Wait()
	}
}

// stampedLines returns every line received so far with its arrival time.
func (p *ircPeer) stampedLines() []stampedLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]stampedLine(nil), p.stamped...)
}

// lines returns every line received so far.
func (p *ircPeer) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

func mucX() string { return "<x xmlns='http://jabber.org/protocol/muc'/>" }

// occupant matches a presence from room/nick of the given type.
func occupant(from, typ string, codes ...string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		if !harness.IsPresence(e) || e.Attr("from") != from || e.Attr("type") != typ {
			return false
		}
		have := statusCodes(e)
		for _, c := range codes {
			if !have[c] {
				return false
			}
		}
		return true
	}
}

func statusCodes(e *xmlel.Element) map[string]bool {
	have := map[string]bool{}
	x := e.Child("http://jabber.org/protocol/muc#user", "x")
	for _, s := range x.ChildrenNamed("", "status") {
		have[s.Attr("code")] = true
	}
	return have
}

func mucItem(e *xmlel.Element) *xmlel.Element {
	return e.Child("http://jabber.org/protocol/muc#user", "x").Child("", "item")
}

func withID(id string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool { return harness.IsMessage(e) && e.Attr("id") == id }
}

// configureNetwork runs the ad-hoc "configure" on server@irc-domain.
func configureNetwork(t *testing.T, c *harness.Client, server string, fields ...string) *xmlel.Element {
	t.Helper()
	to := server + "@" + ircDomain
	r := c.IQ(t, "set", to, "<command xmlns='http://jabber.org/protocol/commands' node='configure' action='execute'/>")
	wantResult(t, r, "configure first step")
	sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
	return c.IQ(t, "set", to, "<command xmlns='http://jabber.org/protocol/commands' node='configure' sessionid='"+sid+"' action='complete'>"+
		submitForm("", fields...)+"</command>")
}

// ircFixture is the gateway between a real Prosody and a real ngircd, with
// alice and carol on XMPP and bob, a raw IRC client, in #go under the topic
// "Hello world". Each TestIRC… test below starts its own and runs its steps
// on it in order: a step relies on the state the earlier ones left (who is
// in the room, under which nick).
type ircFixture struct {
	room    string // #go on the network localhost
	ngircd  *harness.Ngircd
	portStr string
	srv     harness.Server
	env     map[string]string
	e       *gwEnv
	alicePW string
	alice   *harness.Client
	carol   *harness.Client
	bob     *ircPeer
}

// ircStage is how far startIRC takes its fixture.
type ircStage int

const (
	ircStarted    ircStage = iota // servers, gateway, users, bob in #go
	ircConfigured                 // and alice's and carol's network localhost on ngircd
	ircJoined                     // and alice in #go as alice
)

// startIRC starts an ircFixture and takes it to stage.
func startIRC(t *testing.T, stage ircStage) *ircFixture {
	t.Helper()
	f := &ircFixture{room: "#go%localhost@" + ircDomain, ngircd: harness.StartNgircd(t)}
	_, f.portStr, _ = net.SplitHostPort(f.ngircd.Addr)
	f.srv = startServer(t, "prosody")
	f.env = baseEnv(t, f.srv)
	f.env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
	f.e = startGateway(t, f.srv, f.env)
	f.alicePW = f.srv.AddUser(t, "alice@localhost")
	f.alice = harness.Dial(t, f.srv.C2SAddr(), "alice@localhost", f.alicePW, "test")
	f.carol = f.e.dial(t, "carol@localhost")
	f.bob = dialIRC(t, f.ngircd.Addr, "bob")
	f.bob.send(t, "JOIN #go")
	f.bob.expect(t, "366")
	f.bob.send(t, "TOPIC #go :Hello world")
	f.bob.expect(t, "TOPIC #go")
	if stage >= ircConfigured {
		f.configure(t)
	}
	if stage >= ircJoined {
		f.join(t)
	}
	return f
}

// configure points alice's and carol's network localhost at ngircd (the
// steps of TestIRCConfigure check this command).
func (f *ircFixture) configure(t *testing.T) {
	t.Helper()
	for _, c := range []*harness.Client{f.alice, f.carol} {
		wantResult(t, configureNetwork(t, c, "localhost", "ports", f.portStr, "tls_ports", "", "verify_cert", "true"), "configure")
	}
}

// join brings alice into #go as alice and takes what the join sends her
// and bob (TestIRCJoin checks it).
func (f *ircFixture) join(t *testing.T) {
	t.Helper()
	room := f.room
	f.alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX())
	f.alice.Expect(t, wait, "bob's presence", occupant(room+"/bob", ""))
	f.alice.Expect(t, wait, "self-presence", occupant(room+"/alice", "", "110"))
	f.alice.Expect(t, wait, "subject", func(e *xmlel.Element) bool {
		return harness.IsMessage(e) && e.Attr("from") == room && e.Child("", "subject") != nil
	})
	f.bob.expect(t, ":alice!")
	f.alice.Expect(t, wait, "connection status", harness.MessageFrom("localhost@"+ircDomain, "Connected to"))
}

// TestIRCConfigure checks the gateway's disco and the network settings,
// before any connection.
func TestIRCConfigure(t *testing.T) {
	f := startIRC(t, ircStarted)
	const server = "localhost"
	alice, carol, portStr := f.alice, f.carol, f.portStr

	t.Run("disco advertises muc", func(t *testing.T) {
		r := alice.IQ(t, "get", ircDomain, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
		found := false
		for _, f := range r.Child("", "query").ChildrenNamed("", "feature") {
			found = found || f.Attr("var") == "http://jabber.org/protocol/muc"
		}
		if !found {
			t.Fatalf("no muc feature: %s", r)
		}
	})

	t.Run("configure", func(t *testing.T) {
		r := configureNetwork(t, alice, server, "ports", "x1", "tls_ports", "")
		wantError(t, r, "not-acceptable", "a bad port")
		for _, c := range []*harness.Client{alice, carol} {
			r = configureNetwork(t, c, server, "ports", portStr, "tls_ports", "", "verify_cert", "true")
			wantResult(t, r, "configure")
			if st := r.Child("http://jabber.org/protocol/commands", "command").Attr("status"); st != "completed" {
				t.Fatalf("configure: %s", r)
			}
		}
	})

	t.Run("connection failure", func(t *testing.T) {
		dead := harness.FreePort(t)
		wantResult(t, configureNetwork(t, carol, "127.0.0.1", "ports", fmt.Sprint(dead), "tls_ports", ""), "configure")
		r := "#x%127.0.0.1@" + ircDomain
		carol.Send(t, "<presence to='%s/carol'>%s</presence>", harness.Esc(r), mucX())
		el := carol.Expect(t, wait, "error", occupant(r+"/carol", "error"))
		wantError(t, el, "item-not-found", "connection refused")
		if !strings.Contains(stanzaText(el), fmt.Sprint(dead)) {
			t.Errorf("the error does not give the reason: %s", el)
		}
	})
}

// TestIRCJoin joins #go and talks there, from one resource and then two.
func TestIRCJoin(t *testing.T) {
	f := startIRC(t, ircConfigured)
	const server = "localhost"
	room, srv, alicePW, alice, carol, bob := f.room, f.srv, f.alicePW, f.alice, f.carol, f.bob

	t.Run("join", func(t *testing.T) {
		alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX())
		bobP := alice.Expect(t, wait, "bob's presence", occupant(room+"/bob", ""))
		if it := mucItem(bobP); it.Attr("role") != "moderator" || it.Attr("affiliation") != "admin" {
			t.Errorf("bob (channel operator) item: %s", bobP)
		}
		self := alice.Expect(t, wait, "self-presence", occupant(room+"/alice", "", "110", "100"))
		if statusCodes(self)["210"] {
			t.Errorf("210 with the requested nick: %s", self)
		}
		subj := alice.Expect(t, wait, "subject", func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.Attr("from") == room && e.Child("", "subject") != nil
		})
		if s := subj.ChildText("", "subject"); s != "Hello world" {
			t.Errorf("subject = %q", s)
		}
		// Order: occupants, self-presence, subject.
		idx := map[*xmlel.Element]int{}
		for i, el := range alice.Received() {
			idx[el] = i
		}
		if !(idx[bobP] < idx[self] && idx[self] < idx[subj]) {
			t.Errorf("join answer out of order: bob %d, self %d, subject %d", idx[bobP], idx[self], idx[subj])
		}
		bob.expect(t, ":alice!")
		st := alice.Expect(t, wait, "connection status", harness.MessageFrom(server+"@"+ircDomain, "Connected to"))
		if b := st.ChildText("", "body"); !strings.Contains(b, "not encrypted") {
			t.Errorf("status does not say the link is plain text: %q", b)
		}
	})

	t.Run("self-ping", func(t *testing.T) {
		wantResult(t, alice.IQ(t, "get", room+"/alice", "<ping xmlns='urn:xmpp:ping'/>"), "self-ping while joined")
		wantError(t, carol.IQ(t, "get", room+"/alice", "<ping xmlns='urn:xmpp:ping'/>"), "not-acceptable", "self-ping while not joined")
	})

	t.Run("groupchat both ways", func(t *testing.T) {
		// A client recognises its own message by its origin-id (XEP-0359);
		// the stanza-id is the room's alone.
		alice.Send(t, "<message to='%s' type='groupchat' id='g1'><body>hello from xmpp</body>"+
			"<origin-id xmlns='urn:xmpp:sid:0' id='origin-g1'/><stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='%s'/></message>", harness.Esc(room), harness.Esc(room))
		bob.expect(t, "PRIVMSG #go :hello from xmpp")
		r := alice.Expect(t, wait, "reflection", withID("g1"))
		if r.Attr("from") != room+"/alice" || r.Attr("type") != "groupchat" || r.ChildText("", "body") != "hello from xmpp" {
			t.Errorf("reflection: %s", r)
		}
		if sids := r.ChildrenNamed("urn:xmpp:sid:0", "stanza-id"); len(sids) != 1 || sids[0].Attr("id") == "" || sids[0].Attr("id") == "forged" || sids[0].Attr("by") != room {
			t.Errorf("reflection without the room's stanza-id alone: %s", r)
		}
		if o := r.Child("urn:xmpp:sid:0", "origin-id"); o == nil || o.Attr("id") != "origin-g1" {
			t.Errorf("reflection without the client's origin-id: %s", r)
		}
		bob.send(t, "PRIVMSG #go :hi \x02there\x02 \x0304,01coloured\x03 text")
		m := alice.Expect(t, wait, "bob's message", harness.MessageFrom(room+"/bob", "hi"))
		if b := m.ChildText("", "body"); m.Attr("type") != "groupchat" || b != "hi there coloured text" {
			t.Errorf("bob's message: %s", m)
		}
		bob.send(t, "PRIVMSG #go :caf\xe9 latin-1")
		m = alice.Expect(t, wait, "latin-1 message", harness.MessageFrom(room+"/bob", "latin-1"))
		if b := m.ChildText("", "body"); b != "café latin-1" {
			t.Errorf("latin-1 body = %q", b)
		}
	})

	t.Run("injection", func(t *testing.T) {
		alice.Send(t, "<message to='%s' type='groupchat' id='inj'><body>first&#13;&#10;QUIT :pwned&#10;JOIN #evil&#13;third</body></message>", harness.Esc(room))
		bob.expect(t, "PRIVMSG #go :first")
		bob.expect(t, "PRIVMSG #go :QUIT :pwned")
		bob.expect(t, "PRIVMSG #go :JOIN #evil")
		bob.expect(t, "PRIVMSG #go :third")
		alice.Expect(t, wait, "reflection", withID("inj"))
		alice.Send(t, "<message to='%s' type='groupchat' id='after'><body>still here</body></message>", harness.Esc(room))
		bob.expect(t, "PRIVMSG #go :still here")
		for _, l := range bob.lines() {
			if f := strings.Fields(l); len(f) > 1 && f[1] == "QUIT" && strings.HasPrefix(l, ":alice!") {
				t.Fatalf("an injected QUIT reached the server: %q", l)
			}
		}
		// A raw line to the network JID cannot smuggle a second line either.
		alice.Send(t, "<message to='%s@%s' type='chat' id='raw1'><body>PRIVMSG bob :raw one&#13;PRIVMSG bob :raw two</body></message>", server, ircDomain)
		bob.expect(t, "PRIVMSG bob :raw one")
		bob.expect(t, "PRIVMSG bob :raw two")
	})

	t.Run("long messages", func(t *testing.T) {
		var words []string
		for i := 0; len(strings.Join(words, " ")) < 3000; i++ {
			words = append(words, "wörd"+fmt.Sprint(i))
		}
		body := strings.Join(words, " ")[:3000]
		body = strings.TrimRight(body, " ")
		alice.Send(t, "<message to='%s' type='groupchat' id='long'><body>%s</body></message>", harness.Esc(room), body)
		alice.Expect(t, wait, "reflection of the long body", withID("long"))
		var got []string
		for len(strings.Join(got, " ")) < len(body) {
			l := bob.expect(t, "PRIVMSG #go :")
			if len(l)+2 > 512 {
				t.Fatalf("a relayed line is %d bytes: %q", len(l)+2, l)
			}
			got = append(got, l[strings.Index(l, "PRIVMSG #go :")+len("PRIVMSG #go :"):])
		}
		if strings.Join(got, " ") != body {
			t.Fatalf("the long body was not cut on word boundaries:\n%q\n%q", strings.Join(got, " "), body)
		}
		tooLong := strings.Repeat("line\n", 21)
		alice.Send(t, "<message to='%s' type='groupchat' id='tl'><body>%s</body></message>", harness.Esc(room), tooLong)
		el := alice.Expect(t, wait, "error for 21 lines", withID("tl"))
		wantError(t, el, "not-acceptable", "21 lines")
		if stanzaText(el) == "" {
			t.Errorf("no error text: %s", el)
		}
	})

	t.Run("not joined", func(t *testing.T) {
		other := harness.Dial(t, srv.C2SAddr(), "alice@localhost", alicePW, "other")
		other.Send(t, "<message to='%s' type='groupchat' id='nj'><body>hi</body></message>", harness.Esc(room))
		wantError(t, other.Expect(t, wait, "error", withID("nj")), "not-acceptable", "groupchat before joining")
		other.Close()
	})

	t.Run("second resource", func(t *testing.T) {
		two := harness.Dial(t, srv.C2SAddr(), "alice@localhost", alicePW, "two")
		two.Send(t, "<presence to='%s/alicia'>%s</presence>", harness.Esc(room), mucX())
		two.Expect(t, wait, "bob's presence", occupant(room+"/bob", ""))
		two.Expect(t, wait, "self-presence with the current nick", occupant(room+"/alice", "", "110", "210"))
		two.Expect(t, wait, "subject", func(e *xmlel.Element) bool { return harness.IsMessage(e) && e.Child("", "subject") != nil })
		bob.send(t, "PRIVMSG #go :to both")
		alice.Expect(t, wait, "message on resource 1", harness.MessageFrom(room+"/bob", "to both"))
		two.Expect(t, wait, "message on resource 2", harness.MessageFrom(room+"/bob", "to both"))
		two.Send(t, "<message to='%s' type='groupchat' id='r2'><body>from two</body></message>", harness.Esc(room))
		bob.expect(t, "PRIVMSG #go :from two")
		two.Expect(t, wait, "reflection", withID("r2"))
		alice.Expect(t, wait, "the other resource sees it", harness.MessageFrom(room+"/alice", "from two"))
		two.Send(t, "<presence to='%s/alice' type='unavailable'/>", harness.Esc(room))
		two.Expect(t, wait, "self unavailable", occupant(room+"/alice", "unavailable", "110"))
		bob.send(t, "PRIVMSG #go :still one")
		alice.Expect(t, wait, "resource 1 still in", harness.MessageFrom(room+"/bob", "still one"))
		for _, l := range bob.lines() {
			if strings.HasPrefix(l, ":alice!") && strings.Contains(l, "PART") {
				t.Fatalf("leaving one resource parted the channel: %q", l)
			}
		}
		two.Close()

	})
}

// TestIRCNetwork checks what a connection to the network offers besides
// the room: the channel list, a channel key, private messages and CTCP, and
// the nick a user joins with.
func TestIRCNetwork(t *testing.T) {
	f := startIRC(t, ircJoined)
	const server = "localhost"
	room, e, portStr, alice, bob := f.room, f.e, f.portStr, f.alice, f.bob

	t.Run("channel list", func(t *testing.T) {
		bob.send(t, "JOIN #zzz")
		bob.expect(t, "366")
		page := func(set string) *xmlel.Element {
			r := alice.IQ(t, "get", server+"@"+ircDomain, "<query xmlns='http://jabber.org/protocol/disco#items'><set xmlns='http://jabber.org/protocol/rsm'>"+set+"</set></query>")
			wantResult(t, r, "channel list")
			return r.Child("http://jabber.org/protocol/disco#items", "query")
		}
		q := page("<max>1</max>")
		items := q.ChildrenNamed("", "item")
		if len(items) != 1 || items[0].Attr("jid") != room {
			t.Fatalf("first page: %s", q)
		}
		rs := q.Child("http://jabber.org/protocol/rsm", "set")
		if c, _ := strconv.Atoi(rs.ChildText("", "count")); c < 2 { // ngircd adds &SERVER
			t.Errorf("count: %s", q)
		}
		q = page("<max>1</max><after>" + harness.Esc(rs.ChildText("", "last")) + "</after>")
		items = q.ChildrenNamed("", "item")
		if len(items) != 1 || items[0].Attr("jid") != "#zzz%"+server+"@"+ircDomain {
			t.Fatalf("second page: %s", q)
		}
		bob.send(t, "PART #zzz")
		wantError(t, e.dial(t, "gus@localhost").IQ(t, "get", server+"@"+ircDomain, "<query xmlns='http://jabber.org/protocol/disco#items'/>"),
			"recipient-unavailable", "list without a connection")
	})

	t.Run("channel key", func(t *testing.T) {
		bob.send(t, "JOIN #locked")
		bob.expect(t, "366")
		bob.send(t, "MODE #locked +k sesame")
		bob.expect(t, "MODE #locked +k")
		locked := "#locked%" + server + "@" + ircDomain
		alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(locked), mucX())
		el := alice.Expect(t, wait, "refused without the key", occupant(locked+"/alice", "error"))
		wantError(t, el, "not-authorized", "+k without key")
		alice.Send(t, "<presence to='%s/alice'><x xmlns='http://jabber.org/protocol/muc'><password>sesame</password></x></presence>", harness.Esc(locked))
		alice.Expect(t, wait, "joined with the key", occupant(locked+"/alice", "", "110"))
		alice.Send(t, "<presence to='%s/alice' type='unavailable'/>", harness.Esc(locked))
		alice.Expect(t, wait, "left", occupant(locked+"/alice", "unavailable", "110"))
		bob.send(t, "PART #locked")
	})

	t.Run("private messages and actions", func(t *testing.T) {
		bob.send(t, "PRIVMSG alice :psst")
		m := alice.Expect(t, wait, "private message", harness.MessageFrom("bob%"+server+"@"+ircDomain, "psst"))
		if m.Attr("type") != "chat" {
			t.Errorf("private message: %s", m)
		}
		alice.Send(t, "<message to='bob%%%s@%s' type='chat' id='p1'><body>hello bob</body></message>", server, ircDomain)
		bob.expect(t, "PRIVMSG bob :hello bob")
		alice.Send(t, "<message to='%s/bob' type='chat' id='p2'><body>via the room</body></message>", harness.Esc(room))
		bob.expect(t, "PRIVMSG bob :via the room")
		alice.Send(t, "<message to='%s' type='groupchat' id='me'><body>/me waves</body></message>", harness.Esc(room))
		bob.expect(t, "PRIVMSG #go :\x01ACTION waves\x01")
		bob.send(t, "PRIVMSG #go :\x01ACTION dances\x01")
		alice.Expect(t, wait, "action", harness.MessageFrom(room+"/bob", "/me dances"))
		bob.send(t, "NOTICE #go :a notice")
		alice.Expect(t, wait, "notice", harness.MessageFrom(room+"/bob", "a notice"))
		bob.send(t, "PRIVMSG alice :\x01VERSION\x01")
		bob.expect(t, "NOTICE bob :\x01VERSION Passerelle")
		bob.send(t, "PRIVMSG alice :\x01PING 1234\x01")
		bob.expect(t, "NOTICE bob :\x01PING 1234\x01")

		// jabber:iq:version and ping to an occupant become CTCP requests.
		alice.Send(t, "<iq type='get' id='v1' to='%s/bob'><query xmlns='jabber:iq:version'/></iq>", harness.Esc(room))
		bob.expect(t, "PRIVMSG bob :\x01VERSION\x01")
		bob.send(t, "NOTICE alice :\x01VERSION rawpeer 1.0\x01")
		v := alice.Expect(t, wait, "version result", func(e *xmlel.Element) bool { return harness.IsIQ(e) && e.Attr("id") == "v1" })
		wantResult(t, v, "version")
		if name := v.Child("jabber:iq:version", "query").ChildText("", "name"); name != "rawpeer 1.0" {
			t.Errorf("version: %s", v)
		}
		alice.Send(t, "<iq type='get' id='p1' to='bob%%%s@%s'><ping xmlns='urn:xmpp:ping'/></iq>", server, ircDomain)
		l := bob.expect(t, "PRIVMSG bob :\x01PING ")
		bob.send(t, "NOTICE alice :%s", l[strings.Index(l, "\x01"):])
		wantResult(t, alice.Expect(t, wait, "ping result", func(e *xmlel.Element) bool { return harness.IsIQ(e) && e.Attr("id") == "p1" }), "ctcp ping")
	})

	t.Run("nick precedence", func(t *testing.T) {
		erin := e.dial(t, "erin@localhost")
		wantResult(t, register(erin, t, ircDomain, "nick", "erin_reg"), "register")
		wantResult(t, configureNetwork(t, erin, server, "ports", portStr, "tls_ports", ""), "configure")
		erin.Send(t, "<presence to='%s/erin'>%s</presence>", harness.Esc(room), mucX())
		erin.Expect(t, wait, "the registered nick wins, with 210", occupant(room+"/erin_reg", "", "110", "210"))
		alice.Expect(t, wait, "erin_reg joins", occupant(room+"/erin_reg", ""))
		// The nick configured for the network wins over the registered one.
		wantResult(t, configureNetwork(t, erin, server, "nick", "erin_cfg"), "configure nick")
		erin.Send(t, "<presence to='%s/erin_reg' type='unavailable'/>", harness.Esc(room))
		erin.Expect(t, wait, "left", occupant(room+"/erin_reg", "unavailable", "110"))
		alice.Expect(t, wait, "erin_reg leaves", occupant(room+"/erin_reg", "unavailable"))
		erin.Send(t, "<presence to='%s/erin'>%s</presence>", harness.Esc(room), mucX())
		erin.Expect(t, wait, "the configured nick wins", occupant(room+"/erin_cfg", "", "110", "210"))
		alice.Expect(t, wait, "erin_cfg joins", occupant(room+"/erin_cfg", ""))

		// disconnect-from-irc-server on the gateway.
		r := erin.IQ(t, "set", ircDomain, "<command xmlns='http://jabber.org/protocol/commands' node='disconnect-from-irc-server' action='execute'/>")
		wantResult(t, r, "disconnect first step")
		if v := formValues(r, "irc-servers"); len(v) != 1 || v[0] != server {
			t.Fatalf("servers offered: %s", r)
		}
		sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
		r = erin.IQ(t, "set", ircDomain, "<command xmlns='http://jabber.org/protocol/commands' node='disconnect-from-irc-server' sessionid='"+sid+"' action='complete'>"+
			"<x xmlns='jabber:x:data' type='submit'><field var='irc-servers'><value>"+server+"</value></field><field var='quit-message'><value>see you</value></field></x></command>")
		wantResult(t, r, "disconnect")
		erin.Expect(t, wait, "out of the room", occupant(room+"/erin_cfg", "unavailable", "110", "332"))
		if l := bob.expect(t, " QUIT "); !strings.HasPrefix(l, ":erin_cfg!") || !strings.Contains(l, "see you") {
			t.Errorf("quit line: %q", l)
		}
		alice.Expect(t, wait, "erin_cfg quits", occupant(room+"/erin_cfg", "unavailable"))
	})
}

// TestIRCOccupants follows the occupants of #go: a second user, modes, nick
// changes, a kick, MUC administration, case mapping, then an ircd restart
// and the last leave.
func TestIRCOccupants(t *testing.T) {
	top := t
	f := startIRC(t, ircJoined)
	const server = "localhost"
	room, ngircd, alice, carol, bob := f.room, f.ngircd, f.alice, f.carol, f.bob

	t.Run("nick conflict", func(t *testing.T) {
		carol.Send(t, "<presence to='%s/bob'>%s</presence>", harness.Esc(room), mucX())
		el := carol.Expect(t, wait, "conflict", occupant(room+"/bob", "error"))
		wantError(t, el, "conflict", "nick in use")
	})

	t.Run("second user", func(t *testing.T) {
		carol.Send(t, "<presence to='%s/carol'>%s</presence>", harness.Esc(room), mucX())
		carol.Expect(t, wait, "carol's self-presence", occupant(room+"/carol", "", "110"))
		carol.Expect(t, wait, "alice in carol's room", occupant(room+"/alice", ""))
		alice.Expect(t, wait, "carol joins alice's room", occupant(room+"/carol", ""))
		carol.Send(t, "<message to='%s' type='groupchat' id='c1'><body>carol here</body></message>", harness.Esc(room))
		alice.Expect(t, wait, "carol's message", harness.MessageFrom(room+"/carol", "carol here"))
		bob.expect(t, "PRIVMSG #go :carol here")
	})

	t.Run("topic and modes", func(t *testing.T) {
		alice.Send(t, "<message to='%s' type='groupchat' id='t1'><subject>new\ntopic</subject></message>", harness.Esc(room))
		bob.expect(t, "TOPIC #go :new topic")
		s := alice.Expect(t, wait, "topic change", func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.Child("", "subject") != nil && e.ChildText("", "subject") == "new topic"
		})
		if s.Attr("from") != room+"/alice" {
			t.Errorf("topic from %q", s.Attr("from"))
		}
		bob.send(t, "TOPIC #go :bob's topic")
		alice.Expect(t, wait, "topic from IRC", func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.ChildText("", "subject") == "bob's topic" && e.Attr("from") == room+"/bob"
		})
		bob.send(t, "MODE #go +v alice")
		p := alice.Expect(t, wait, "voiced", occupant(room+"/alice", "", "110"))
		if it := mucItem(p); it.Attr("affiliation") != "member" || it.Attr("role") != "participant" {
			t.Errorf("voiced alice: %s", p)
		}
		alice.Expect(t, wait, "mode message", harness.MessageFrom(room, "+v alice"))
		bob.send(t, "MODE #go +o carol")
		p = alice.Expect(t, wait, "carol opped", occupant(room+"/carol", ""))
		if it := mucItem(p); it.Attr("affiliation") != "admin" || it.Attr("role") != "moderator" {
			t.Errorf("opped carol: %s", p)
		}
	})

	t.Run("nick change", func(t *testing.T) {
		bob.send(t, "NICK bobby")
		p := alice.Expect(t, wait, "bob leaves with 303", occupant(room+"/bob", "unavailable", "303"))
		if mucItem(p).Attr("nick") != "bobby" {
			t.Errorf("303 without the new nick: %s", p)
		}
		alice.Expect(t, wait, "bobby", occupant(room+"/bobby", ""))
		bob.nick = "bobby"
		alice.Send(t, "<presence to='%s/alice2'/>", harness.Esc(room))
		p = alice.Expect(t, wait, "own 303", occupant(room+"/alice", "unavailable", "303", "110"))
		if mucItem(p).Attr("nick") != "alice2" {
			t.Errorf("303 without the new nick: %s", p)
		}
		alice.Expect(t, wait, "new self-presence", occupant(room+"/alice2", "", "110"))
		bob.expect(t, "NICK :alice2")
	})

	t.Run("kick", func(t *testing.T) {
		bob.send(t, "KICK #go carol :bye now")
		p := carol.Expect(t, wait, "kicked", occupant(room+"/carol", "unavailable", "307", "110"))
		it := mucItem(p)
		if it.Child("", "actor").Attr("nick") != "bobby" || it.ChildText("", "reason") != "bye now" {
			t.Errorf("kick presence: %s", p)
		}
		p = alice.Expect(t, wait, "carol kicked", occupant(room+"/carol", "unavailable", "307"))
		if mucItem(p).ChildText("", "reason") != "bye now" {
			t.Errorf("kick presence: %s", p)
		}
		carol.Send(t, "<message to='%s' type='groupchat' id='ck'><body>am I in?</body></message>", harness.Esc(room))
		wantError(t, carol.Expect(t, wait, "error after the kick", withID("ck")), "not-acceptable", "groupchat after a kick")
	})

	t.Run("muc admin", func(t *testing.T) {
		dan := dialIRC(t, ngircd.Addr, "dan")
		dan.send(t, "JOIN #go")
		dan.expect(t, "366")
		alice.Expect(t, wait, "dan joins", occupant(room+"/dan", ""))
		admin := func(item string) *xmlel.Element {
			return alice.IQ(t, "set", room, "<query xmlns='http://jabber.org/protocol/muc#admin'>"+item+"</query>")
		}
		bob.send(t, "MODE #go +o alice2")
		alice.Expect(t, wait, "alice opped", func(e *xmlel.Element) bool {
			return occupant(room+"/alice2", "", "110")(e) && mucItem(e).Attr("affiliation") == "admin"
		})
		wantResult(t, admin("<item nick='dan' role='participant'/>"), "voice")
		dan.expect(t, "MODE #go +v dan")
		wantResult(t, admin("<item nick='dan' role='moderator'/>"), "op")
		dan.expect(t, "MODE #go +o dan")
		wantResult(t, admin("<item nick='dan' role='none'><reason>enough\nnow</reason></item>"), "kick")
		dan.expect(t, "KICK #go dan :enough now")
		p := alice.Expect(t, wait, "dan kicked", occupant(room+"/dan", "unavailable", "307"))
		if mucItem(p).Child("", "actor").Attr("nick") != "alice2" {
			t.Errorf("kick actor: %s", p)
		}
		wantError(t, carol.IQ(t, "set", room, "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='bobby' role='none'/></query>"),
			"not-acceptable", "admin by a user not in the room")

		// Lists: from the occupants' modes, and the ban list from the server.
		list := func(item string) []string {
			r := alice.IQ(t, "get", room, "<query xmlns='http://jabber.org/protocol/muc#admin'><item "+item+"/></query>")
			wantResult(t, r, "list "+item)
			var out []string
			for _, it := range r.Child("http://jabber.org/protocol/muc#admin", "query").ChildrenNamed("", "item") {
				out = append(out, it.Attr("nick")+"|"+it.Attr("jid"))
			}
			return out
		}
		if got := strings.Join(list("affiliation='admin'"), " "); got != "alice2|alice2%"+server+"@"+ircDomain+" bobby|bobby%"+server+"@"+ircDomain {
			t.Errorf("admin list: %q", got)
		}
		if got := list("affiliation='outcast'"); len(got) != 0 {
			t.Errorf("empty ban list: %q", got)
		}
		bob.send(t, "MODE #go +b troll!*@*")
		alice.Expect(t, wait, "ban mode message", harness.MessageFrom(room, "+b troll!*@*"))
		if got := strings.Join(list("affiliation='outcast'"), " "); got != "|troll!*@*" {
			t.Errorf("ban list: %q", got)
		}
		wantError(t, carol.IQ(t, "get", room, "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query>"),
			"not-acceptable", "a list asked by a user not in the room")
	})

	t.Run("casemapping", func(t *testing.T) {
		// ngircd announces CASEMAPPING=ascii: #cm[1] and #cm{1} differ.
		cm := "#cm[1]%" + server + "@" + ircDomain
		alice.Send(t, "<presence to='%s/alice2'>%s</presence>", harness.Esc(cm), mucX())
		alice.Expect(t, wait, "joined #cm[1]", occupant(cm+"/alice2", "", "110"))
		bob.send(t, "JOIN #CM[1],#cm{1}")
		alice.Expect(t, wait, "bobby joins", occupant(cm+"/bobby", ""))
		bob.send(t, "PRIVMSG #cm{1} :elsewhere")
		bob.send(t, "PRIVMSG #CM[1] :here")
		alice.Expect(t, wait, "the message to #CM[1]", harness.MessageFrom(cm+"/bobby", "here"))
		for _, el := range alice.Received() {
			if el.ChildText("", "body") == "elsewhere" {
				t.Errorf("a message to #cm{1} shown in #cm[1]: %s", el)
			}
		}
		bob.send(t, "PART #cm{1},#CM[1]")
		alice.Expect(t, wait, "bobby leaves", occupant(cm+"/bobby", "unavailable"))
		alice.Send(t, "<presence to='%s/alice2' type='unavailable'/>", harness.Esc(cm))
		alice.Expect(t, wait, "left #cm[1]", occupant(cm+"/alice2", "unavailable", "110"))
	})

	t.Run("ircd restart", func(t *testing.T) {
		before := len(alice.Received())
		ngircd.Stop(t)
		alice.Expect(t, wait, "status line about the lost connection", harness.MessageFrom(server+"@"+ircDomain, "reconnecting"))
		ngircd.Start(t)
		alice.Expect(t, 60*time.Second, "reconnected", harness.MessageFrom(server+"@"+ircDomain, "Connected to"))
		bob = dialIRC(top, ngircd.Addr, "bob") // lives until the end of TestIRCOccupants
		bob.send(t, "JOIN #go")
		bob.expect(t, "alice2") // alice2 is back in #go (NAMES or JOIN)
		bob.send(t, "PRIVMSG #go :after the restart")
		alice.Expect(t, wait, "traffic resumes", harness.MessageFrom(room+"/bob", "after the restart"))
		alice.Send(t, "<message to='%s' type='groupchat' id='ar'><body>me too</body></message>", harness.Esc(room))
		bob.expect(t, "PRIVMSG #go :me too")
		r := alice.IQ(t, "set", server+"@"+ircDomain, "<command xmlns='http://jabber.org/protocol/commands' node='get-irc-connection-info' action='execute'/>")
		note := r.Child("http://jabber.org/protocol/commands", "command").ChildText("", "note")
		if !strings.Contains(note, "Connected to localhost") || !strings.Contains(note, "#go") {
			t.Errorf("connection info: %s", r)
		}
		for _, el := range alice.Received()[before:] {
			if harness.IsPresence(el) && el.Attr("from") == room+"/alice2" && (el.Attr("type") == "unavailable" || statusCodes(el)["100"]) {
				t.Errorf("the restart showed as a leave or a second join: %s", el)
			}
		}
	})

	t.Run("leave", func(t *testing.T) {
		alice.Send(t, "<presence to='%s/alice2' type='unavailable'/>", harness.Esc(room))
		alice.Expect(t, wait, "self unavailable", occupant(room+"/alice2", "unavailable", "110"))
		bob.expect(t, "PART #go")
		// The connection quits with the last channel: the QUIT follows the
		// PART, so wait until the server no longer knows alice2.
		deadline := time.Now().Add(wait)
		for {
			bob.send(t, "ISON alice2")
			if l := bob.expect(t, " 303 "); !strings.Contains(l, "alice2") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice2 still connected %v after leaving its last channel", wait)
			}
			time.Sleep(50 * time.Millisecond)
		}
		bob.send(t, "PRIVMSG alice2 :are you there")
		bob.expect(t, "401")
	})
}

// TestIRCPersistent keeps a persistent channel joined across a gateway
// restart, with its history and its archive.
func TestIRCPersistent(t *testing.T) {
	f := startIRC(t, ircConfigured)
	const server = "localhost"
	srv, env, e, alicePW, alice, bob := f.srv, f.env, f.e, f.alicePW, f.alice, f.bob

	t.Run("persistent channel and history", func(t *testing.T) {
		keep := "#keep%" + server + "@" + ircDomain
		r := alice.IQ(t, "set", keep, "<command xmlns='http://jabber.org/protocol/commands' node='configure' action='execute'/>")
		wantResult(t, r, "channel configure")
		sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
		r = alice.IQ(t, "set", keep, "<command xmlns='http://jabber.org/protocol/commands' node='configure' sessionid='"+sid+"' action='complete'>"+
			submitForm("", "persistent", "true", "record_history", "true")+"</command>")
		wantResult(t, r, "channel configure submit")
		bob.send(t, "JOIN #keep")
		bob.expect(t, "366")
		alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(keep), mucX())
		alice.Expect(t, wait, "joined #keep", occupant(keep+"/alice", "", "110"))
		bob.expect(t, "JOIN :#keep")
		alice.Send(t, "<presence to='%s/alice' type='unavailable'/>", harness.Esc(keep))
		alice.Expect(t, wait, "left #keep", occupant(keep+"/alice", "unavailable", "110"))
		bob.send(t, "PRIVMSG #keep :while you were away")
		bob.send(t, "PRIVMSG alice :ping")
		alice.Expect(t, wait, "still connected", harness.MessageFrom("bob%"+server+"@"+ircDomain, "ping"))

		// Restart the gateway: the channel is rejoined without any client.
		e.gw.Signal(syscall.SIGTERM)
		if code := e.gw.Wait(t, wait); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		if l := bob.expect(t, " QUIT "); !strings.Contains(l, "Gateway shutting down") {
			t.Errorf("quit line on shutdown: %q", l)
		}
		e.gw = harness.StartGateway(t, e.bin, env)
		e.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+ircDomain)
		bob.expect(t, "JOIN :#keep")
		bob.send(t, "PRIVMSG #keep :after the restart")
		bob.send(t, "PRIVMSG alice :sync")
		alice.Expect(t, wait, "rejoined", harness.MessageFrom("bob%"+server+"@"+ircDomain, "sync"))

		alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(keep), mucX())
		alice.Expect(t, wait, "self", occupant(keep+"/alice", "", "110"))
		for _, want := range []string{"while you were away", "after the restart"} {
			m := alice.Expect(t, wait, "history: "+want, harness.MessageFrom(keep+"/bob", want))
			if m.Child("urn:xmpp:delay", "delay") == nil {
				t.Errorf("history without delay: %s", m)
			}
		}
		alice.Expect(t, wait, "subject after the history", func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.Attr("from") == keep && e.Child("", "subject") != nil
		})
		two := harness.Dial(t, srv.C2SAddr(), "alice@localhost", alicePW, "hist")
		two.Send(t, "<presence to='%s/alice'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='1'/></x></presence>", harness.Esc(keep))
		two.Expect(t, wait, "self", occupant(keep+"/alice", "", "110"))
		two.Expect(t, wait, "the last message", harness.MessageFrom(keep+"/bob", "after the restart"))
		two.Expect(t, wait, "subject", func(e *xmlel.Element) bool { return harness.IsMessage(e) && e.Child("", "subject") != nil })
		for _, el := range two.Received() {
			if strings.Contains(el.ChildText("", "body"), "while you were away") {
				t.Errorf("maxstanzas=1 gave more: %s", el)
			}
		}
		two.Close()

		// MAM with RSM paging.
		mam := func(set string) (*xmlel.Element, []*xmlel.Element) {
			qid := fmt.Sprintf("q%d", time.Now().UnixNano())
			r := alice.IQ(t, "set", keep, "<query xmlns='urn:xmpp:mam:2' queryid='"+qid+"'><set xmlns='http://jabber.org/protocol/rsm'>"+set+"</set></query>")
			wantResult(t, r, "mam query")
			var res []*xmlel.Element
			for _, el := range alice.Received() {
				if x := el.Child("urn:xmpp:mam:2", "result"); x != nil && x.Attr("queryid") == qid {
					res = append(res, x)
				}
			}
			return r.Child("urn:xmpp:mam:2", "fin"), res
		}
		fin, res := mam("<max>1</max>")
		if len(res) != 1 || fin.Attr("complete") == "true" {
			t.Fatalf("first page: %d results, fin %s", len(res), fin)
		}
		fwd := res[0].Child("urn:xmpp:forward:0", "forwarded")
		if b := fwd.Child("", "message").ChildText("", "body"); b != "while you were away" || fwd.Child("urn:xmpp:delay", "delay") == nil {
			t.Errorf("first archived message: %s", res[0])
		}
		last := fin.Child("http://jabber.org/protocol/rsm", "set").ChildText("", "last")
		fin, res = mam("<max>10</max><after>" + last + "</after>")
		if len(res) != 1 || fin.Attr("complete") != "true" {
			t.Fatalf("second page: %d results, fin %s", len(res), fin)
		}
		if b := res[0].Child("urn:xmpp:forward:0", "forwarded").Child("jabber:client", "message").ChildText("", "body"); b != "after the restart" {
			t.Errorf("second archived message: %s", res[0])
		}

		// The with filter: one occupant's messages.
		alice.Send(t, "<message to='%s' type='groupchat' id='mine'><body>from alice</body></message>", harness.Esc(keep))
		alice.Expect(t, wait, "reflection", withID("mine"))
		withQuery := func(with string) []string {
			qid := fmt.Sprintf("w%d", time.Now().UnixNano())
			r := alice.IQ(t, "set", keep, "<query xmlns='urn:xmpp:mam:2' queryid='"+qid+"'>"+submitForm("urn:xmpp:mam:2", "with", with)+"</query>")
			wantResult(t, r, "mam with "+with)
			var bodies []string
			for _, el := range alice.Received() {
				if x := el.Child("urn:xmpp:mam:2", "result"); x != nil && x.Attr("queryid") == qid {
					bodies = append(bodies, x.Child("urn:xmpp:forward:0", "forwarded").Child("", "message").ChildText("", "body"))
				}
			}
			return bodies
		}
		if got := strings.Join(withQuery(keep+"/alice"), "|"); got != "from alice" {
			t.Errorf("with alice: %q", got)
		}
		if got := strings.Join(withQuery(keep+"/bob"), "|"); got != "while you were away|after the restart" {
			t.Errorf("with bob: %q", got)
		}

		// The XEP-0045 owner form shows and changes the same settings.
		r = alice.IQ(t, "get", keep, "<query xmlns='http://jabber.org/protocol/muc#owner'/>")
		wantResult(t, r, "owner form")
		if v := formValues(r, "persistent"); len(v) != 1 || v[0] != "true" {
			t.Fatalf("owner form: %s", r)
		}
		r = alice.IQ(t, "set", keep, "<query xmlns='http://jabber.org/protocol/muc#owner'>"+
			submitForm("http://jabber.org/protocol/muc#roomconfig", "persistent", "false")+"</query>")
		wantResult(t, r, "owner submit")
		alice.Send(t, "<presence to='%s/alice' type='unavailable'/>", harness.Esc(keep))
		alice.Expect(t, wait, "left #keep", occupant(keep+"/alice", "unavailable", "110"))
		bob.expect(t, "PART #keep") // no longer persistent: the last leave parts

	})
}

func stanzaText(el *xmlel.Element) string {
	return el.Child("", "error").ChildText("", "text")
}
