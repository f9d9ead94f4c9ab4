package main

// End-to-end tests of the email bridge: real SMTP traffic into the built
// binary, a real Prosody, and a go-smtp sink standing in for the relay.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"passerelle/bridges/email/emailtest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// relaySink is the outbound relay: a go-smtp server that records mail and
// answers RCPT by the recipient's local part: "flaky" gets 451 once, then
// 250; "gone" gets 550; anything else 250.
type relaySink struct {
	addr  string
	mu    sync.Mutex
	flaky map[string]int // 451s given, by recipient
	mails []sinkMail
	got   chan struct{}
}

type sinkMail struct {
	from, to, user string
	raw            []byte
	tls            bool // received over TLS
}

func startSink(t testing.TB) *relaySink { return startSinkTLS(t, nil, false) }

// startSinkTLS starts a sink with TLS by cfg: implicit, or STARTTLS (AUTH
// only after it); plain SMTP when cfg is nil.
func startSinkTLS(t testing.TB, cfg *tls.Config, implicit bool) *relaySink {
	var ln net.Listener
	var err error
	if cfg != nil && implicit {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &relaySink{addr: ln.Addr().String(), flaky: map[string]int{}, got: make(chan struct{}, 100)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s, c: c}, nil }))
	srv.Domain = "relay.test"
	srv.AllowInsecureAuth = cfg == nil
	if cfg != nil && !implicit {
		srv.TLSConfig = cfg
	}
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

type sinkSession struct {
	s        *relaySink
	c        *smtp.Conn
	from, to string
	user     string // authenticated user
}

// The sink accepts AUTH PLAIN with the password "smtp-pw".
func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if password != "smtp-pw" {
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *sinkSession) Reset()        {}
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.from = from
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	switch strings.SplitN(to, "@", 2)[0] {
	case "flaky":
		if ss.s.flaky[to] == 0 {
			ss.s.flaky[to]++
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
		}
	case "gone":
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "Mailbox gone for good"}
	}
	ss.to = to
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	_, isTLS := ss.c.TLSConnectionState()
	ss.s.mails = append(ss.s.mails, sinkMail{from: ss.from, to: ss.to, user: ss.user, raw: raw, tls: isTLS})
	ss.s.mu.Unlock()
	ss.s.got <- struct{}{}
	return nil
}

// waitMail waits for a mail to rcpt containing substr.
func (s *relaySink) waitMail(t *testing.T, timeout time.Duration, rcpt, substr string) sinkMail {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		for _, m := range s.mails {
			if m.to == rcpt && bytes.Contains(m.raw, []byte(substr)) {
				s.mu.Unlock()
				return m
			}
		}
		s.mu.Unlock()
		select {
		case <-s.got:
		case <-deadline:
			t.Fatalf("no mail to %s containing %q reached the relay", rcpt, substr)
		}
	}
}

func (s *relaySink) count(rcpt, substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.mails {
		if m.to == rcpt && bytes.Contains(m.raw, []byte(substr)) {
			n++
		}
	}
	return n
}

// sendMail submits raw to the gateway's SMTP listener with a real client
// and returns the server's refusal (nil: accepted with 250).
func sendMail(addr, from string, to []string, raw string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, strings.ReplaceAll(raw, "\n", "\r\n")); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func mailFrom(from, substr string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return harness.IsMessage(e) && harness.Bare(e.Attr("from")) == from && e.Attr("type") != "error" &&
			strings.Contains(e.ChildText("", "body"), substr)
	}
}

