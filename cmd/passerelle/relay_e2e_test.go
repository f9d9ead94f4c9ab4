package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"passerelle/bridges/sms/smstest"
	"passerelle/cmd/internal/harness"
	"passerelle/store/pgtest"
)

// TestRelayedRosterAnswers: three instances sharing one PostgreSQL
// database behind ejabberd 23.01 (deploy/ejabberd-instances.yml). A mail
// into each instance makes that instance ask alice's server for her
// roster (a privileged roster get, then a set, which ejabberd 23.01
// refuses). ejabberd routes each answer by its sender's bare JID to the
// one instance holding that JID's slot: the two others' answers reach
// it, and it passes them on to them through the database. Each instance
// thus gets its answers, and each new contact asks alice for a
// subscription with its name (the fallback from the refused set); none
// waits for an answer that does not come.
func TestRelayedRosterAnswers(t *testing.T) {
	if testCluster != nil {
		t.Skip("runs on its own PostgreSQL cluster in every pass: the pass with PASSERELLE_TEST_DB=postgres would repeat it")
	}
	dbURL := pgtest.New(t).DB(t)
	srv := harness.StartEjabberd(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, DeployInstances: true})
	provider := smstest.Start(t, smsSID, smsToken)
	sink := startSink(t)
	bin := harness.BuildBinary(t)
	common := map[string]string{
		"PASSERELLE_XMPP_ADDR":       srv.ComponentAddr(),
		"PASSERELLE_XMPP_SECRET":     srv.Secret(),
		"PASSERELLE_DB":              dbURL,
		"PASSERELLE_IRC_DOMAIN":      ircDomain,
		"PASSERELLE_EMAIL_DOMAIN":    mailDomain,
		"PASSERELLE_SMTP_RELAY":      "smtp://" + sink.addr,
		"PASSERELLE_SMS_DOMAIN":      smsDomain,
		"PASSERELLE_SMS_NUMBERS":     "+15550001100",
		"PASSERELLE_SMS_API_URL":     provider.URL(),
		"PASSERELLE_SMS_ACCOUNT_SID": smsSID,
		"PASSERELLE_SMS_AUTH_TOKEN":  smsToken,
		"PASSERELLE_SMS_WEBHOOK_URL": smsPublicURL,
		"PASSERELLE_STORE_KEY":       "test-store-key",
		"PASSERELLE_LOG_LEVEL":       "info",
		"PASSERELLE_DNS_RESOLVER":    harness.StartDNS(t).Addr(),
	}
	insts := make([]*instance, 3)
	for i := range insts {
		in := newInstance(t, fmt.Sprintf("gw%d", i), common)
		in.start(t, bin)
		insts[i] = in
	}
	for _, in := range insts {
		in.gw.WaitOutput(t, wait, `msg="listening for the answers other instances pass on"`)
		in.gw.WaitOutput(t, wait, grantedLine+mailDomain+" server=localhost")
	}

	alice := harness.Dial(t, srv.C2SAddr(), "alice@localhost", srv.AddUser(t, "alice@localhost"), "test")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register with mail")
	acceptGateway(t, alice, mailDomain)
	for i, in := range insts {
		bob := fmt.Sprintf("bob%d%%example.com@%s", i, mailDomain)
		body := fmt.Sprintf("Hello from %s", in.name)
		if err := sendMail(in.smtp, fmt.Sprintf("bob%d@example.com", i), []string{"alice@" + mailDomain},
			fmt.Sprintf("From: Bob %d <bob%d@example.com>\nSubject: Hi\n\n%s\n", i, i, body)); err != nil {
			t.Fatalf("mail into %s: %v", in.name, err)
		}
		alice.Expect(t, wait, "the mail into "+in.name, mailFrom(bob, body))
		p := alice.Expect(t, wait, "the subscription request of the contact of the mail into "+in.name, presenceFrom(bob, "subscribe"))
		if n := p.ChildText("http://jabber.org/protocol/nick", "nick"); n != fmt.Sprintf("Bob %d", i) {
			t.Fatalf("subscription request %s, want the nick Bob %d", p, i)
		}
	}
	re := regexp.MustCompile(`(?m)^passerelle_relayed_total\{domain="` + regexp.QuoteMeta(mailDomain) + `"\} (\d+)$`)
	relayed := make([]int, len(insts))
	total := 0
	for i, in := range insts {
		m := re.FindStringSubmatch(in.metrics())
		if m == nil {
			t.Fatalf("%s: no passerelle_relayed_total for %s in /metrics", in.name, mailDomain)
		}
		relayed[i], _ = strconv.Atoi(m[1])
		total += relayed[i]
		if out := in.gw.Output(); strings.Contains(out, "cannot put a contact in the user's roster") || strings.Contains(out, "cannot pass an answer on") {
			t.Errorf("%s:\n%s", in.name, out)
		}
	}
	t.Logf("stanzas passed on (answers, privilege advertisements) by gw0, gw1, gw2: %v", relayed)
	// One instance holds the slot the answers go to; each of the two
	// others had its get's answer (and its set's refusal) passed on.
	if total < 2 {
		t.Fatalf("%d answers passed on, want 2 or more", total)
	}
}
