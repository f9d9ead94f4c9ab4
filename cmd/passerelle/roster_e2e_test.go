package main

// End-to-end tests of roster integration (XEP-0356): Prosody with
// mod_privilege configured from deploy/prosody.cfg.lua, the built gateway
// with its three bridges, a real c2s client reading its roster, real SMTP,
// the SMS webhook and ngircd.

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

const grantedLine = `msg="the XMPP server granted privileges (XEP-0356)" component=`

// rosterItem returns jid's item in c's roster, or nil.
func rosterItem(t *testing.T, c *harness.Client, jid string) *xmlel.Element {
	t.Helper()
	r := c.IQ(t, "get", "", "<query xmlns='jabber:iq:roster'/>")
	wantResult(t, r, "roster get")
	for _, it := range r.Child("jabber:iq:roster", "query").ChildrenNamed("", "item") {
		if it.Attr("jid") == jid {
			return it
		}
	}
	return nil
}

// rosterPush matches the server's roster push of jid to c (what a client
// sees when its roster changes), with subscription sub.
func rosterPush(jid, sub string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		q := e.Child("jabber:iq:roster", "query")
		if !harness.IsIQ(e) || e.Attr("type") != "set" || q == nil {
			return false
		}
		for _, it := range q.ChildrenNamed("", "item") {
			if it.Attr("jid") == jid && it.Attr("subscription") == sub {
				return true
			}
		}
		return false
	}
}

// wantContact checks jid's item in c's roster: name, group and
// subscription both.
func wantContact(t *testing.T, c *harness.Client, jid, name, group string) {
	t.Helper()
	it := rosterItem(t, c, jid)
	if it == nil {
		t.Fatalf("%s is not in the roster", jid)
	}
	if it.Attr("name") != name || it.ChildText("", "group") != group || it.Attr("subscription") != "both" {
		t.Fatalf("roster item %s, want name %q, group %q, subscription both", it, name, group)
	}
}

// vCard fetches jid's vcard-temp (XEP-0054).
func vCard(t *testing.T, c *harness.Client, jid string) *xmlel.Element {
	t.Helper()
	r := c.IQ(t, "get", jid, "<vCard xmlns='vcard-temp'/>")
	wantResult(t, r, "the vCard of "+jid)
	v := r.Child("vcard-temp", "vCard")
	if v == nil {
		t.Fatalf("no vCard: %s", r)
	}
	return v
}

// startAllBridges starts the gateway with its three bridges against srv:
// mail on an SMTP listener, SMS with a fake provider, IRC allowed on
// loopback.
func startAllBridges(t *testing.T, srv harness.Server) (e *smsEnv, smtpAddr string) {
	smtpAddr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	e = startSMS(t, srv, func(env map[string]string) {
		env["PASSERELLE_EMAIL_DOMAIN"] = mailDomain
		env["PASSERELLE_IRC_DOMAIN"] = ircDomain
		env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
		env["PASSERELLE_SMTP_LISTEN"] = smtpAddr
	})
	return e, smtpAddr
}