func header(raw []byte, name string) string {
	for _, line := range strings.Split(string(raw), "\r\n") {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestEmailProsody(t *testing.T) {
	srv := startServer(t, "prosody")
	sink := startSink(t)
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	env := baseEnv(t, srv)
	env["PASSERELLE_SMTP_LISTEN"] = smtpAddr
	env["PASSERELLE_SMTP_RELAY"] = "smtp://" + sink.addr
	env["PASSERELLE_SMTP_MAX_SIZE"] = "100000"
	env["PASSERELLE_RETRY_MAX_DELAY"] = "1s"
	env["PASSERELLE_MAILBOX_ALLOW_PRIVATE"] = "true" // dovecot and the sink listen on loopback
	e := startGateway(t, srv, env)

	top := t
	alicePW := srv.AddUser(t, "alice@localhost")
	alice := harness.Dial(t, srv.C2SAddr(), "alice@localhost", alicePW, "test")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")
	acceptGateway(t, alice, mailDomain)
	bob := "bob%example.com@" + mailDomain
	rcpt := []string{"alice@" + mailDomain}

	var first *xmlel.Element
	t.Run("plain", func(t *testing.T) {
		err := sendMail(smtpAddr, "bob@example.com", rcpt, `From: Bob <bob@example.com>
To: alice@mail.localhost
Subject: Hello Alice
Message-ID: <plain-1@example.com>
Date: Sun, 22 Nov 2026 10:00:00 +0000

Hi Alice,
how are you?
`)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		first = alice.Expect(t, wait, "the plain mail", mailFrom(bob, "how are you?"))
		if s := first.ChildText("", "subject"); s != "Hello Alice" {
			t.Errorf("subject %q", s)
		}
		// Clients that ignore <subject> on a chat message still show it.
		// (After the line marking an unverified sender.)
		if b := first.ChildText("", "body"); !strings.Contains("\n"+b, "\n*Subject: Hello Alice*\n\nHi Alice,\n") {
			t.Errorf("the body does not start with the subject: %q", b)
		}
		if first.Attr("id") == "" || first.ChildText("", "thread") == "" {
			t.Errorf("message without id or thread: %s", first)
		}
	})

	t.Run("multipart latin1 and html", func(t *testing.T) {
		err := sendMail(smtpAddr, "carol@example.com", rcpt, `From: =?ISO-8859-1?Q?Carol_M=FCller?= <carol@example.com>
To: alice@mail.localhost
Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=
Message-ID: <alt-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: quoted-printable

Sch=F6ne Gr=FC=DFe aus K=F6ln
--b1
Content-Type: text/html; charset=ISO-8859-1

<html><body><p>Sch&ouml;ne <b>Gr&uuml;&szlig;e</b></p></body></html>
--b1--
`)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		m := alice.Expect(t, wait, "the latin1 mail", mailFrom("carol%example.com@"+mailDomain, "Schöne Grüße aus Köln"))
		if s := m.ChildText("", "subject"); s != "Grüße" {
			t.Errorf("subject %q", s)
		}
		if strings.Contains(m.ChildText("", "body"), "<b>") {
			t.Errorf("html in the body: %s", m)
		}
	})

	t.Run("html only", func(t *testing.T) {
		err := sendMail(smtpAddr, "dave@example.com", rcpt, `From: dave@example.com
To: alice@mail.localhost
Subject: News
Message-ID: <html-1@example.com>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

`+b64("<html><head><style>p{color:red}</style></head><body><p>First&nbsp;paragraph</p><p>See <a href=\"https://example.com/x\">the site</a></p></body></html>"))
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		m := alice.Expect(t, wait, "the html mail", mailFrom("dave%example.com@"+mailDomain, "First"))
		body := m.ChildText("", "body")
		if strings.Contains(body, "color") || !strings.Contains(body, "https://example.com/x") || strings.Contains(body, "<p>") {
			t.Errorf("html not reduced to text: %q", body)
		}
	})

	t.Run("attachment", func(t *testing.T) {
		err := sendMail(smtpAddr, "bob@example.com", rcpt, `From: bob@example.com
To: alice@mail.localhost
Subject: The report
Message-ID: <att-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="m1"

--m1
Content-Type: text/plain; charset=utf-8

Here it is.
--m1
Content-Type: application/pdf
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

`+b64(strings.Repeat("x", 3000))+`
--m1--
`)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		m := alice.Expect(t, wait, "the mail with an attachment", mailFrom(bob, "Here it is."))
		if b := m.ChildText("", "body"); !strings.Contains(b, "report.pdf (2.9 kB)") {
			t.Errorf("attachment not listed: %q", b)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		if err := sendMail(smtpAddr, "bob@example.com", []string{"nobody@" + mailDomain}, "Subject: x\n\nx\n"); smtpCode(err) != 550 {
			t.Errorf("unknown user: want 550, got %v", err)
		}
		if err := sendMail(smtpAddr, "bob@example.com", []string{"someone@example.net"}, "Subject: x\n\nx\n"); smtpCode(err) != 550 {
			t.Errorf("other domain (relay attempt): want 550, got %v", err)
		}
		big := "Subject: big\n\n" + strings.Repeat("0123456789abcdef\n", 8000)
		if err := sendMail(smtpAddr, "bob@example.com", rcpt, big); smtpCode(err) != 552 {
			t.Errorf("oversize: want 552, got %v", err)
		}
		// Still serving.
		if err := sendMail(smtpAddr, "bob@example.com", rcpt, "From: bob@example.com\nSubject: after\n\nstill here\n"); err != nil {
			t.Fatalf("after the refusals: %v", err)
		}
		alice.Expect(t, wait, "the mail after the refusals", mailFrom(bob, "still here"))
		alice.ExpectNone(t, 500*time.Millisecond, "a refused mail", mailFrom(bob, "0123456789abcdef"))
	})

	t.Run("accept_mail setting", func(t *testing.T) {
		const cmdNS = "http://jabber.org/protocol/commands"
		setAccept := func(v string) {
			t.Helper()
			r := alice.IQ(t, "set", mailDomain, "<command xmlns='"+cmdNS+"' node='settings' action='execute'/>")
			wantResult(t, r, "settings execute")
			cmd := r.Child(cmdNS, "command")
			if cmd.Attr("status") != "executing" || formValues(r, "accept_mail") == nil {
				t.Fatalf("settings form without accept_mail: %s", r)
			}
			if got := formValues(r, "address"); len(got) != 1 || got[0] != "alice" {
				t.Fatalf("settings form address %v", got)
			}
			r = alice.IQ(t, "set", mailDomain, "<command xmlns='"+cmdNS+"' node='settings' sessionid='"+cmd.Attr("sessionid")+"' action='complete'>"+
				submitForm("jabber:iq:register", "address", "alice", "accept_mail", v)+"</command>")
			wantResult(t, r, "settings submit accept_mail="+v)
			if st := r.Child(cmdNS, "command").Attr("status"); st != "completed" {
				t.Fatalf("settings status %q: %s", st, r)
			}
		}
		setAccept("false")
		err := sendMail(smtpAddr, "bob@example.com", rcpt, "From: bob@example.com\nSubject: off\n\nWhile mail is off\n")
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 2, 1}) {
			t.Fatalf("mail to an address that accepts none: want 550 5.2.1, got %v", err)
		}
		setAccept("true")
		if err := sendMail(smtpAddr, "bob@example.com", rcpt, "From: bob@example.com\nSubject: on\n\nMail is on again\n"); err != nil {
			t.Fatalf("after turning mail back on: %v", err)
		}
		alice.Expect(t, wait, "the mail after turning mail back on", mailFrom(bob, "Mail is on again"))
		alice.ExpectNone(t, 500*time.Millisecond, "the refused mail", mailFrom(bob, "While mail is off"))
	})

	t.Run("reply in thread", func(t *testing.T) {
		alice.Send(t, "<message to='%s' type='chat' id='r1'><body>Fine, thanks!</body><thread>%s</thread></message>",
			bob, first.ChildText("", "thread"))
		m := sink.waitMail(t, wait, "bob@example.com", "Fine, thanks!")
		if m.from != "alice@"+mailDomain {
			t.Errorf("envelope from %q", m.from)
		}
		for k, want := range map[string]string{"In-Reply-To": "<plain-1@example.com>", "References": "<plain-1@example.com>",
			"Subject": "Re: Hello Alice", "From": "<alice@mail.localhost>", "To": "<bob@example.com>"} {
			if got := header(m.raw, k); got != want {
				t.Errorf("%s: got %q, want %q\n%s", k, got, want, m.raw)
			}
		}
		if header(m.raw, "Message-ID") == "" || header(m.raw, "Date") == "" {
			t.Errorf("no Message-ID or Date:\n%s", m.raw)
		}
		// Bob answers in his thread: it reaches Alice in the same thread.
		err := sendMail(smtpAddr, "bob@example.com", rcpt, fmt.Sprintf("From: bob@example.com\nSubject: Re: Hello Alice\nMessage-ID: <plain-2@example.com>\nIn-Reply-To: %s\nReferences: <plain-1@example.com> %s\n\nGood to hear.\n",
			header(m.raw, "Message-ID"), header(m.raw, "Message-ID")))
		if err != nil {
			t.Fatal(err)
		}
		back := alice.Expect(t, wait, "Bob's answer", mailFrom(bob, "Good to hear."))
		if back.ChildText("", "thread") != first.ChildText("", "thread") {
			t.Errorf("answer in thread %q, want %q", back.ChildText("", "thread"), first.ChildText("", "thread"))
		}
	})

	t.Run("XEP-0461 reply with own subject and receipt", func(t *testing.T) {
		alice.Send(t, "<message to='%s' type='chat' id='r2'><body>About the PDF</body><subject>Report</subject>"+
			"<reply xmlns='urn:xmpp:reply:0' to='%s' id='%s'/><request xmlns='urn:xmpp:receipts'/></message>", bob, bob, harnessID(t, alice, bob, "Here it is."))
		m := sink.waitMail(t, wait, "bob@example.com", "About the PDF")
		if got := header(m.raw, "In-Reply-To"); got != "<att-1@example.com>" {
			t.Errorf("In-Reply-To %q", got)
		}
		if got := header(m.raw, "Subject"); got != "Report" {
			t.Errorf("Subject %q", got)
		}
		alice.Expect(t, wait, "a receipt", func(e *xmlel.Element) bool {
			r := e.Child("urn:xmpp:receipts", "received")
			return harness.IsMessage(e) && r != nil && r.Attr("id") == "r2"
		})
	})

	t.Run("new mail to any address", func(t *testing.T) {
		r := alice.IQ(t, "set", mailDomain, "<query xmlns='jabber:iq:gateway'><prompt>Zoe.Smith@Example.org</prompt></query>")
		wantResult(t, r, "gateway prompt")
		jid := r.Child("jabber:iq:gateway", "query").ChildText("", "jid")
		alice.Send(t, "<message to='%s' type='chat' id='n1'><body>Hello Zoe, long time no see, how is life in the city these days?</body></message>", harness.Esc(jid))
		m := sink.waitMail(t, wait, "Zoe.Smith@example.org", "long time no see")
		if got := header(m.raw, "Subject"); got != "Hello Zoe, long time no see, how is" {
			t.Errorf("Subject %q", got)
		}
		if header(m.raw, "In-Reply-To") != "" {
			t.Errorf("a new mail has In-Reply-To:\n%s", m.raw)
		}
	})

	t.Run("relay 451 then 250", func(t *testing.T) {
		alice.Send(t, "<message to='flaky%%example.com@%s' type='chat' id='f1'><body>Retried once</body></message>", mailDomain)
		sink.waitMail(t, 30*time.Second, "flaky@example.com", "Retried once")
		alice.ExpectNone(t, 1500*time.Millisecond, "an error", func(e *xmlel.Element) bool { return e.Attr("type") == "error" && e.Attr("id") == "f1" })
		if n := sink.count("flaky@example.com", "Retried once"); n != 1 {
			t.Errorf("delivered %d times", n)
		}
	})

	t.Run("relay 550", func(t *testing.T) {
		alice.Send(t, "<message to='gone%%example.com@%s' type='chat' id='g1'><body>Anyone there?</body></message>", mailDomain)
		m := alice.Expect(t, wait, "the bounce", func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.Attr("type") == "error" && e.Attr("id") == "g1"
		})
		wantError(t, m, "recipient-unavailable", "relay 550")
		if !strings.Contains(m.String(), "Mailbox gone for good") || !strings.Contains(m.String(), "550") {
			t.Errorf("the error does not quote the relay: %s", m)
		}
	})

	t.Run("unregistered sender", func(t *testing.T) {
		eve := e.dial(t, "eve@localhost")
		eve.Send(t, "<message to='%s' type='chat' id='e1'><body>spam</body></message>", bob)
		m := eve.Expect(t, wait, "the refusal", func(e *xmlel.Element) bool { return harness.IsMessage(e) && e.Attr("id") == "e1" })
		wantError(t, m, "registration-required", "unregistered sender")
		if sink.count("bob@example.com", "spam") != 0 {
			t.Errorf("mail sent for an unregistered user")
		}
	})

	t.Run("mailbox mode", func(t *testing.T) {
		dove := harness.StartDovecot(t, map[string]string{"carol": "imap-pw"})
		carol := e.dial(t, "carol@localhost")
		fields := []string{"address", "carol", "imap_server", dove.Addr, "imap_username", "carol",
			"smtp_server", sink.addr, "smtp_username", "carol-smtp", "smtp_password", "smtp-pw", "email", "carol@example.net"}
		wantError(t, register(carol, t, mailDomain, append(fields, "imap_password", "wrong")...), "not-acceptable", "bad IMAP password")
		wantResult(t, register(carol, t, mailDomain, append(fields, "imap_password", "imap-pw")...), "register with a mailbox")
		appendIMAP(t, dove.Addr, "carol", "imap-pw", "From: Dan <dan@example.com>\r\nSubject: From the mailbox\r\nMessage-ID: <imap-1@example.com>\r\n\r\nRead over IMAP\r\n")
		m := carol.Expect(t, wait, "the mail from the mailbox", mailFrom("dan%example.com@"+mailDomain, "Read over IMAP"))
		carol.Send(t, "<message to='dan%%example.com@%s' type='chat' id='c1'><body>Got it</body><thread>%s</thread></message>", mailDomain, m.ChildText("", "thread"))
		out := sink.waitMail(t, wait, "dan@example.com", "Got it")
		if out.from != "carol@example.net" || out.user != "carol-smtp" || header(out.raw, "In-Reply-To") != "<imap-1@example.com>" || header(out.raw, "Subject") != "Re: From the mailbox" {
			t.Errorf("answer through the user's server: from %q, AUTH as %q\n%s", out.from, out.user, out.raw)
		}
		// The IMAP server restarts: the gateway reconnects and forwards
		// new mail, once.
		dove.Stop(t)
		dove.Start(t)
		appendIMAP(t, dove.Addr, "carol", "imap-pw", "From: dan@example.com\r\nSubject: again\r\n\r\nAfter the restart\r\n")
		carol.Expect(t, 30*time.Second, "the mail after the IMAP restart", mailFrom("dan%example.com@"+mailDomain, "After the restart"))
		carol.ExpectNone(t, time.Second, "a duplicate", mailFrom("dan%example.com@"+mailDomain, "Read over IMAP"))
	})

	t.Run("xmpp server down", func(t *testing.T) {
		srv.Stop(t)
		if err := sendMail(smtpAddr, "bob@example.com", rcpt, "From: bob@example.com\nSubject: while down\n\nSent while the server was down\n"); err != nil {
			t.Fatalf("send: %v", err)
		}
		srv.Start(t)
		alice = harness.Dial(top, srv.C2SAddr(), "alice@localhost", alicePW, "test") // lives past this subtest
		alice.Expect(t, 60*time.Second, "the mail sent while the server was down", mailFrom(bob, "Sent while the server was down"))
	})

	t.Run("killed after 250", func(t *testing.T) {
		if err := sendMail(smtpAddr, "bob@example.com", rcpt, "From: bob@example.com\nSubject: kill\n\nSurvives SIGKILL\n"); err != nil {
			t.Fatalf("send: %v", err)
		}
		e.gw.Signal(syscall.SIGKILL)
		e.gw.Wait(t, wait)
		e.gw = harness.StartGateway(t, e.bin, env)
		e.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+mailDomain)
		alice.Expect(t, 30*time.Second, "the mail accepted before SIGKILL", mailFrom(bob, "Survives SIGKILL"))
	})
}

