package irc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

const (
	bobJID   = "bob%localhost@irc.example"
	carolJID = "carol%localhost@irc.example"
)

// watchFixture is a registered user with the IRC contacts nicks on
// localhost, joined to #c: the server offers caps (a CAP LS line's list)
// and sends isupport (ISUPPORT tokens) before the end of its MOTD.
func watchFixture(t *testing.T, caps, isupport string, nicks ...string) *fixture {
	t.Helper()
	fx := setup(t, true, defaultNetConfig())
	fx.b.opts.PresencePoll = time.Hour // the tests poll with pollNow
	ctx := context.Background()
	if err := fx.h.St.PutRegistration(ctx, "irc.example", testUser, map[string]string{"nick": "nick"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range nicks {
		c := store.Contact{Domain: "irc.example", JID: testUser, Contact: n + "%localhost@irc.example", Name: n, Group: "IRC", State: store.ContactAdded}
		if err := fx.h.St.PutContact(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	fx.join(t)
	fx.f.expect(t, "CAP LS 302")
	fx.f.send(t, ":srv CAP * LS :"+caps)
	if caps != "" {
		fx.f.expect(t, "CAP REQ")
		fx.f.send(t, ":srv CAP nick ACK :"+caps)
	}
	fx.f.expect(t, "CAP END")
	fx.f.send(t, ":srv 001 nick :Welcome", ":srv 005 nick "+isupport+" :are supported", ":srv 376 nick :End of MOTD")
	fx.f.expect(t, "JOIN #c") // registered
	return fx
}

// contactPresence matches a presence from jid to the user of type typ,
// with show and status.
func contactPresence(jid, typ, show, status string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return e.Local == "presence" && e.Attr("from") == jid && e.Attr("to") == testUser && e.Attr("type") == typ &&
			e.ChildText("", "show") == show && e.ChildText("", "status") == status
	}
}

func (fx *fixture) pollNow(t *testing.T) {
	t.Helper()
	fx.h.Run(func(context.Context) { fx.b.networkOf(testUser, "localhost").pollNow() })
}

// ngircd 26.1 offers neither MONITOR nor away-notify: ISON tells who is
// online, USERHOST who is away, and WHOIS the away message.
func TestContactPresencePolled(t *testing.T) {
	fx := watchFixture(t, "", "CASEMAPPING=ascii", "bob")
	fx.f.expect(t, "ISON bob")
	fx.f.send(t, ":srv 303 nick :Bob")
	fx.h.Expect(t, "bob available", contactPresence(bobJID, "", "", ""))

	fx.pollNow(t)
	fx.f.expect(t, "ISON Bob")
	fx.f.expect(t, "USERHOST Bob")
	fx.f.send(t, ":srv 303 nick :Bob", ":srv 302 nick :Bob=-~b@h")
	fx.f.expect(t, "WHOIS Bob")
	fx.f.send(t, ":srv 311 nick Bob ~b h * :Bob Builder", ":srv 301 nick Bob :gone fishing", ":srv 318 nick Bob :End of WHOIS list")
	fx.h.Expect(t, "bob away", contactPresence(bobJID, "", "away", "gone fishing"))

	// A probe is answered with what is known.
	fx.handle(t, "<presence xmlns='jabber:component:accept' type='probe' from='"+testUser+"' to='"+bobJID+"'/>")
	fx.h.Expect(t, "bob away again", contactPresence(bobJID, "", "away", "gone fishing"))
	// And a probe of a nick not watched, with unavailable.
	fx.handle(t, "<presence xmlns='jabber:component:accept' type='probe' from='"+testUser+"' to='"+carolJID+"'/>")
	fx.h.Expect(t, "carol unavailable", func(e *xmlel.Element) bool {
		return e.Local == "presence" && e.Attr("from") == carolJID && e.Attr("type") == "unavailable"
	})

	// Back: USERHOST says so.
	fx.pollNow(t)
	fx.f.send(t, ":srv 303 nick :Bob", ":srv 302 nick :Bob=+~b@h")
	fx.h.Expect(t, "bob back", contactPresence(bobJID, "", "", ""))
	// Gone: ISON says so.
	fx.pollNow(t)
	fx.f.send(t, ":srv 303 nick :", ":srv 302 nick :")
	fx.h.Expect(t, "bob unavailable", contactPresence(bobJID, "unavailable", "", ""))

	// The user comes online: the contacts' presence is sent again.
	fx.h.Run(func(ctx context.Context) { fx.b.UserOnline(ctx, testUser) })
	fx.h.Expect(t, "bob unavailable again", contactPresence(bobJID, "unavailable", "", ""))
}

// An ISON or USERHOST the user types to the network's address, sent just
// before a poll, is answered to the user; the poll's replies still tell
// the contacts' presence.
func TestContactPresenceUserISON(t *testing.T) {
	fx := bobOnline(t)

	raw := func(id, body string) { t.Helper(); fx.rawLines(t, id, body) }
	status := func(text string) { t.Helper(); fx.userStatus(t, text) }
	raw("r1", "ISON carol&#10;USERHOST carol")
	fx.f.expect(t, "ISON carol")
	fx.f.expect(t, "USERHOST carol")
	fx.pollNow(t)
	fx.f.expect(t, "ISON bob")
	fx.f.expect(t, "USERHOST bob")
	fx.f.send(t, ":srv 303 nick :", ":srv 302 nick :", ":srv 303 nick :bob", ":srv 302 nick :bob=+~b@h")
	status("ISON: (none)")
	status("USERHOST: (none)")
	// bob is still known available: the next round says nothing new,
	// and the user's next ISON is answered.
	fx.pollNow(t)
	fx.f.expect(t, "ISON bob")
	fx.f.expect(t, "USERHOST bob")
	fx.f.send(t, ":srv 303 nick :bob", ":srv 302 nick :bob=+~b@h")
	raw("r2", "ison carol")
	fx.f.expect(t, "ison carol")
	fx.f.send(t, ":srv 303 nick :carol")
	status("ISON: carol")
	// A bare ISON is answered with an error numeric, which is no reply of
	// the poll's to take.
	raw("r3", "ISON")
	fx.f.expect(t, "ISON")
	fx.f.send(t, ":srv 461 nick ISON :Syntax error")
	status("ISON Syntax error")
	fx.pollNow(t)
	fx.f.expect(t, "ISON bob")
	fx.f.send(t, ":srv 303 nick :")
	fx.h.Expect(t, "bob unavailable", contactPresence(bobJID, "unavailable", "", ""))
}

// A request unanswered for a whole poll period is not waited for: the
// next replies answer the requests sent after it.
func TestContactPresenceStaleRequest(t *testing.T) {
	fx := watchFixture(t, "", "CASEMAPPING=ascii", "bob")
	fx.f.expect(t, "ISON bob") // never answered
	const period = 3 * time.Second
	time.Sleep(period)
	fx.h.Run(func(context.Context) { fx.b.opts.PresencePoll = period })
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='localhost@irc.example' type='chat' id='r1'><body>ISON carol</body></message>")
	fx.f.expect(t, "ISON carol")
	fx.h.Run(func(context.Context) {
		fx.b.networkOf(testUser, "localhost").pollNow()
		fx.b.opts.PresencePoll = time.Hour
	})
	fx.f.expect(t, "ISON bob")
	fx.f.send(t, ":srv 303 nick :carol", ":srv 303 nick :bob")
	fx.h.Expect(t, "the user's reply", func(e *xmlel.Element) bool {
		return e.Local == "message" && e.ChildText("", "body") == "ISON: carol"
	})
	fx.h.Expect(t, "bob available", contactPresence(bobJID, "", "", ""))
}

// A QUIT, a NICK and a JOIN seen in a channel apply at once; the end of
// the connection sends the contacts shown available unavailable.
func TestContactPresenceFromChannelEvents(t *testing.T) {
	fx := watchFixture(t, "", "", "bob", "carol")
	fx.f.expect(t, "ISON ")
	fx.f.send(t, ":srv 303 nick :bob")
	fx.h.WaitSent(t, "bob available", contactPresence(bobJID, "", "", ""))
	fx.h.WaitSent(t, "carol unavailable", contactPresence(carolJID, "unavailable", "", ""))
	fx.h.Drain()
	fx.f.send(t, ":bob!u@h NICK carol")
	fx.h.Expect(t, "bob gone with his nick", contactPresence(bobJID, "unavailable", "", ""))
	fx.h.Expect(t, "carol there", contactPresence(carolJID, "", "", ""))
	fx.f.send(t, ":carol!u@h QUIT :bye")
	fx.h.Expect(t, "carol quit", contactPresence(carolJID, "unavailable", "", ""))
	fx.f.send(t, ":bob!u@h JOIN #c")
	fx.h.Expect(t, "bob joined", contactPresence(bobJID, "", "", ""))
	// The reply to a private message to an away user.
	fx.f.send(t, ":srv 301 nick bob :at lunch")
	fx.h.Expect(t, "bob away", contactPresence(bobJID, "", "away", "at lunch"))
	// In the room, the network stays through the loss of its connection.
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 353 nick = #c :nick bob", ":srv 366 nick #c :End")
	fx.h.Expect(t, "self-presence", selfPresence)
	fx.f.drop()
	fx.h.Expect(t, "bob unknown", contactPresence(bobJID, "unavailable", "", "The gateway is not connected to localhost."))
	fx.h.Run(func(context.Context) {
		if c := fx.b.networkOf(testUser, "localhost").watched("bob"); c.known || c.monitored {
			t.Errorf("bob's state kept past the connection: %+v", c)
		}
	})
}

// A server with MONITOR (here limited to one nick), away-notify and
// extended-monitor: the monitored nick's presence is pushed, the other
// is polled with ISON.
func TestContactPresenceMonitored(t *testing.T) {
	fx := watchFixture(t, "away-notify extended-monitor", "MONITOR=1", "bob", "carol")
	mon := strings.TrimPrefix(fx.f.expect(t, "MONITOR + "), "MONITOR + ")
	polled := strings.TrimPrefix(fx.f.expect(t, "ISON "), "ISON ")
	if !(mon == "bob" && polled == "carol") && !(mon == "carol" && polled == "bob") {
		t.Fatalf("monitored %q, polled %q", mon, polled)
	}
	monJID, polledJID := mon+"%localhost@irc.example", polled+"%localhost@irc.example"
	fx.f.send(t, ":srv 730 nick :"+mon+"!u@h", ":srv 303 nick :"+polled)
	fx.h.Expect(t, "the monitored nick available", contactPresence(monJID, "", "", ""))
	fx.h.Expect(t, "the polled nick available", contactPresence(polledJID, "", "", ""))
	fx.f.send(t, ":"+mon+"!u@h AWAY :brb")
	fx.h.Expect(t, "the monitored nick away", contactPresence(monJID, "", "away", "brb"))
	fx.f.send(t, ":"+mon+"!u@h AWAY")
	fx.h.Expect(t, "the monitored nick back", contactPresence(monJID, "", "", ""))
	// The poll asks only about the polled nick: the other's away state is
	// pushed.
	fx.pollNow(t)
	if l := fx.f.expect(t, "ISON "); l != "ISON "+polled {
		t.Fatalf("poll %q", l)
	}
	if l := fx.f.expect(t, "USERHOST "); l != "USERHOST "+polled {
		t.Fatalf("poll %q", l)
	}
	fx.f.send(t, ":srv 731 nick :"+mon)
	fx.h.Expect(t, "the monitored nick gone", contactPresence(monJID, "unavailable", "", ""))

	// Unregistering stops the monitoring.
	fx.h.Run(func(ctx context.Context) { fx.b.Unregistered(ctx, testUser) })
	fx.f.expect(t, "MONITOR - "+mon)
}

// A full MONITOR list: the nicks refused are polled instead.
func TestContactPresenceMonitorListFull(t *testing.T) {
	fx := watchFixture(t, "", "MONITOR", "bob")
	fx.f.expect(t, "MONITOR + bob")
	fx.f.send(t, ":srv 734 nick 100 bob :Monitor list is full.")
	fx.f.expect(t, "ISON bob")
	fx.f.send(t, ":srv 303 nick :bob")
	fx.h.Expect(t, "bob available", contactPresence(bobJID, "", "", ""))
}

// Nicks written to or from are watched as well, for a registered user; an
// unregistered user's are not.
func TestContactPresenceNewContacts(t *testing.T) {
	fx := watchFixture(t, "", "")
	fx.f.send(t, ":dave!u@h PRIVMSG nick :hello")
	fx.f.expect(t, "ISON dave")
	fx.handle(t, "<message xmlns='jabber:component:accept' type='chat' from='"+testUser+"/r' to='erin%localhost@irc.example'><body>hi</body></message>")
	fx.f.expect(t, "ISON erin")

	fx.h.Run(func(ctx context.Context) { fx.b.Unregistered(ctx, testUser) })
	fx.f.send(t, ":frank!u@h PRIVMSG nick :hello")
	fx.h.WaitMessage(t, "frank's message", func(e *xmlel.Element) bool {
		return e.ChildText("", "body") == "hello" && strings.HasPrefix(e.Attr("from"), "frank%")
	})
	fx.pollNow(t)
	fx.f.send(t, "PING :sync")
	fx.f.expect(t, "PONG sync")
	for _, l := range drainLines(fx.f) {
		if strings.HasPrefix(l, "ISON") {
			t.Fatalf("%q after unregistering", l)
		}
	}
}

// drainLines returns the lines the client sent that were not read yet.
func drainLines(f *fakeIRC) []string {
	var out []string
	for {
		select {
		case l := <-f.lines:
			out = append(out, l)
		default:
			return out
		}
	}
}

// contactsFailing is the store with contacts that cannot be read.
type contactsFailing struct{ ircStore }

func (contactsFailing) Contacts(context.Context, string, string) ([]store.Contact, error) {
	return nil, errors.New("the disk is on fire")
}

// Contacts that cannot be read are logged; the nicks written to or from
// are still watched.
func TestContactPresenceStoreFailure(t *testing.T) {
	fx := &fixture{b: New(Options{AllowPrivate: true, PresencePoll: time.Hour}), h: newFakeHost(t), f: newFakeIRC(t)}
	fx.b.db = contactsFailing{fx.h.St}
	ctx := startOn(t, fx.b, fx.h)
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts = []int{fx.f.port()}, nil
	if err := fx.b.saveNetConfig(ctx, testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
	if err := fx.h.St.PutRegistration(ctx, "irc.example", testUser, map[string]string{"nick": "nick"}, nil); err != nil {
		t.Fatal(err)
	}
	fx.join(t)
	fx.f.expect(t, "CAP LS 302")
	fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome", ":srv 422 nick :MOTD File is missing")
	fx.h.Logs.Wait(t, "cannot read the IRC contacts to watch")
	fx.f.send(t, ":dave!u@h PRIVMSG nick :hello")
	fx.f.expect(t, "ISON dave")
}

// The registration that cannot be read is logged, and nothing watched.
func TestContactPresenceRegistrationFailure(t *testing.T) {
	fx := watchFixture(t, "", "")
	fx.h.Run(func(ctx context.Context) {
		n := fx.b.networkOf(testUser, "localhost")
		n.watch.started = false
		if _, err := fx.h.St.DB().Exec(`ALTER TABLE registrations RENAME TO registrations_away`); err != nil {
			t.Fatal(err)
		}
		n.startWatch(ctx)
		if n.watch.enabled && len(n.watch.contacts) > 0 {
			t.Error("contacts watched without a registration")
		}
	})
	fx.h.Logs.Wait(t, "cannot read the registration of a user to watch IRC contacts")
}

// vcard runs Profile for the user and returns its answer.
func (fx *fixture) vcard(t *testing.T, local string) (p *bridges.Profile, err error) {
	t.Helper()
	done := make(chan struct{})
	fx.h.Run(func(ctx context.Context) {
		fx.b.Profile(ctx, &bridges.User{JID: testUser, Full: testUser + "/r"}, local, func(_ context.Context, pp *bridges.Profile, e error) {
			p, err = pp, e
			close(done)
		})
	})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	return p, err
}

// vcardAsync starts Profile and returns a channel for its answer.
func (fx *fixture) vcardAsync(local string) chan error {
	ch := make(chan error, 1)
	fx.h.Run(func(ctx context.Context) {
		fx.b.Profile(ctx, &bridges.User{JID: testUser, Full: testUser + "/r"}, local, func(_ context.Context, p *bridges.Profile, e error) {
			if e == nil && p == nil {
				e = errors.New("no profile")
			}
			ch <- e
		})
	})
	return ch
}

func wantErrCondition(t *testing.T, err error, cond string) {
	t.Helper()
	var se *stanza.Error
	if !errors.As(err, &se) || se.Condition != cond {
		t.Fatalf("error %v, want %s", err, cond)
	}
}

// The vCard of an IRC user: the realname from WHOIS (cached), a nick the
// network does not know, one that does not answer, a connection lost.
func TestWhoisProfile(t *testing.T) {
	fx := watchFixture(t, "", "")
	fx.b.whoisTimeout = 200 * time.Millisecond

	// Without WHOIS: channels and networks are Handle's.
	if p, err := fx.vcard(t, "#c%localhost"); p != nil || err != nil {
		t.Fatalf("a channel's profile %+v, %v", p, err)
	}
	// Not connected to the network: the nick only.
	if p, err := fx.vcard(t, "bob%elsewhere.example"); err != nil || p.Nick != "bob" || p.Name != "" {
		t.Fatalf("profile without a connection %+v, %v", p, err)
	}

	ch := fx.vcardAsync("bob%localhost")
	fx.f.expect(t, "WHOIS bob")
	ch2 := fx.vcardAsync("Bob%localhost") // joins the WHOIS under way
	fx.f.send(t, ":srv 311 nick bob ~b h * :Bob Builder", ":srv 312 nick bob srv :info", ":srv 318 nick bob :End of WHOIS list")
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	if err := <-ch2; err != nil {
		t.Fatal(err)
	}
	// Cached: no second WHOIS.
	p, err := fx.vcard(t, "bob%localhost")
	if err != nil || p.Name != "Bob Builder" || p.Nick != "bob" {
		t.Fatalf("cached profile %+v, %v", p, err)
	}

	ch = fx.vcardAsync("nobody%localhost")
	fx.f.expect(t, "WHOIS nobody")
	fx.f.send(t, ":srv 401 nick nobody :No such nick or channel name", ":srv 318 nick nobody :End of WHOIS list")
	wantErrCondition(t, <-ch, "item-not-found")

	// A server that ends the WHOIS without RPL_WHOISUSER.
	ch = fx.vcardAsync("ghost%localhost")
	fx.f.expect(t, "WHOIS ghost")
	fx.f.send(t, ":srv 318 nick ghost :End of WHOIS list")
	wantErrCondition(t, <-ch, "item-not-found")

	ch = fx.vcardAsync("slow%localhost")
	fx.f.expect(t, "WHOIS slow")
	wantErrCondition(t, <-ch, "remote-server-timeout")
	fx.h.Logs.Wait(t, "an irc server did not answer a WHOIS")

	fx.b.whoisTimeout = time.Hour
	ch = fx.vcardAsync("lost%localhost")
	fx.f.expect(t, "WHOIS lost")
	fx.f.drop()
	wantErrCondition(t, <-ch, "recipient-unavailable")
}

// A WHOIS that cannot be sent (the connection is closing) fails at once.
func TestWhoisUnsent(t *testing.T) {
	fx := watchFixture(t, "", "")
	ch := make(chan whoisResult, 1)
	fx.h.Run(func(ctx context.Context) {
		n := fx.b.networkOf(testUser, "localhost")
		n.c.close("")
		n.whoisNick("bob", func(_ context.Context, r whoisResult) { ch <- r })
	})
	select {
	case r := <-ch:
		if r.err == nil || r.err.Condition != "recipient-unavailable" {
			t.Fatalf("result %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
}

// A contact that went away and whose WHOIS fails is shown away without
// a message; one the WHOIS no longer finds, unavailable.
func TestAwayWhoisFailures(t *testing.T) {
	fx := watchFixture(t, "", "", "bob", "carol")
	fx.b.whoisTimeout = 200 * time.Millisecond
	fx.f.expect(t, "ISON ")
	fx.f.send(t, ":srv 303 nick :bob carol")
	fx.h.Expect(t, "bob available", contactPresence(bobJID, "", "", ""))
	fx.pollNow(t)
	fx.f.expect(t, "USERHOST ")
	fx.f.send(t, ":srv 303 nick :bob carol", ":srv 302 nick :bob=-u@h carol=-u@h")
	fx.f.expect(t, "WHOIS ")
	fx.f.expect(t, "WHOIS ")
	fx.f.send(t, ":srv 401 nick carol :No such nick")
	fx.h.Expect(t, "carol gone", contactPresence(carolJID, "unavailable", "", ""))
	fx.h.Expect(t, "bob away without a message", contactPresence(bobJID, "", "away", ""))
}

// A WHOIS for an away message cut off by the end of the connection
// leaves nothing behind: on the next connection the contact is shown as
// the server tells, not away.
func TestAwayCheckCutOff(t *testing.T) {
	fx := watchFixture(t, "", "", "bob")
	fx.f.expect(t, "ISON bob")
	fx.f.send(t, ":srv 303 nick :bob")
	fx.h.Expect(t, "bob available", contactPresence(bobJID, "", "", ""))
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 353 nick = #c :nick", ":srv 366 nick #c :End")
	fx.h.Expect(t, "self-presence", selfPresence)
	fx.pollNow(t)
	fx.f.send(t, ":srv 303 nick :bob", ":srv 302 nick :bob=-u@h")
	fx.f.expect(t, "WHOIS bob")
	fx.f.drop()
	fx.f.closed(t)
	fx.h.Expect(t, "bob unknown", contactPresence(bobJID, "unavailable", "", "The gateway is not connected to localhost."))
	fx.f.expect(t, "CAP LS 302") // reconnected at once
	fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome", ":srv 376 nick :End of MOTD")
	fx.f.expect(t, "ISON bob")
	fx.f.send(t, ":srv 303 nick :bob")
	fx.h.Expect(t, "bob available again, not away", contactPresence(bobJID, "", "", ""))
}

// A presence request that cannot be sent (the connection is closing) is
// logged.
func TestPresenceRequestUnsent(t *testing.T) {
	fx := watchFixture(t, "", "")
	fx.h.Run(func(ctx context.Context) {
		n := fx.b.networkOf(testUser, "localhost")
		n.c.close("")
		n.isonNow([]*contact{{nick: "bob"}})
	})
	fx.h.Logs.Wait(t, "cannot send a presence request to an irc server")
}

// bobOnline is a watchFixture watching bob, shown available.
func bobOnline(t *testing.T) *fixture {
	t.Helper()
	fx := watchFixture(t, "", "CASEMAPPING=ascii", "bob")
	fx.f.expect(t, "ISON bob")
	fx.f.send(t, ":srv 303 nick :bob")
	fx.h.Expect(t, "bob available", contactPresence(bobJID, "", "", ""))
	return fx
}

// rawLines sends body (XML text) from the user to the network's address:
// raw IRC lines.
func (fx *fixture) rawLines(t *testing.T, id, body string) {
	t.Helper()
	fx.handle(t, "<message xmlns='jabber:component:accept' from='"+testUser+"/r' to='localhost@irc.example' type='chat' id='"+id+"'><body>"+body+"</body></message>")
}

// userStatus waits for the message from the network's address telling
// the user text, failing on any presence of bob before it.
func (fx *fixture) userStatus(t *testing.T, text string) {
	t.Helper()
	for {
		st := fx.h.Next(t)
		if st.Local == "presence" && st.Attr("from") == bobJID {
			t.Fatalf("bob's presence changed before the user was told %q: %s", text, st)
		}
		if st.Local == "message" && st.Attr("from") == "localhost@irc.example" && st.Attr("to") == testUser {
			if got := st.ChildText("", "body"); got != text {
				t.Fatalf("the user was told %q, want %q", got, text)
			}
			return
		}
	}
}

// A poll's ISON and USERHOST that the connection refuses (its queue is
// full) await no reply: the user's next ISON and USERHOST are answered
// to the user, and the next poll's replies tell the contacts' presence.
func TestPresenceRequestRefused(t *testing.T) {
	fx := bobOnline(t)
	var c *conn
	fx.h.Run(func(context.Context) {
		n := fx.b.networkOf(testUser, "localhost")
		c = n.c
		// No token for the writer: the queue stays as filled. Empty
		// lines are written as nothing.
		n.c.limit.SetLimit(0)
		n.c.limit.SetBurst(0)
		for n.c.room() > 0 {
			if err := n.c.send(""); err != nil {
				t.Error(err)
				return
			}
		}
		n.pollNow()
		n.c.limit.SetLimit(rate.Inf)
		n.c.mu.Lock()
		n.c.startWriter() // wakes the writer
		n.c.mu.Unlock()
	})
	fx.h.Logs.Wait(t, "cannot send a presence request to an irc server")
	waitConn(t, c, "the writer did not drain the queue", func() bool { return len(c.queue) == 0 })
	fx.rawLines(t, "r1", "ISON carol&#10;USERHOST carol")
	fx.f.expect(t, "ISON carol")
	fx.f.expect(t, "USERHOST carol")
	fx.f.send(t, ":srv 303 nick :carol", ":srv 302 nick :carol=+~c@h")
	fx.userStatus(t, "ISON: carol")
	fx.userStatus(t, "USERHOST: carol=+~c@h")
	fx.pollNow(t)
	fx.f.expect(t, "ISON bob")
	fx.f.expect(t, "USERHOST bob")
	fx.f.send(t, ":srv 303 nick :", ":srv 302 nick :")
	fx.h.Expect(t, "bob unavailable", contactPresence(bobJID, "unavailable", "", ""))
}

// An ISON or USERHOST the user types with no nick ("ISON :") is answered
// with an error numeric, not a 303 or 302: the next poll's replies are
// the poll's.
func TestContactPresenceUserRequestNoNick(t *testing.T) {
	fx := bobOnline(t)
	fx.rawLines(t, "r1", "ISON :&#10;USERHOST : ")
	fx.f.expect(t, "ISON :")
	fx.f.expect(t, "USERHOST : ")
	fx.f.send(t, ":srv 461 nick ISON :Syntax error", ":srv 461 nick USERHOST :Syntax error")
	fx.userStatus(t, "ISON Syntax error")
	fx.userStatus(t, "USERHOST Syntax error")
	fx.pollNow(t)
	fx.f.expect(t, "ISON bob")
	fx.f.expect(t, "USERHOST bob")
	fx.f.send(t, ":srv 303 nick :bob", ":srv 302 nick :bob=-~b@h")
	fx.f.expect(t, "WHOIS bob")
	fx.f.send(t, ":srv 311 nick bob ~b h * :Bob", ":srv 301 nick bob :lunch", ":srv 318 nick bob :End of WHOIS list")
	fx.h.Expect(t, "bob away", contactPresence(bobJID, "", "away", "lunch"))
}
