package main

// End-to-end tests of the inbound SMTP listener's defences: sender
// authentication (SPF, DKIM, DMARC against a DNS server on loopback),
// refused-recipient limits and connection limits, with real SMTP clients
// against the built binary.

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

const unverifiedLine = "⚠ unverified sender"

// mailOnlyEnv is baseEnv with only the email bridge and an SMTP listener.
func mailOnlyEnv(t *testing.T, srv harness.Server) (env map[string]string, smtpAddr string) {
	env = baseEnv(t, srv)
	delete(env, "PASSERELLE_IRC_DOMAIN")
	delete(env, "PASSERELLE_SMS_DOMAIN")
	delete(env, "PASSERELLE_SMS_NUMBERS")
	smtpAddr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	env["PASSERELLE_SMTP_LISTEN"] = smtpAddr
	return env, smtpAddr
}

func bodyOf(m *xmlel.Element) string { return m.ChildText("", "body") }

// TestEmailSenderAuth: a forged From of a p=reject domain is refused with
// 550 5.7.1; a mail DKIM-signed by the From domain arrives as it is; a mail
// from a domain without any record arrives marked; behind a trusted MTA its
// Authentication-Results decides and any other is ignored.
func TestEmailSenderAuth(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	dns := harness.StartDNS(t)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dns.SetTXT("_dmarc.corp.example", "v=DMARC1; p=reject")
	dns.SetTXT("corp.example", "v=spf1 -all")
	dns.SetTXT("s1._domainkey.corp.example", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	dns.SetTXT("attacker.invalid", "v=spf1 ip4:127.0.0.0/8 -all") // the attacker's own envelope passes SPF
	env, smtpAddr := mailOnlyEnv(t, srv)
	env["PASSERELLE_DNS_RESOLVER"] = dns.Addr()
	e := startGateway(t, srv, env)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")
	rcpt := []string{"alice@" + mailDomain}
	boss := "boss%corp.example@" + mailDomain

	t.Run("forged From of a p=reject domain", func(t *testing.T) {
		err := sendMail(smtpAddr, "nobody@attacker.invalid", rcpt, "From: The Boss <boss@corp.example>\nSubject: Urgent\n\nWire 10,000 EUR today\n")
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
			t.Fatalf("want 550 5.7.1, got %v", err)
		}
		if dns.Asked("_dmarc.corp.example") == 0 {
			t.Fatal("the DMARC record was not looked up on the test's DNS server")
		}
	})

	t.Run("DKIM-signed by the From domain", func(t *testing.T) {
		raw := "From: The Boss <boss@corp.example>\r\nTo: alice@" + mailDomain + "\r\nSubject: Numbers\r\nMessage-ID: <dkim-1@corp.example>\r\n\r\nQuarterly numbers are in.\r\n"
		var signed bytes.Buffer
		if err := dkim.Sign(&signed, strings.NewReader(raw), &dkim.SignOptions{Domain: "corp.example", Selector: "s1", Signer: priv}); err != nil {
			t.Fatal(err)
		}
		// Sent through a relay of its own domain's choice: the envelope is not aligned.
		if err := sendMail(smtpAddr, "bounces@attacker.invalid", rcpt, strings.ReplaceAll(signed.String(), "\r\n", "\n")); err != nil {
			t.Fatalf("send: %v", err)
		}
		m := alice.Expect(t, wait, "the signed mail", mailFrom(boss, "Quarterly numbers"))
		if b := bodyOf(m); b != "*Subject: Numbers*\n\nQuarterly numbers are in." {
			t.Errorf("body %q, want the subject line and the text alone", b)
		}
	})

	t.Run("domain without records", func(t *testing.T) {
		if err := sendMail(smtpAddr, "carol@nopolicy.example", rcpt, "From: carol@nopolicy.example\nSubject: Hi\n\nHello from nowhere\n"); err != nil {
			t.Fatalf("send: %v", err)
		}
		m := alice.Expect(t, wait, "the unverified mail", mailFrom("carol%nopolicy.example@"+mailDomain, "Hello from nowhere"))
		if b := bodyOf(m); b != unverifiedLine+"\n*Subject: Hi*\n\nHello from nowhere" {
			t.Errorf("body %q, want the warning line first, then the subject line", b)
		}
		alice.ExpectNone(t, 500*time.Millisecond, "the forged mail", mailFrom(boss, "Wire 10,000"))
	})

	// Behind a fronting MTA whose authserv-id is trusted.
	e.gw.Signal(syscall.SIGTERM)
	e.gw.Wait(t, wait)
	env["PASSERELLE_SMTP_TRUSTED_AUTHSERV"] = "mx.localhost"
	e.gw = harness.StartGateway(t, e.bin, env)
	e.gw.WaitOutput(t, wait, `msg="listening for SMTP"`)
	asked := dns.Asked("_dmarc.corp.example")

	t.Run("trusted Authentication-Results", func(t *testing.T) {
		err := sendMail(smtpAddr, "bounces@mx.localhost", rcpt, "Authentication-Results: mx.localhost; spf=pass smtp.mailfrom=corp.example; dmarc=pass header.from=corp.example\n"+
			"From: boss@corp.example\nSubject: Vouched\n\nVouched for by the MTA\n")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		m := alice.Expect(t, wait, "the vouched mail", mailFrom(boss, "Vouched for"))
		if b := bodyOf(m); b != "*Subject: Vouched*\n\nVouched for by the MTA" {
			t.Errorf("body %q, want the subject line and the text alone", b)
		}
	})

	t.Run("forged Authentication-Results", func(t *testing.T) {
		err := sendMail(smtpAddr, "bounces@mx.localhost", rcpt, "Authentication-Results: mx.attacker.invalid; dmarc=pass header.from=corp.example\n"+
			"From: boss@corp.example\nSubject: Trust me\n\nForged vouching\n")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		m := alice.Expect(t, wait, "the mail with a forged vouching", mailFrom(boss, "Forged vouching"))
		if b := bodyOf(m); b != unverifiedLine+"\n*Subject: Trust me*\n\nForged vouching" {
			t.Errorf("body %q, want the warning line first, then the subject line", b)
		}
		if n := dns.Asked("_dmarc.corp.example"); n != asked {
			t.Errorf("the gateway looked DMARC up (%d questions) while trusting the MTA", n-asked)
		}
	})
}