// appendIMAP puts a mail into user's INBOX with a real IMAP client.
func appendIMAP(t *testing.T, addr, user, password, raw string) {
	t.Helper()
	appendIMAPTo(t, addr, user, password, "INBOX", raw)
}

// appendIMAPTo puts a mail into user's mailbox with a real IMAP client, as
// a mail client files a mail it sent.
func appendIMAPTo(t *testing.T, addr, user, password, mailbox, raw string) {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, password).Wait(); err != nil {
		t.Fatal(err)
	}
	cmd := c.Append(mailbox, int64(len(raw)), nil)
	cmd.Write([]byte(raw))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()
}

// harnessID returns the id of the message from `from` with body substr
// that c received earlier (it must still be in the client's history).
func harnessID(t *testing.T, c *harness.Client, from, substr string) string {
	t.Helper()
	for _, e := range c.Received() {
		if mailFrom(from, substr)(e) {
			return e.Attr("id")
		}
	}
	t.Fatalf("no message from %s with %q received", from, substr)
	return ""
}

func b64(s string) string {
	var b strings.Builder
	enc := []byte(base64.StdEncoding.EncodeToString([]byte(s)))
	for len(enc) > 76 {
		b.Write(enc[:76])
		b.WriteByte('\n')
		enc = enc[76:]
	}
	b.Write(enc)
	return b.String()
}

