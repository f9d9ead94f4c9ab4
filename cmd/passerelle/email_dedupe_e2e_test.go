package main

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"passerelle/cmd/internal/harness"
	"passerelle/store"
)

// TestEmailSameMailTwice: a mail the sender gives again with the same
// Message-ID (it got no answer: the gateway was killed after committing
// it) reaches alice once, over real SMTP and a real Prosody, across the
// restart; a mail of its own Message-ID still arrives.
func TestEmailSameMailTwice(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	env, smtpAddr := mailOnlyEnv(t, srv)
	env["PASSERELLE_LOG_LEVEL"] = "info"
	e := startGateway(t, srv, env)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")
	rcpt := []string{"alice@" + mailDomain}
	bob := "bob%example.com@" + mailDomain
	raw := "From: bob@example.com\nMessage-ID: <twice-1@example.com>\nSubject: twice\n\nGiven twice, read once\n"

	if err := sendMail(smtpAddr, "bob@example.com", rcpt, raw); err != nil {
		t.Fatalf("send: %v", err)
	}
	alice.Expect(t, wait, "the mail", mailFrom(bob, "Given twice, read once"))
	// Killed once its outbox is empty: a stanza sent but not yet removed
	// would be sent again after the restart (the outbox's own
	// at-least-once, not what is tested here).
	st, err := store.Open(env["PASSERELLE_DB"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !waitUntil(wait, func() bool { n, err := st.CountStanzas(context.Background(), mailDomain); return err == nil && n == 0 }) {
		t.Fatal("the outbox was not emptied")
	}
	e.gw.Signal(syscall.SIGKILL)
	e.gw.Wait(t, wait)
	e.gw = harness.StartGateway(t, e.bin, env)
	e.gw.WaitOutput(t, wait, `msg="listening for SMTP"`)
	if err := sendMail(smtpAddr, "bob@example.com", rcpt, raw); err != nil {
		t.Fatalf("the mail given again was refused: %v", err)
	}
	// The outbox keeps its order: once the next mail is in, a copy of the
	// first would be too.
	if err := sendMail(smtpAddr, "bob@example.com", rcpt, "From: bob@example.com\nMessage-ID: <next@example.com>\nSubject: next\n\nThe next one\n"); err != nil {
		t.Fatalf("send: %v", err)
	}
	alice.Expect(t, wait, "the next mail", mailFrom(bob, "The next one"))
	if n := countReceived(alice, mailFrom(bob, "Given twice, read once")); n != 1 {
		t.Fatalf("alice received the mail given twice %d times", n)
	}
	e.gw.WaitOutput(t, wait, `msg="ignored a mail delivered before"`)
	if n := strings.Count(e.gw.Output(), `msg="ignored a mail delivered before"`); n != 1 {
		t.Errorf("%d lines for one repeated mail", n)
	}
}
