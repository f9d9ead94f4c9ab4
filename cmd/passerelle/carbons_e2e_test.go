package main

// End-to-end tests of the mails a user sends from her own mail client,
// shown in her chats as XEP-0280 sent carbons through the XEP-0356 message
// permission: Prosody with mod_privilege configured from
// deploy/prosody.cfg.lua and mod_carbons, a real c2s client with carbons
// enabled, real Dovecot with a Sent mailbox known by its special use.

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

const (
	nsCarbons = "urn:xmpp:carbons:2"
	// dovecotSent is the harness's Dovecot's Sent mailbox.
	dovecotSent = "Sent Items"
)

// sentCarbonOf returns the message inside e when e is a sent carbon from
// the bare JID user (XEP-0280 §6: only those are carbons), else nil.
func sentCarbonOf(e *xmlel.Element, user string) *xmlel.Element {
	if !harness.IsMessage(e) || e.Attr("from") != user {
		return nil
	}
	s := e.Child(nsCarbons, "sent")
	if s == nil || s.Child(nsForward, "forwarded") == nil {
		return nil
	}
	return s.Child(nsForward, "forwarded").Child("jabber:client", "message")
}

// sentCarbon matches the sent carbon of user's message to `to` whose body
// has substr.
func sentCarbon(user, to, substr string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		m := sentCarbonOf(e, user)
		return m != nil && m.Attr("from") == user && m.Attr("to") == to && strings.Contains(m.ChildText("", "body"), substr)
	}
}

// anySentCarbon matches a sent carbon whose body has substr, whatever its
// addresses, nested carbons included.
func anySentCarbon(user, substr string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		m := sentCarbonOf(e, user)
		return m != nil && strings.Contains(m.String(), substr)
	}
}

// carbonsEnv is mailEnv with users' mailboxes on loopback (Dovecot).
func carbonsEnv(t *testing.T, srv harness.Server) map[string]string {
	env := mailEnv(t, srv)
	env["PASSERELLE_MAILBOX_ALLOW_PRIVATE"] = "true"
	return env
}

// mailboxUser dials carol, registers her with the mail bridge and her
// Dovecot mailbox, and returns her client with carbons enabled.
func mailboxUser(t *testing.T, e *gwEnv, dove *harness.Dovecot) *harness.Client {
	t.Helper()
	carol := e.dial(t, "carol@localhost")
	wantResult(t, carol.IQ(t, "set", "", "<enable xmlns='urn:xmpp:carbons:2'/>"), "enable carbons")
	wantResult(t, register(carol, t, mailDomain, "address", "carol", "imap_server", dove.Addr, "imap_username", "carol",
		"imap_password", "imap-pw", "email", "carol@example.net"), "register with a mailbox")
	acceptGateway(t, carol, mailDomain)
	return carol
}

// sentByCarol is a mail carol sent from her mail client.
func sentByCarol(id, to, text string) string {
	return fmt.Sprintf("From: Carol <carol@example.net>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.net>\r\nDate: %s\r\n\r\n%s\r\n",
		to, id, id, time.Now().Format(time.RFC1123Z), text)
}