func TestRosterProsody(t *testing.T) {
	ngircd := harness.StartNgircd(t)
	_, ircPort, _ := net.SplitHostPort(ngircd.Addr)
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, Deploy: true})
	e, smtpAddr := startAllBridges(t, srv)
	for _, d := range allDomains {
		e.gw.WaitOutput(t, wait, grantedLine+d+" server=localhost namespace=urn:xmpp:privilege:2 roster=both message=outgoing presence=roster")
	}
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register with mail")
	acceptGateway(t, alice, mailDomain)
	wantResult(t, register(alice, t, smsDomain, "number", aliceNumber), "register with sms")
	acceptGateway(t, alice, smsDomain)
	wantResult(t, register(alice, t, ircDomain, "nick", "alice"), "register with irc")
	acceptGateway(t, alice, ircDomain)

	bob := "bob%example.com@" + mailDomain
	t.Run("mail with a display name", func(t *testing.T) {
		err := sendMail(smtpAddr, "bob@example.com", []string{"alice@" + mailDomain}, "From: Bob Example <bob@example.com>\nSubject: Hi\n\nHello Alice\n")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		alice.Expect(t, wait, "the mail", mailFrom(bob, "Hello Alice"))
		alice.Expect(t, wait, "the roster push of bob", rosterPush(bob, "both"))
		wantContact(t, alice, bob, "Bob Example", "Email")
		v := vCard(t, alice, bob)
		if v.ChildText("", "FN") != "Bob Example" || v.Child("", "EMAIL").ChildText("", "USERID") != "bob@example.com" {
			t.Fatalf("bob's vCard: %s", v)
		}
	})

	t.Run("text from a new number", func(t *testing.T) {
		if code, ans := e.inbound(t, "SMroster1", "+15557654321", aliceNumber, "Hi from a phone"); code != 200 {
			t.Fatalf("webhook: %d %s", code, ans)
		}
		jid := "+15557654321@" + smsDomain
		alice.Expect(t, wait, "the text", harness.MessageFrom(jid, "Hi from a phone"))
		alice.Expect(t, wait, "the roster push of the number", rosterPush(jid, "both"))
		wantContact(t, alice, jid, "+15557654321", "SMS")
		if v := vCard(t, alice, jid); v.ChildText("", "FN") != "+15557654321" || v.Child("", "TEL").ChildText("", "NUMBER") != "+15557654321" {
			t.Fatalf("the number's vCard: %s", v)
		}
	})

	t.Run("text to a new number", func(t *testing.T) {
		jid := "+15559998888@" + smsDomain
		sendText(t, alice, jid, "r1", "Hello new number", false)
		e.p.WaitRequest(t, wait, "the text", okText("Hello new number"))
		alice.Expect(t, wait, "the roster push of the number written to", rosterPush(jid, "both"))
		wantContact(t, alice, jid, "+15559998888", "SMS")
	})

	t.Run("irc private message", func(t *testing.T) {
		r := configureNetwork(t, alice, "localhost", "ports", ircPort, "tls_ports", "")
		wantResult(t, r, "configure the network")
		room := "#roster%localhost@" + ircDomain
		alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX())
		alice.Expect(t, wait, "self-presence in the room", occupant(room+"/alice", "", "110"))
		dave := dialIRC(t, ngircd.Addr, "dave")
		dave.send(t, "PRIVMSG alice :psst, alice")
		jid := "dave%localhost@" + ircDomain
		alice.Expect(t, wait, "the private message", harness.MessageFrom(jid, "psst, alice"))
		alice.Expect(t, wait, "the roster push of dave", rosterPush(jid, "both"))
		wantContact(t, alice, jid, "dave", "IRC")
		// FN is the realname (WHOIS), which dialIRC sets.
		if v := vCard(t, alice, jid); v.ChildText("", "FN") != "raw peer" || v.ChildText("", "NICKNAME") != "dave" {
			t.Fatalf("dave's vCard: %s", v)
		}
	})

	t.Run("a renamed contact keeps its name", func(t *testing.T) {
		wantResult(t, alice.IQ(t, "set", "", "<query xmlns='jabber:iq:roster'><item jid='"+harness.Esc(bob)+"' name='Bobby'><group>Email</group></item></query>"), "rename bob")
		err := sendMail(smtpAddr, "bob@example.com", []string{"alice@" + mailDomain}, "From: Robert Example <bob@example.com>\nSubject: Again\n\nHello again\n")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		alice.Expect(t, wait, "the second mail", mailFrom(bob, "Hello again"))
		e.gw.WaitOutput(t, wait, `msg="the user renamed a contact: the name stays" component=`+mailDomain)
		if it := rosterItem(t, alice, bob); it == nil || it.Attr("name") != "Bobby" {
			t.Fatalf("bob's item after the user renamed it: %v", it)
		}
	})

	t.Run("unregister removes the items the gateway added, only those", func(t *testing.T) {
		carol := "carol%example.org@" + mailDomain
		wantResult(t, alice.IQ(t, "set", "", "<query xmlns='jabber:iq:roster'><item jid='"+harness.Esc(carol)+"' name='Carol (mine)'/></query>"), "alice adds carol herself")
		err := sendMail(smtpAddr, "carol@example.org", []string{"alice@" + mailDomain}, "From: Carol <carol@example.org>\nSubject: Hey\n\nFrom Carol\n")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		alice.Expect(t, wait, "carol's mail", mailFrom(carol, "From Carol"))
		e.gw.WaitOutput(t, wait, `msg="the contact was in the roster already: it stays the user's" component=`+mailDomain)
		wantResult(t, alice.IQ(t, "set", mailDomain, "<query xmlns='jabber:iq:register'><remove/></query>"), "unregister from mail")
		alice.Expect(t, wait, "the removal of bob", rosterPush(bob, "remove"))
		if it := rosterItem(t, alice, bob); it != nil {
			t.Fatalf("bob is still in the roster: %s", it)
		}
		if it := rosterItem(t, alice, carol); it == nil || it.Attr("name") != "Carol (mine)" {
			t.Fatalf("carol's own item after unregistering: %v", it)
		}
		if rosterItem(t, alice, "+15557654321@"+smsDomain) == nil || rosterItem(t, alice, "dave%localhost@"+ircDomain) == nil {
			t.Fatal("unregistering from mail removed another bridge's contacts")
		}
	})
}