// TestEmailUpload: with XEP-0363 on the server, an attachment is uploaded
// and linked (XEP-0066).
func TestEmailUpload(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}, Upload: true})
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	env := baseEnv(t, srv)
	delete(env, "PASSERELLE_IRC_DOMAIN")
	delete(env, "PASSERELLE_SMS_DOMAIN")
	delete(env, "PASSERELLE_SMS_NUMBERS")
	env["PASSERELLE_SMTP_LISTEN"] = smtpAddr
	e := startGateway(t, srv, env)
	e.gw.WaitOutput(t, wait, `msg="attachments are uploaded"`)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")
	content := strings.Repeat("%PDF-1.4 pretend ", 200)
	err := sendMail(smtpAddr, "bob@example.com", []string{"alice@" + mailDomain}, `From: bob@example.com
Subject: The report
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="m1"

--m1
Content-Type: text/plain; charset=utf-8

Attached.
--m1
Content-Type: application/pdf
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

`+b64(content)+`
--m1--
`)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	m := alice.Expect(t, wait, "the mail with an uploaded attachment", mailFrom("bob%example.com@"+mailDomain, "Attached."))
	url := m.Child("jabber:x:oob", "x").ChildText("jabber:x:oob", "url")
	if url == "" || !strings.Contains(m.ChildText("", "body"), url) {
		t.Fatalf("no link to the attachment: %s", m)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != content {
		t.Fatalf("GET %s: %s, %d bytes", url, resp.Status, len(got))
	}
}

