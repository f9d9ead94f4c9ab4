package main

import (
	"testing"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// TestEmailSingleLabelDomain: "a%b%c@mail…" would be "a%b@c", and a
// single-label domain cannot receive mail (RFC 5321 §2.3.5): the message
// and the gateway prompt get jid-malformed, and nothing reaches the relay.
func TestEmailSingleLabelDomain(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	sink := startSink(t)
	env, _ := mailOnlyEnv(t, srv)
	env["PASSERELLE_SMTP_RELAY"] = "smtp://" + sink.addr
	e := startGateway(t, srv, env)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register")
	acceptGateway(t, alice, mailDomain)

	for i, to := range []string{"a%b%c@" + mailDomain, "bob%localhost@" + mailDomain} {
		id := []string{"m1", "m2"}[i]
		alice.Send(t, "<message to='%s' id='%s' type='chat'><body>to a single label</body></message>", harness.Esc(to), id)
		m := alice.Expect(t, wait, "the error for "+to, func(el *xmlel.Element) bool {
			return harness.IsMessage(el) && el.Attr("id") == id && el.Attr("type") == "error"
		})
		if c := errCondition(m); c != "jid-malformed" {
			t.Fatalf("writing to %s: %s, want jid-malformed", to, m)
		}
	}
	r := alice.IQ(t, "set", mailDomain, "<query xmlns='jabber:iq:gateway'><prompt>bob@localhost</prompt></query>")
	wantError(t, r, "jid-malformed", "the prompt with a single-label domain")
	r = alice.IQ(t, "get", "a%b%c@"+mailDomain, "<vCard xmlns='vcard-temp'/>")
	wantError(t, r, "jid-malformed", "the vCard of a%b%c")

	// The relay works: a valid address with a '%' in its local part goes.
	alice.Send(t, "<message to='%s' id='m3' type='chat'><body>to a real domain</body></message>", harness.Esc("a%b%example.com@"+mailDomain))
	sink.waitMail(t, wait, "a%b@example.com", "to a real domain")
	if n := sink.count("a%b@c", ""); n != 0 {
		t.Fatalf("%d mails reached the relay for a%%b@c", n)
	}
}
