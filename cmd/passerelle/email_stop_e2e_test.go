package main

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"passerelle/cmd/internal/harness"
)

// TestEmailDataDuringStop: a mail whose DATA is under way when the gateway
// gets SIGTERM is still answered 250 and committed before the process
// exits (the store closes after the SMTP listener has finished): it
// reaches the user after the restart.
func TestEmailDataDuringStop(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	dns := harness.StartDNS(t)
	env, smtpAddr := mailOnlyEnv(t, srv)
	env["PASSERELLE_DNS_RESOLVER"] = dns.Addr()
	e := startGateway(t, srv, env)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")

	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("carol@nopolicy.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("alice@"+mailDomain, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "From: carol@nopolicy.example\r\nSubject: Late\r\n\r\nThe first half, "); err != nil {
		t.Fatal(err)
	}
	e.gw.Signal(syscall.SIGTERM)
	// The stop has begun once the listener refuses new clients.
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		conn, err := net.Dial("tcp", smtpAddr)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the SMTP listener still takes clients after SIGTERM")
		}
	}
	if _, err := io.WriteString(w, "the second half after SIGTERM.\r\n"); err != nil {
		t.Fatalf("the rest of the mail: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("the mail under way at SIGTERM was not taken: %v", err)
	}
	c.Quit()
	if code := e.gw.Wait(t, wait); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	e.gw = harness.StartGateway(t, e.bin, env)
	alice.Expect(t, wait, "the mail taken during the stop", mailFrom("carol%nopolicy.example@"+mailDomain, "the second half after SIGTERM"))
}
