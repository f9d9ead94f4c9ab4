package irc

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

const testUser = "u@example.org"

type fixture struct {
	b *Bridge
	h *bridgetest.Host
	f *fakeIRC
}

func setup(t *testing.T, allowPrivate bool, cfg netConfig) *fixture {
	t.Helper()
	fx := &fixture{b: New(Options{AllowPrivate: allowPrivate}), h: newFakeHost(t), f: newFakeIRC(t)}
	ctx := startOn(t, fx.b, fx.h)
	cfg.Ports, cfg.TLSPorts = []int{fx.f.port()}, nil
	if err := fx.b.saveNetConfig(ctx, testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
	return fx
}

func (fx *fixture) handle(t *testing.T, raw string) {
	t.Helper()
	st, err := xmlel.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	fx.h.Run(func(ctx context.Context) {
		fx.b.Handle(ctx, &bridges.User{JID: testUser, Full: testUser + "/r"}, st)
	})
}

func (fx *fixture) join(t *testing.T) {
	fx.handle(t, "<presence xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example/nick'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
}

func (fx *fixture) networks() int {
	var n int
	fx.h.Run(func(context.Context) { n = len(fx.b.networksOf(testUser)) })
	return n
}

func presenceErr(cond string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return e.Local == "presence" && e.Attr("type") == "error" && stanza.ErrorOf(e).Condition == cond
	}
}

func selfPresence(e *xmlel.Element) bool {
	return e.Local == "presence" && e.Attr("type") == "" && strings.Contains(e.String(), "code=\"110\"")
}

func TestCapMultilineLS(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.join(t)
	fx.f.expect(t, "CAP LS 302")
	fx.f.expect(t, "NICK nick")
	fx.f.expect(t, "USER nick 0 * nick")
	fx.f.send(t, ":srv CAP * LS * :multi-prefix sasl=PLAIN,EXTERNAL", ":srv CAP * LS :server-time echo-message")
	if l := fx.f.expect(t, "CAP "); l != "CAP REQ :multi-prefix server-time" {
		t.Fatalf("request = %q", l)
	}
	fx.f.send(t, ":srv CAP nick ACK :multi-prefix server-time")
	fx.f.expect(t, "CAP END")
	fx.f.send(t, ":srv 001 nick :Welcome", ":srv 005 nick PREFIX=(qaohv)~&@%+ CHANTYPES=# :are supported")
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 332 nick #c :the topic", ":srv 353 nick = #c :nick +@op ~boss", ":srv 366 nick #c :End")
	op := fx.h.Expect(t, "op's presence", func(e *xmlel.Element) bool { return e.Attr("from") == "#c%localhost@irc.example/op" })
	if it := op.Child(stanza.NSMUCUser, "x").Child("", "item"); it.Attr("role") != "moderator" || it.Attr("affiliation") != "admin" {
		t.Errorf("op: %s", op)
	}
	fx.h.Expect(t, "self-presence", selfPresence)
	subj := fx.h.Expect(t, "subject", func(e *xmlel.Element) bool { return e.Child("", "subject") != nil })
	if subj.ChildText("", "subject") != "the topic" {
		t.Errorf("subject: %s", subj)
	}
	// A message with a server-time tag; a PING is answered at once.
	fx.f.send(t, "PING :abc")
	fx.f.expect(t, "PONG abc")
	fx.f.send(t, "@time=2020-01-01T00:00:00.000Z :boss!u@h PRIVMSG #c :old news")
	m := fx.h.Expect(t, "message", func(e *xmlel.Element) bool { return e.ChildText("", "body") == "old news" })
	if d := m.Child(stanza.NSDelay, "delay"); d == nil || d.Attr("stamp") != "2020-01-01T00:00:00Z" {
		t.Errorf("no delay from server-time: %s", m)
	}
	// What the negotiation and the join leave behind, for as long as the
	// connection lasts: the enabled capabilities, not the offered list
	// (slices of the LS lines, which it would keep), and no maps for the
	// joins already answered.
	fx.h.Run(func(context.Context) {
		n := fx.b.networkOf(testUser, "localhost")
		if n.caps.ls != nil {
			t.Errorf("the offered capabilities are kept: %q", n.caps.ls)
		}
		if e := n.caps.enabled; !e.has("multi-prefix") || !e.has("server-time") || e.has("echo-message") || e.has("sasl") {
			t.Errorf("enabled capabilities %08b", e)
		}
		if ch := n.chans["#c"]; ch.pending != nil || ch.hist != nil {
			t.Errorf("answered joins are kept: %v %v", ch.pending, ch.hist)
		}
	})
}

func TestSASL(t *testing.T) {
	cfg := defaultNetConfig()
	cfg.SASLPassword = "s3cret"
	fx := setup(t, true, cfg)
	fx.join(t)
	fx.f.expect(t, "CAP LS 302")
	fx.f.send(t, ":srv CAP * LS :sasl multi-prefix")
	if l := fx.f.expect(t, "CAP REQ"); l != "CAP REQ :sasl multi-prefix" {
		t.Fatalf("request = %q", l)
	}
	fx.f.send(t, ":srv CAP nick ACK :sasl multi-prefix")
	fx.f.expect(t, "AUTHENTICATE PLAIN")
	fx.f.send(t, "AUTHENTICATE +")
	want := "AUTHENTICATE " + base64.StdEncoding.EncodeToString([]byte("\x00nick\x00s3cret"))
	if l := fx.f.expect(t, "AUTHENTICATE"); l != want {
		t.Fatalf("got %q, want %q", l, want)
	}
	fx.f.send(t, ":srv 900 nick nick!u@h nick :You are now logged in", ":srv 903 nick :SASL authentication successful")
	fx.f.expect(t, "CAP END")
	fx.f.send(t, ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
}

func TestSASLFailure(t *testing.T) {
	cfg := defaultNetConfig()
	cfg.SASLPassword = "wrong"
	fx := setup(t, true, cfg)
	fx.join(t)
	fx.f.expect(t, "CAP LS 302")
	fx.f.send(t, ":srv CAP * LS :sasl")
	fx.f.expect(t, "CAP REQ sasl")
	fx.f.send(t, ":srv CAP nick ACK :sasl")
	fx.f.expect(t, "AUTHENTICATE PLAIN")
	fx.f.send(t, "AUTHENTICATE +")
	fx.f.expect(t, "AUTHENTICATE ")
	fx.f.send(t, ":srv 904 nick :SASL authentication failed")
	e := fx.h.Expect(t, "not-authorized", presenceErr("not-authorized"))
	if !strings.Contains(stanza.ErrorOf(e).Text, "SASL authentication failed") {
		t.Errorf("error text: %s", e)
	}
	fx.f.closed(t)
	if n := fx.networks(); n != 0 {
		t.Fatalf("the failed network is still there (%d)", n)
	}
}

func TestSASLNotOffered(t *testing.T) {
	cfg := defaultNetConfig()
	cfg.SASLPassword = "pw"
	fx := setup(t, true, cfg)
	fx.join(t)
	fx.f.expect(t, "CAP LS 302")
	fx.f.send(t, ":srv CAP * LS :multi-prefix")
	fx.h.Expect(t, "not-authorized", presenceErr("not-authorized"))
	fx.f.closed(t)
}

func TestRegistrationFailures(t *testing.T) {
	cases := []struct{ line, cond string }{
		{":srv 464 nick :Password incorrect", "not-authorized"},
		{":srv 432 * nick :Erroneous nickname", "not-acceptable"},
		{":srv 433 * nick :Nickname already in use", "conflict"},
	}
	for _, c := range cases {
		t.Run(c.cond, func(t *testing.T) {
			cfg := defaultNetConfig()
			cfg.Password = "pw"
			fx := setup(t, true, cfg)
			fx.join(t)
			fx.f.expect(t, "CAP LS 302")
			fx.f.expect(t, "PASS pw")
			fx.f.send(t, ":srv CAP * LS :", c.line)
			fx.h.Expect(t, c.cond, presenceErr(c.cond))
			fx.f.closed(t) // no retry: the network is forgotten
			if n := fx.networks(); n != 0 {
				t.Fatalf("the failed network is still there (%d)", n)
			}
		})
	}
}

func TestPrivateAddressRefused(t *testing.T) {
	fx := setup(t, false, defaultNetConfig())
	fx.join(t)
	e := fx.h.Expect(t, "not-acceptable", presenceErr("not-acceptable"))
	if !strings.Contains(stanza.ErrorOf(e).Text, "private address") {
		t.Errorf("error text: %s", e)
	}
}

func TestOutboundSafety(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.join(t)
	fx.f.expect(t, "USER")
	fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 366 nick #c :End")
	fx.h.Expect(t, "self-presence", selfPresence)
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example' type='groupchat' id='y'><body>one&#13;&#10;QUIT :x&#10;two</body>"+
		"<origin-id xmlns='urn:xmpp:sid:0' id='origin-y'/><stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='#c%localhost@irc.example'/>"+
		"<reply xmlns='urn:xmpp:reply:0' id='earlier' to='#c%localhost@irc.example/bob'/></message>")
	fx.f.expect(t, "PRIVMSG #c one")
	if l := fx.f.expect(t, "PRIVMSG"); l != "PRIVMSG #c :QUIT :x" {
		t.Fatalf("got %q", l)
	}
	fx.f.expect(t, "PRIVMSG #c two")
	r := fx.h.Expect(t, "reflection", func(e *xmlel.Element) bool { return e.Attr("id") == "y" && e.Attr("type") == "groupchat" })
	wantReflectionOf(t, r, "origin-y")
	if rp := r.Child("urn:xmpp:reply:0", "reply"); rp == nil || rp.Attr("id") != "earlier" {
		t.Errorf("reflection without the reply: %s", r)
	}
}

// wantReflectionOf checks that a reflection keeps the client's origin-id
// and carries one stanza-id: the room's, not one the client put there.
func wantReflectionOf(t *testing.T, r *xmlel.Element, originID string) {
	t.Helper()
	if o := r.Child("urn:xmpp:sid:0", "origin-id"); o == nil || o.Attr("id") != originID {
		t.Errorf("reflection without origin-id %s: %s", originID, r)
	}
	sids := r.ChildrenNamed("urn:xmpp:sid:0", "stanza-id")
	if len(sids) != 1 || sids[0].Attr("id") == "forged" || sids[0].Attr("id") == "" || sids[0].Attr("by") != "#c%localhost@irc.example" {
		t.Errorf("reflection stanza-ids: %s", r)
	}
	if bodies := r.ChildrenNamed("", "body"); len(bodies) != 1 {
		t.Errorf("reflection with %d bodies: %s", len(bodies), r)
	}
}

func setupPorts(t *testing.T, cfg netConfig) *fixture {
	t.Helper()
	fx := &fixture{b: New(Options{AllowPrivate: true}), h: newFakeHost(t)}
	ctx := startOn(t, fx.b, fx.h)
	if err := fx.b.saveNetConfig(ctx, testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
	return fx
}

func statusMessage(sub string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return e.Local == "message" && e.Attr("from") == "localhost@irc.example" && strings.Contains(e.ChildText("", "body"), sub)
	}
}

// TLS ports are tried first; with verification off a self-signed
// certificate is accepted and the status says the link is encrypted.
func TestTLSFirst(t *testing.T) {
	tf, plain := newFakeIRCTLS(t), newFakeIRC(t)
	cfg := defaultNetConfig()
	cfg.TLSPorts, cfg.Ports, cfg.VerifyCert = []int{tf.port()}, []int{plain.port()}, false
	fx := setupPorts(t, cfg)
	fx.join(t)
	tf.expect(t, "CAP LS 302")
	tf.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome")
	fx.h.Expect(t, "encrypted status", statusMessage("encrypted with TLS"))
	tf.expect(t, "JOIN #c")
}

// With verification on, a bad certificate fails and the plain port is
// used; the status says so.
func TestTLSVerifyFallsBackToPlain(t *testing.T) {
	tf, plain := newFakeIRCTLS(t), newFakeIRC(t)
	cfg := defaultNetConfig()
	cfg.TLSPorts, cfg.Ports, cfg.VerifyCert = []int{tf.port()}, []int{plain.port()}, true
	fx := setupPorts(t, cfg)
	fx.join(t)
	plain.expect(t, "CAP LS 302")
	plain.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome")
	fx.h.Expect(t, "plain status", statusMessage("not encrypted"))
	plain.expect(t, "JOIN #c")
}

// With echo-message and labeled-response, a message is reflected when
// the server echoes it, and a labeled error comes back to the sender.
func TestLabeledEcho(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.join(t)
	fx.f.expect(t, "USER")
	fx.f.send(t, ":srv CAP * LS :echo-message labeled-response message-tags")
	if l := fx.f.expect(t, "CAP REQ"); l != "CAP REQ :message-tags echo-message labeled-response" {
		t.Fatalf("request: %q", l)
	}
	fx.f.send(t, ":srv CAP nick ACK :message-tags echo-message labeled-response", ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 366 nick #c :End")
	fx.h.Expect(t, "self-presence", selfPresence)
	msg := func(id, body string) {
		fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example' type='groupchat' id='"+id+"'><body>"+body+"</body><origin-id xmlns='urn:xmpp:sid:0' id='origin-"+id+"'/></message>")
	}
	msg("g", "one&#10;two")
	l1, l2 := fx.f.expect(t, "@label="), fx.f.expect(t, "@label=")
	label := func(l string) string { return strings.TrimPrefix(strings.Fields(l)[0], "@label=") }
	if !strings.HasSuffix(l1, " PRIVMSG #c one") || !strings.HasSuffix(l2, " PRIVMSG #c two") {
		t.Fatalf("lines: %q %q", l1, l2)
	}
	fx.f.send(t, "@label="+label(l1)+" :nick!u@h PRIVMSG #c one", "@label="+label(l2)+" :nick!u@h PRIVMSG #c two")
	r := fx.h.Expect(t, "reflection", func(e *xmlel.Element) bool { return e.Attr("id") == "g" })
	if r.ChildText("", "body") != "one\ntwo" || r.Attr("type") != "groupchat" {
		t.Fatalf("reflection: %s", r)
	}
	wantReflectionOf(t, r, "origin-g")
	msg("h", "refused")
	l := fx.f.expect(t, "@label=")
	fx.f.send(t, "@label="+label(l)+" :srv 404 nick #c :Cannot send to channel")
	e := fx.h.Expect(t, "error", func(e *xmlel.Element) bool { return e.Attr("id") == "h" })
	if stanza.ErrorOf(e).Condition != "recipient-unavailable" || !strings.Contains(stanza.ErrorOf(e).Text, "Cannot send to channel") {
		t.Fatalf("error: %s", e)
	}
}

// Stored IRC passwords are sealed when a store key is set, bound to the
// user and the network: moved to another network's settings they do not
// open.
func TestPasswordsSealed(t *testing.T) {
	h := newFakeHost(t)
	h.Logs = &bridgetest.LogBuffer{}
	sealer, _, err := h.St.OpenSealer(context.Background(), "k", h.Domain())
	if err != nil {
		t.Fatal(err)
	}
	b := New(Options{Sealer: sealer})
	startOn(t, b, h)
	cfg := defaultNetConfig()
	cfg.Password, cfg.SASLPassword = "server-pass", "sasl-pass"
	if err := b.saveNetConfig(context.Background(), testUser, "irc.example.net", cfg); err != nil {
		t.Fatal(err)
	}
	raw, err := h.St.IRCNetworkSettings(context.Background(), testUser, "irc.example.net")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "server-pass") || strings.Contains(string(raw), "sasl-pass") {
		t.Fatalf("passwords stored in clear: %s", raw)
	}
	got, err := b.loadNetConfig(context.Background(), testUser, "irc.example.net")
	if err != nil || got.Password != "server-pass" || got.SASLPassword != "sasl-pass" {
		t.Fatalf("loaded %+v, %v", got, err)
	}
	if err := h.St.PutIRCNetworkSettings(context.Background(), testUser, "other.example.net", raw); err != nil {
		t.Fatal(err)
	}
	got, err = b.loadNetConfig(context.Background(), testUser, "other.example.net")
	if err != nil || got.Password != "" || got.SASLPassword != "" || got.Ports[0] != cfg.Ports[0] {
		t.Fatalf("passwords moved to another network: %+v %v", got, err)
	}
	for _, want := range []string{"irc_networks/other.example.net/password of " + testUser, "irc_networks/other.example.net/sasl_password of " + testUser, store.ErrNotBound.Error()} {
		if !strings.Contains(h.Logs.String(), want) {
			t.Errorf("log without %q:\n%s", want, h.Logs)
		}
	}
}

// A dropped connection is reopened and the rooms rejoined: the resource
// sees a status line and the membership changes, not a second join.
func TestReconnect(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.join(t)
	register := func() {
		fx.f.expect(t, "CAP LS 302")
		fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome")
	}
	register()
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 353 nick = #c :nick old", ":srv 366 nick #c :End")
	fx.h.Expect(t, "self-presence", selfPresence)

	fx.f.drop()
	fx.f.closed(t)
	fx.h.Expect(t, "status line", statusMessage("reconnecting"))
	register()
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 353 nick = #c :nick new", ":srv 366 nick #c :End")
	var seen []*xmlel.Element
	newIn, oldOut := false, false
	fx.h.Expect(t, "the membership changes", func(e *xmlel.Element) bool {
		seen = append(seen, e)
		newIn = newIn || (e.Attr("from") == "#c%localhost@irc.example/new" && e.Attr("type") == "")
		oldOut = oldOut || (e.Attr("from") == "#c%localhost@irc.example/old" && e.Attr("type") == "unavailable")
		return newIn && oldOut
	})
	for _, e := range seen {
		if e.Local == "presence" && e.Attr("from") == "#c%localhost@irc.example/nick" {
			t.Errorf("the reconnection showed our own presence again: %s", e)
		}
	}

	// Our nick is still taken by the old connection: another one is used.
	fx.f.drop()
	fx.f.closed(t)
	fx.h.Expect(t, "status line", statusMessage("reconnecting"))
	fx.f.expect(t, "CAP LS 302")
	fx.f.send(t, ":srv CAP * LS :", ":srv 433 * nick :Nickname is already in use")
	fx.f.expect(t, "NICK nick_")
	fx.f.send(t, ":srv 001 nick_ :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick_!u@h JOIN #c", ":srv 353 nick_ = #c :nick_ new", ":srv 366 nick_ #c :End")
	p := fx.h.Expect(t, "our nick change", func(e *xmlel.Element) bool {
		return e.Attr("from") == "#c%localhost@irc.example/nick" && e.Attr("type") == "unavailable"
	})
	if s := p.String(); !strings.Contains(s, `code="303"`) || !strings.Contains(s, `nick="nick_"`) {
		t.Errorf("no 303 to the new nick: %s", p)
	}
	fx.h.Expect(t, "new self-presence", func(e *xmlel.Element) bool {
		return e.Attr("from") == "#c%localhost@irc.example/nick_" && selfPresence(e)
	})
}

// Joins made before registration completes are sent in one batch, keyed
// channels first.
func TestJoinsBatched(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.join(t)
	fx.handle(t, "<presence xmlns='jabber:component:accept' from='"+testUser+"/r' to='#b%localhost@irc.example/nick'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
	fx.handle(t, "<presence xmlns='jabber:component:accept' from='"+testUser+"/r' to='#k%localhost@irc.example/nick'><x xmlns='http://jabber.org/protocol/muc'><password>key</password></x></presence>")
	fx.f.expect(t, "USER")
	fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome")
	if l := fx.f.expect(t, "JOIN"); l != "JOIN #k,#b,#c key" {
		t.Fatalf("join line: %q", l)
	}
}

// A JOIN the server never answers ends in an error, not silence.
func TestJoinTimeout(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.b.joinTimeout = 10 * time.Millisecond
	fx.join(t)
	fx.f.expect(t, "USER")
	fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.h.Expect(t, "timeout error", presenceErr("remote-server-timeout"))
	fx.f.expect(t, "QUIT") // no channel left: the connection closes
}

// A user's session is forgotten with its last network, and a stanza for
// a network the user is not on does not start one.
func TestSessionForgotten(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	sessions := func() int {
		fx.b.mu.Lock()
		defer fx.b.mu.Unlock()
		return len(fx.b.sessions)
	}
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='bob%irc.elsewhere@irc.example' type='chat'><body>hi</body></message>")
	fx.h.Expect(t, "refusal", func(e *xmlel.Element) bool { return stanza.ErrorOf(e).Condition == "recipient-unavailable" })
	if n := sessions(); n != 0 {
		t.Fatalf("%d sessions after a message to a network the user is not on", n)
	}
	fx.join(t)
	fx.f.expect(t, "USER")
	fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 366 nick #c :End")
	fx.h.Expect(t, "self-presence", selfPresence)
	if n := sessions(); n != 1 {
		t.Fatalf("%d sessions while in a room", n)
	}
	fx.handle(t, "<presence xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example/nick' type='unavailable'/>")
	fx.f.expect(t, "PART #c")
	fx.f.expect(t, "QUIT")
	var n int
	fx.h.Run(func(context.Context) { n = sessions() })
	if n != 0 {
		t.Fatalf("%d sessions after the last network closed", n)
	}
}

// A network that is no longer the user's (replaced, or already dropped)
// leaves the session as it is when dropped.
func TestDropStaleNetwork(t *testing.T) {
	b := New(Options{})
	cur := &network{user: testUser, server: "localhost"}
	b.addNetwork(cur)
	b.dropNetwork(&network{user: testUser, server: "localhost"})
	b.dropNetwork(&network{user: testUser, server: "elsewhere"})
	if b.networkOf(testUser, "localhost") != cur {
		t.Fatal("dropping a stale network dropped the current one")
	}
	b.dropNetwork(cur)
	if len(b.sessions) != 0 {
		t.Fatalf("sessions left: %v", b.sessions)
	}
}