// TestRosterEjabberd: ejabberd 23.01 configured from deploy/ejabberd.yml
// advertises the privileges (urn:xmpp:privilege:1) but fails every
// privileged roster set (its mod_roster looks up its options for the
// component's domain): the gateway then asks for a subscription with the
// contact's name, and delivers as always.
func TestRosterEjabberd(t *testing.T) {
	srv := harness.StartEjabberd(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, Deploy: true})
	e, smtpAddr := startAllBridges(t, srv)
	for _, d := range allDomains {
		e.gw.WaitOutput(t, wait, grantedLine+d+" server=localhost namespace=urn:xmpp:privilege:1 roster=both message=outgoing presence=roster")
	}
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register with mail")
	acceptGateway(t, alice, mailDomain)
	bob := "bob%example.com@" + mailDomain
	err := sendMail(smtpAddr, "bob@example.com", []string{"alice@" + mailDomain}, "From: Bob Example <bob@example.com>\nSubject: Hi\n\nHello Alice\n")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	alice.Expect(t, wait, "the mail", mailFrom(bob, "Hello Alice"))
	p := alice.Expect(t, wait, "bob's subscription request", presenceFrom(bob, "subscribe"))
	if n := p.ChildText("http://jabber.org/protocol/nick", "nick"); n != "Bob Example" {
		t.Fatalf("subscription request %s, want the nick Bob Example", p)
	}
	e.gw.WaitOutput(t, wait, `msg="the XMPP server refused a roster request despite its advertisement; new contacts ask for a subscription instead" component=`+mailDomain)
	// ejabberd advertises again to every component when one connects:
	// each grant is logged once.
	for _, d := range allDomains {
		if n := strings.Count(e.gw.Output(), grantedLine+d+" "); n != 1 {
			t.Errorf("%s: the grant logged %d times, want once", d, n)
		}
	}
}

// TestRosterWithoutPrivilege: a server that grants nothing still delivers,
// and the first text of a number asks for a subscription with its name.
func TestRosterWithoutPrivilege(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{smsDomain}})
	e := startSMS(t, srv)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, smsDomain, "number", aliceNumber), "register with sms")
	acceptGateway(t, alice, smsDomain)
	jid := "+15557654321@" + smsDomain
	if code, ans := e.inbound(t, "SMnopriv1", "+15557654321", aliceNumber, "first text"); code != 200 {
		t.Fatalf("webhook: %d %s", code, ans)
	}
	alice.Expect(t, wait, "the text", harness.MessageFrom(jid, "first text"))
	p := alice.Expect(t, wait, "the subscription request", presenceFrom(jid, "subscribe"))
	if n := p.ChildText("http://jabber.org/protocol/nick", "nick"); n != "+15557654321" {
		t.Fatalf("subscription request %s, want the nick +15557654321", p)
	}
	if code, ans := e.inbound(t, "SMnopriv2", "+15557654321", aliceNumber, "second text"); code != 200 {
		t.Fatalf("webhook: %d %s", code, ans)
	}
	alice.Expect(t, wait, "the second text", harness.MessageFrom(jid, "second text"))
	e.gw.WaitOutput(t, wait, `msg="inbound text" component=`+smsDomain)
	if strings.Count(e.gw.Output(), `msg="asked the user to subscribe to a contact"`) != 1 {
		t.Fatalf("want one subscription request logged:\n%s", e.gw.Output())
	}
	if strings.Contains(e.gw.Output(), "granted privileges") {
		t.Fatal("privileges logged from a server that granted none")
	}
}