// TestEmailTLS: the relay over implicit TLS (smtps://) with its certificate
// verified against SSL_CERT_FILE; then a relay whose certificate comes from
// an unknown CA: the mail is refused at the first attempt, the sender gets
// an error and the gateway logs it as an error.
func TestEmailTLS(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	ca := emailtest.NewCA(t, "Passerelle test CA")
	sink := startSinkTLS(t, ca.ServerTLS(t), true)
	env := baseEnv(t, srv)
	delete(env, "PASSERELLE_IRC_DOMAIN")
	delete(env, "PASSERELLE_SMS_DOMAIN")
	delete(env, "PASSERELLE_SMS_NUMBERS")
	env["PASSERELLE_SMTP_RELAY"] = "smtps://relay-user:smtp-pw@" + sink.addr
	env["SSL_CERT_FILE"] = ca.File
	env["PASSERELLE_RETRY_MAX_DELAY"] = "1s"
	env["PASSERELLE_MAILBOX_ALLOW_PRIVATE"] = "true"
	e := startGateway(t, srv, env)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")

	t.Run("smtps relay", func(t *testing.T) {
		alice.Send(t, "<message to='bob%%example.com@%s' type='chat' id='s1'><body>Sealed in TLS</body></message>", mailDomain)
		m := sink.waitMail(t, wait, "bob@example.com", "Sealed in TLS")
		if !m.tls || m.user != "relay-user" || m.from != "alice@"+mailDomain {
			t.Errorf("tls %v, AUTH as %q, from %q", m.tls, m.user, m.from)
		}
	})

	t.Run("mailbox mode over STARTTLS", func(t *testing.T) {
		// The user's IMAP and submission servers offer STARTTLS and refuse
		// a login in clear.
		stls := ca.ServerTLS(t)
		mem := imapmemserver.New()
		u := imapmemserver.NewUser("carol", "imap-pw")
		if err := u.Create("INBOX", nil); err != nil {
			t.Fatal(err)
		}
		mem.AddUser(u)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		imapSrv := imapserver.New(&imapserver.Options{
			NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
				return emailtest.FlushingSession{Session: mem.NewSession()}, nil, nil
			},
			Caps:      imap.CapSet{imap.CapIMAP4rev1: {}},
			TLSConfig: stls,
			Logger:    log.New(io.Discard, "", 0),
		})
		go imapSrv.Serve(ln)
		t.Cleanup(func() { imapSrv.Close() })
		submission := startSinkTLS(t, stls, false)

		carol := e.dial(t, "carol@localhost")
		wantResult(t, register(carol, t, mailDomain, "address", "carol", "imap_server", ln.Addr().String(), "imap_username", "carol",
			"imap_password", "imap-pw", "smtp_server", submission.addr, "smtp_username", "carol-smtp", "smtp_password", "smtp-pw",
			"email", "carol@example.net"), "register with a mailbox over STARTTLS")
		roots := x509.NewCertPool()
		roots.AddCert(ca.Cert)
		c, err := imapclient.DialStartTLS(ln.Addr().String(), &imapclient.Options{TLSConfig: &tls.Config{RootCAs: roots}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login("carol", "imap-pw").Wait(); err != nil {
			t.Fatal(err)
		}
		raw := "From: dan@example.com\r\nSubject: Sealed\r\nMessage-ID: <tls-1@example.com>\r\n\r\nRead over STARTTLS\r\n"
		app := c.Append("INBOX", int64(len(raw)), nil)
		app.Write([]byte(raw))
		app.Close()
		if _, err := app.Wait(); err != nil {
			t.Fatal(err)
		}
		m := carol.Expect(t, wait, "the mail read over STARTTLS", mailFrom("dan%example.com@"+mailDomain, "Read over STARTTLS"))
		carol.Send(t, "<message to='dan%%example.com@%s' type='chat' id='c1'><body>Sent over STARTTLS</body><thread>%s</thread></message>", mailDomain, m.ChildText("", "thread"))
		out := submission.waitMail(t, wait, "dan@example.com", "Sent over STARTTLS")
		if !out.tls || out.user != "carol-smtp" || out.from != "carol@example.net" {
			t.Errorf("through the user's server: tls %v, AUTH as %q, from %q", out.tls, out.user, out.from)
		}
	})

	t.Run("untrusted relay", func(t *testing.T) {
		impostor := startSinkTLS(t, emailtest.NewCA(t, "Unknown CA").ServerTLS(t), true)
		e.gw.Signal(syscall.SIGTERM)
		e.gw.Wait(t, wait)
		env["PASSERELLE_SMTP_RELAY"] = "smtps://relay-user:smtp-pw@" + impostor.addr
		e.gw = harness.StartGateway(t, e.bin, env)
		e.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+mailDomain)
		alice.Send(t, "<message to='bob%%example.com@%s' type='chat' id='s2'><body>Not for an impostor</body></message>", mailDomain)
		m := alice.Expect(t, wait, "the refusal", func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.Attr("type") == "error" && e.Attr("id") == "s2"
		})
		wantError(t, m, "not-acceptable", "untrusted relay")
		if !strings.Contains(m.String(), "not trusted") {
			t.Errorf("the error does not say why: %s", m)
		}
		e.gw.WaitOutput(t, wait, `level=ERROR msg="mail delivery refused`)
		impostor.mu.Lock()
		n := len(impostor.mails)
		impostor.mu.Unlock()
		if n != 0 {
			t.Errorf("%d mails reached the impostor", n)
		}
	})
}