// TestEmailRefusedRecipients: refused recipients close the session with 421
// after the limit, and the log has one line per session, not one per
// refused recipient. The figure is measured again: 50,000 refused
// RCPTs, over as many sessions as it takes.
func TestEmailRefusedRecipients(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	env, smtpAddr := mailOnlyEnv(t, srv)
	env["PASSERELLE_LOG_LEVEL"] = "info"
	e := startGateway(t, srv, env)
	e.gw.WaitOutput(t, wait, `msg="listening for SMTP"`)
	before := len(e.gw.Output())

	// session refuses RCPTs until an answer other than 550, and returns the
	// 550s and the last answer's code.
	session := func(t *testing.T, max int) (refused, last int) {
		c, err := smtp.Dial(smtpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("x@example.com", nil); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < max; i++ {
			last = smtpCode(c.Rcpt(fmt.Sprintf("nobody%d@%s", i, mailDomain), nil))
			if last != 550 {
				break
			}
			refused++
		}
		if last == 421 {
			if err := c.Noop(); err == nil {
				t.Fatal("the connection is still open after the 421")
			}
		}
		return refused, last
	}

	const attempts = 50000
	refused, last := session(t, attempts)
	if refused != 20 || last != 421 {
		t.Fatalf("one session: %d refusals, then %d; want 20, then 421", refused, last)
	}
	total, sessions := refused+1, 1
	for total < attempts {
		n, last := session(t, attempts)
		if last != 421 {
			t.Fatalf("session %d: %d refusals, then %d; want 421 after 20", sessions+1, n, last)
		}
		total += n + 1
		sessions++
	}
	// Every session has its summary line.
	deadline := time.Now().Add(wait)
	for strings.Count(e.gw.Output()[before:], `msg="SMTP session ended"`) < sessions {
		if time.Now().After(deadline) {
			t.Fatalf("%d session lines for %d sessions", strings.Count(e.gw.Output()[before:], `msg="SMTP session ended"`), sessions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := e.gw.Output()[before:]
	lines := strings.Count(out, "\n")
	t.Logf("%d refused RCPTs over %d sessions: %d log lines, %d bytes", total, sessions, lines, len(out))
	if lines > sessions+5 {
		t.Errorf("%d log lines for %d sessions:\n%.2000s", lines, sessions, out)
	}
	if !strings.Contains(out, "refused_rcpts=20") || !strings.Contains(out, `closed="too many refused recipients"`) {
		t.Errorf("the session lines do not count the refusals:\n%.1000s", out)
	}
	// Mail still gets through.
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")
	if err := sendMail(smtpAddr, "bob@example.com", []string{"alice@" + mailDomain}, "From: bob@example.com\nSubject: after\n\nstill served\n"); err != nil {
		t.Fatal(err)
	}
	alice.Expect(t, wait, "the mail after the flood", mailFrom("bob%example.com@"+mailDomain, "still served"))
}

// smtpConn is a raw SMTP connection from a chosen loopback address.
type smtpConn struct {
	net.Conn
	r *bufio.Reader
}

func dialFrom(t *testing.T, addr, local string) *smtpConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &smtpConn{c, bufio.NewReader(c)}
}

// line reads the server's next line ("" at EOF).
func (c *smtpConn) line() string {
	s, _ := c.r.ReadString('\n')
	return strings.TrimRight(s, "\r\n")
}

// cmd sends a command and returns the last line of the answer.
func (c *smtpConn) cmd(t *testing.T, format string, args ...any) string {
	t.Helper()
	if _, err := fmt.Fprintf(c, format+"\r\n", args...); err != nil {
		t.Fatal(err)
	}
	for {
		l := c.line()
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

// TestEmailConnectionLimits: a per-client cap (127.0.0.2 here), the relay's
// address (127.0.0.1) exempt from it, a global cap that refuses everyone
// while the open connections still work, and idle connections closed by the
// timeout, after which new clients are served.
func TestEmailConnectionLimits(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	sink := startSink(t) // the relay, on 127.0.0.1
	env, smtpAddr := mailOnlyEnv(t, srv)
	env["PASSERELLE_SMTP_RELAY"] = "smtp://" + sink.addr
	env["PASSERELLE_SMTP_MAX_CONNECTIONS"] = "5"
	env["PASSERELLE_SMTP_MAX_CONNECTIONS_PER_IP"] = "2"
	env["PASSERELLE_SMTP_TIMEOUT"] = "5s"
	e := startGateway(t, srv, env)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")

	var open []*smtpConn
	greet := func(local, want string) *smtpConn {
		t.Helper()
		c := dialFrom(t, smtpAddr, local)
		if l := c.line(); !strings.HasPrefix(l, want) {
			t.Fatalf("connection from %s: %q, want %q", local, l, want)
		}
		return c
	}
	// Per client: 127.0.0.2 gets two.
	open = append(open, greet("127.0.0.2", "220"), greet("127.0.0.2", "220"))
	greet("127.0.0.2", "421 4.7.0 Too many connections from your address")
	// The relay's address is exempt: three, up to the global cap of 5.
	for range 3 {
		open = append(open, greet("127.0.0.1", "220"))
	}
	// The global cap refuses everyone, the relay too.
	greet("127.0.0.3", "421 4.7.0 Too many connections,")
	greet("127.0.0.1", "421 4.7.0 Too many connections,")

	// The open connections still work.
	c := open[len(open)-1]
	for _, step := range []struct{ cmd, want string }{
		{"EHLO client.test", "250"}, {"MAIL FROM:<bob@example.com>", "250"}, {"RCPT TO:<alice@" + mailDomain + ">", "250"}, {"DATA", "354"},
		{"From: bob@example.com\r\nSubject: capped\r\n\r\nThrough a full listener\r\n.", "250"}, {"QUIT", "221"},
	} {
		if l := c.cmd(t, "%s", step.cmd); !strings.HasPrefix(l, step.want) {
			t.Fatalf("%s: %q, want %s", step.cmd, l, step.want)
		}
	}
	alice.Expect(t, wait, "the mail sent while the listener was full", mailFrom("bob%example.com@"+mailDomain, "Through a full listener"))

	// The idle ones are closed by the timeout.
	for i, c := range open[:len(open)-1] {
		if l := c.line(); !strings.HasPrefix(l, "421 4.4.2") {
			t.Fatalf("idle connection %d: %q, want 421 4.4.2", i+1, l)
		}
		if l := c.line(); l != "" {
			t.Fatalf("idle connection %d still open: %q", i+1, l)
		}
	}
	// Then new clients are served again.
	deadline := time.Now().Add(wait)
	for {
		c := dialFrom(t, smtpAddr, "127.0.0.3")
		l := c.line()
		c.Close()
		if strings.HasPrefix(l, "220") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the idle connections timed out: %q", l)
		}
	}
	if !strings.Contains(e.gw.Output(), `msg="refused SMTP connections"`) {
		t.Error("the refusals were not logged")
	}
}