// TestSentCarbonsProsody: a mail carol's mail client files in her Sent
// mailbox reaches her XMPP client as her own message in her chat with
// its recipient, once; a restart of the gateway does not show it again,
// and a mail filed while the gateway was stopped shows after it starts.
func TestSentCarbonsProsody(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, Deploy: true, Carbons: true})
	env := carbonsEnv(t, srv)
	e := startGateway(t, srv, env)
	e.gw.WaitOutput(t, wait, grantedLine+mailDomain+" server=localhost namespace=urn:xmpp:privilege:2 roster=both message=outgoing presence=roster")
	dove := harness.StartDovecot(t, map[string]string{"carol": "imap-pw"})
	carol := mailboxUser(t, e, dove)
	dan := "dan%example.com@" + mailDomain

	appendIMAPTo(t, dove.Addr, "carol", "imap-pw", dovecotSent, sentByCarol("sent-1", "Dan <dan@example.com>", "Written in my mail client"))
	// A mail arriving in INBOX ends the watcher's IDLE at once; its round
	// looks at Sent too (else the next renewal would, within a minute).
	appendIMAP(t, dove.Addr, "carol", "imap-pw", "From: Dan <dan@example.com>\r\nSubject: ping\r\nMessage-ID: <in-1@example.com>\r\n\r\nAnything new?\r\n")
	carol.Expect(t, wait, "the inbound mail", mailFrom(dan, "Anything new?"))
	c := carol.Expect(t, wait, "the carbon of the sent mail", sentCarbon("carol@localhost", dan, "Written in my mail client"))
	m := sentCarbonOf(c, "carol@localhost")
	if body := m.ChildText("", "body"); body != "*Subject: sent-1*\n\nWritten in my mail client" || m.Attr("type") != "chat" || m.Attr("id") == "" {
		t.Fatalf("carbon's message %s", m)
	}
	// mod_carbons does not carbon-copy the carbon itself to the client.
	carol.ExpectNone(t, time.Second, "a second carbon of the sent mail", anySentCarbon("carol@localhost", "Written in my mail client"))
	// An answer in the carbon's thread answers the sent mail.
	if m.ChildText("", "thread") == "" {
		t.Fatalf("carbon without a thread: %s", m)
	}

	t.Run("restart", func(t *testing.T) {
		e.gw.Signal(syscall.SIGTERM)
		e.gw.Wait(t, wait)
		appendIMAPTo(t, dove.Addr, "carol", "imap-pw", dovecotSent, sentByCarol("sent-2", "dan@example.com", "Written while the gateway was stopped"))
		e.gw = harness.StartGateway(t, e.bin, env)
		carol.Expect(t, wait, "the carbon of the mail sent while the gateway was stopped", sentCarbon("carol@localhost", dan, "Written while the gateway was stopped"))
		// Mails are shown in UID order: had the first come again, it
		// would be here already.
		carol.ExpectNone(t, time.Second, "the first mail again", anySentCarbon("carol@localhost", "Written in my mail client"))
		if n := strings.Count(e.gw.Output(), `msg="showed a mail the user sent from her mail client"`); n != 1 {
			t.Fatalf("the restarted gateway showed %d sent mails, want 1", n)
		}
	})
}

// TestSentCarbonsWithoutPermission: a server that advertises its
// privileges without the message permission gets no carbon (and no
// message from the contact in its place); the gateway says why, once.
func TestSentCarbonsWithoutPermission(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, Deploy: true, DeployNoMessage: true, Carbons: true})
	e := startGateway(t, srv, carbonsEnv(t, srv))
	dove := harness.StartDovecot(t, map[string]string{"carol": "imap-pw"})
	carol := mailboxUser(t, e, dove)
	dan := "dan%example.com@" + mailDomain
	appendIMAPTo(t, dove.Addr, "carol", "imap-pw", dovecotSent, sentByCarol("sent-np", "dan@example.com", "Not shown without the permission"))
	appendIMAP(t, dove.Addr, "carol", "imap-pw", "From: Dan <dan@example.com>\r\nSubject: ping\r\nMessage-ID: <in-np@example.com>\r\n\r\nStill delivered\r\n")
	carol.Expect(t, wait, "the inbound mail", mailFrom(dan, "Still delivered"))
	const line = `msg="mails users send from their mail client are not shown in their chats: the XMPP server does not grant the message permission (XEP-0356)" component=` + mailDomain + ` server=localhost`
	e.gw.WaitOutput(t, wait, line)
	carol.ExpectNone(t, time.Second, "a carbon", anySentCarbon("carol@localhost", "Not shown"))
	carol.ExpectNone(t, 0, "the sent mail in another form", func(el *xmlel.Element) bool {
		return harness.IsMessage(el) && strings.Contains(el.String(), "Not shown without the permission")
	})
	appendIMAPTo(t, dove.Addr, "carol", "imap-pw", dovecotSent, sentByCarol("sent-np2", "dan@example.com", "Not shown either"))
	appendIMAP(t, dove.Addr, "carol", "imap-pw", "From: Dan <dan@example.com>\r\nSubject: ping\r\nMessage-ID: <in-np2@example.com>\r\n\r\nDelivered again\r\n")
	carol.Expect(t, wait, "the second inbound mail", mailFrom(dan, "Delivered again"))
	carol.ExpectNone(t, time.Second, "a carbon", anySentCarbon("carol@localhost", "Not shown either"))
	if n := strings.Count(e.gw.Output(), line); n != 1 {
		t.Fatalf("logged %d times, want once", n)
	}
}
