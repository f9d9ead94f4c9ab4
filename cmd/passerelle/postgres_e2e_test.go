package main

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"passerelle/cmd/internal/harness"
	"passerelle/store"
	"passerelle/store/pgtest"
)

// TestPostgres: the built gateway with PASSERELLE_DB=postgres://… on a
// private PostgreSQL cluster, a real Prosody and real SMTP: it creates its
// schema there, alice registers a mailbox, a mail reaches her; after a
// restart her registration is still there (a new mail reaches her) and the
// mail given again with its Message-ID is not delivered twice.
func TestPostgres(t *testing.T) {
	cluster := pgtest.New(t)
	url := cluster.DB(t)
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	env, smtpAddr := mailOnlyEnv(t, srv)
	env["PASSERELLE_DB"] = url
	env["PASSERELLE_LOG_LEVEL"] = "info"
	e := startGateway(t, srv, env)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")
	rcpt := []string{"alice@" + mailDomain}
	bob := "bob%example.com@" + mailDomain
	first := "From: bob@example.com\nMessage-ID: <pg-1@example.com>\nSubject: first\n\nStored in PostgreSQL\n"
	if err := sendMail(smtpAddr, "bob@example.com", rcpt, first); err != nil {
		t.Fatalf("send: %v", err)
	}
	alice.Expect(t, wait, "the first mail", mailFrom(bob, "Stored in PostgreSQL"))

	st, err := store.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if r, err := st.GetRegistration(ctx, mailDomain, "alice@localhost"); err != nil || len(r.Claims) != 1 || r.Claims[0] != "alice" {
		t.Fatalf("alice's registration in PostgreSQL: %+v, %v", r, err)
	}
	if !waitUntil(wait, func() bool { n, err := st.CountStanzas(ctx, mailDomain); return err == nil && n == 0 }) {
		t.Fatal("the outbox in PostgreSQL was not emptied")
	}

	e.gw.Signal(syscall.SIGTERM)
	e.gw.Wait(t, wait)
	e.gw = harness.StartGateway(t, e.bin, env)
	e.gw.WaitOutput(t, wait, `msg="listening for SMTP"`)
	if err := sendMail(smtpAddr, "bob@example.com", rcpt, first); err != nil {
		t.Fatalf("the mail given again was refused: %v", err)
	}
	// Refused (550) if alice's registration had been lost.
	if err := sendMail(smtpAddr, "bob@example.com", rcpt, "From: bob@example.com\nMessage-ID: <pg-2@example.com>\nSubject: second\n\nAfter the restart\n"); err != nil {
		t.Fatalf("send after the restart: %v", err)
	}
	alice.Expect(t, wait, "the mail after the restart", mailFrom(bob, "After the restart"))
	if n := countReceived(alice, mailFrom(bob, "Stored in PostgreSQL")); n != 1 {
		t.Errorf("alice received the mail given twice %d times", n)
	}
	e.gw.WaitOutput(t, wait, `msg="ignored a mail delivered before"`)
	if out := e.gw.Output(); strings.Contains(out, "level=ERROR") {
		t.Errorf("errors logged:\n%s", out)
	}
}
