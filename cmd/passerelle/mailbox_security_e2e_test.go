package main

// End-to-end tests of what the email bridge lets a user make it reach:
// users' own IMAP and SMTP servers (mailbox mode) and the operator's relay.

import (
	"bytes"
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

	"github.com/emersion/go-smtp"

	"passerelle/bridges/email/emailtest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// mailEnv is baseEnv with the email bridge only.
func mailEnv(t *testing.T, srv harness.Server) map[string]string {
	env := baseEnv(t, srv)
	delete(env, "PASSERELLE_IRC_DOMAIN")
	delete(env, "PASSERELLE_SMS_DOMAIN")
	delete(env, "PASSERELLE_SMS_NUMBERS")
	env["PASSERELLE_RETRY_MAX_DELAY"] = "1s"
	return env
}

// restart stops the gateway with SIGTERM and starts it again with env;
// the new process belongs to top (it outlives the subtest t).
func (e *gwEnv) restart(t, top *testing.T, env map[string]string) {
	t.Helper()
	e.gw.Signal(syscall.SIGTERM)
	e.gw.Wait(t, wait)
	e.env = env
	e.gw = harness.StartGateway(top, e.bin, env)
	e.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+mailDomain)
}

// tcpWitness is a loopback listener that counts connections and keeps
// what clients sent; with a target it forwards each connection there (a
// proxy in front of a real server), else it writes banner and waits.
type tcpWitness struct {
	addr   string
	mu     sync.Mutex
	conns  int
	got    bytes.Buffer
	open   []net.Conn
	target string
}

func startWitness(t *testing.T, banner, target string) *tcpWitness {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &tcpWitness{addr: ln.Addr().String(), target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.conns++
			w.open = append(w.open, c)
			w.mu.Unlock()
			go w.serve(c, banner)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, c := range w.open {
			c.Close()
		}
	})
	return w
}

func (w *tcpWitness) serve(c net.Conn, banner string) {
	if w.target != "" {
		up, err := net.Dial("tcp", w.target)
		if err != nil {
			c.Close()
			return
		}
		w.mu.Lock()
		w.open = append(w.open, up)
		w.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		io.Copy(c, up)
		c.Close()
		return
	}
	io.WriteString(c, banner)
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		w.mu.Lock()
		w.got.Write(buf[:n])
		w.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (w *tcpWitness) seen() (conns int, got string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conns, w.got.String()
}

// refusal registers fields and returns the text of the not-acceptable
// error that must come back. A server that never speaks (ngircd waits for
// the client) is given up after the gateway's check timeout (20 s), longer
// than the harness waits for an IQ.
func refusal(t *testing.T, c *harness.Client, what string, fields ...string) string {
	t.Helper()
	id := fmt.Sprintf("reg-%d", time.Now().UnixNano())
	c.Send(t, "<iq type='set' id='%s' to='%s'><query xmlns='jabber:iq:register'>%s</query></iq>", id, mailDomain, submitForm("jabber:iq:register", fields...))
	r := c.Expect(t, 40*time.Second, "the answer to "+what, func(el *xmlel.Element) bool {
		return el.Local == "iq" && el.Attr("id") == id
	})
	wantError(t, r, "not-acceptable", what)
	return stanza.ErrorOf(r).Text
}

// A user's own servers on the gateway's own network: refused before any
// connection (an SSH daemon, a closed port and an IRC server all get the
// same answer), with PASSERELLE_MAILBOX_ALLOW_PRIVATE the answer still
// tells nothing of what answered, and a registration made while private
// addresses were allowed is checked again at the next connection.
func TestMailboxPrivateAddresses(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	env := mailEnv(t, srv)
	e := startGateway(t, srv, env)
	top := t
	sshd := startWitness(t, "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", "")
	ngircd := harness.StartNgircd(t)
	targets := map[string]string{"ssh": sshd.addr, "closed": fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), "ngircd": ngircd.Addr}
	alice := e.dial(t, "alice@localhost")

	// texts registers each target as IMAP, then as SMTP server, and
	// returns the refusals' texts by field.
	texts := func(t *testing.T) map[string]map[string]string {
		got := map[string]map[string]string{"imap": {}, "smtp": {}}
		for name, addr := range targets {
			got["imap"][name] = refusal(t, alice, "IMAP server at "+name, "address", "alice", "imap_server", addr,
				"imap_username", "alice", "imap_password", "pw")
			got["smtp"][name] = refusal(t, alice, "SMTP server at "+name, "address", "alice", "smtp_server", addr,
				"smtp_username", "alice", "smtp_password", "pw", "email", "alice@example.net")
		}
		return got
	}
	sameText := func(t *testing.T, got map[string]map[string]string, want string) {
		t.Helper()
		for field, byTarget := range got {
			for name, text := range byTarget {
				if text != byTarget["ssh"] {
					t.Errorf("%s at %s: %q differs from %q", field, name, text, byTarget["ssh"])
				}
				if !strings.Contains(text, want) {
					t.Errorf("%s at %s: %q does not say %q", field, name, text, want)
				}
				for _, leak := range []string{"SSH", "OpenSSH", "refused", "closed", "EOF", "NOTICE", "irc.", "reset"} {
					if strings.Contains(text, leak) {
						t.Errorf("%s at %s: %q tells %q", field, name, text, leak)
					}
				}
			}
		}
	}

	t.Run("refused before connecting", func(t *testing.T) {
		got := texts(t)
		t.Logf("every refusal: %q", got["imap"]["ssh"])
		sameText(t, got, "private address 127.0.0.1")
		if conns, _ := sshd.seen(); conns != 0 {
			t.Errorf("the gateway connected %d times to a private address", conns)
		}
	})

	t.Run("allowed private, generic errors", func(t *testing.T) {
		allowed := withVar(env, "PASSERELLE_MAILBOX_ALLOW_PRIVATE", "true")
		e.restart(t, top, allowed)
		texts := texts(t)
		t.Logf("every refusal: %q", texts["imap"]["ssh"])
		sameText(t, texts, "could not be reached, or it did not answer as expected")
		conns, got := sshd.seen()
		t.Logf("the SSH listener saw %d connections and %d bytes", conns, len(got))
		if conns == 0 {
			t.Fatal("the gateway never connected: the case tests nothing")
		}
		if got != "" {
			t.Errorf("the gateway sent %q to a server that never greeted it as IMAP or SMTP", got)
		}
	})

	t.Run("checked again at each connection", func(t *testing.T) {
		dove := harness.StartDovecot(t, map[string]string{"carol": "imap-pw"})
		proxy := startWitness(t, "", dove.Addr)
		carol := e.dial(t, "carol@localhost")
		wantResult(t, register(carol, t, mailDomain, "address", "carol", "imap_server", proxy.addr, "imap_username", "carol",
			"imap_password", "imap-pw"), "register a loopback mailbox while allowed")
		appendIMAP(t, dove.Addr, "carol", "imap-pw", "From: dan@example.com\r\nSubject: first\r\n\r\nRead while allowed\r\n")
		carol.Expect(t, wait, "the mail read while allowed", mailFrom("dan%example.com@"+mailDomain, "Read while allowed"))

		e.restart(t, top, env) // PASSERELLE_MAILBOX_ALLOW_PRIVATE unset
		before, _ := proxy.seen()
		m := carol.Expect(t, wait, "the notice about the private address", func(el *xmlel.Element) bool {
			return harness.IsMessage(el) && el.Attr("from") == mailDomain && strings.Contains(el.ChildText("", "body"), "private address")
		})
		if !strings.Contains(m.ChildText("", "body"), "not sent") {
			t.Errorf("the notice does not say the password stayed: %s", m)
		}
		appendIMAP(t, dove.Addr, "carol", "imap-pw", "From: dan@example.com\r\nSubject: second\r\n\r\nNot read any more\r\n")
		carol.ExpectNone(t, wait/5, "a mail read from a private address", mailFrom("dan%example.com@"+mailDomain, "Not read any more"))
		if after, _ := proxy.seen(); after != before {
			t.Errorf("%d connections to the private address after the restart", after-before)
		}
	})
}

// withVar returns a copy of m with k set to v.
func withVar(m map[string]string, k, v string) map[string]string {
	c := make(map[string]string, len(m)+1)
	for key, val := range m {
		c[key] = val
	}
	c[k] = v
	return c
}

// openSession is a relay session without AUTH: a server that takes mail
// from anyone who can reach it (like a local MTA trusting the gateway).
type openSession struct {
	s        *relaySink
	from, to string
}

func (o *openSession) Reset()        {}
func (o *openSession) Logout() error { return nil }
func (o *openSession) Mail(from string, _ *smtp.MailOptions) error {
	o.from = from
	return nil
}
func (o *openSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	o.to = to
	return nil
}
func (o *openSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	o.s.mu.Lock()
	o.s.mails = append(o.s.mails, sinkMail{from: o.from, to: o.to, raw: raw})
	o.s.mu.Unlock()
	o.s.got <- struct{}{}
	return nil
}

// startOpenSink starts a plain SMTP server that offers no AUTH.
func startOpenSink(t *testing.T) *relaySink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &relaySink{addr: ln.Addr().String(), flaky: map[string]int{}, got: make(chan struct{}, 100)}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &openSession{s: s}, nil }))
	srv.Domain = "open.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

// senders returns the envelope senders of the mails s received.
func (s *relaySink) senders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var from []string
	for _, m := range s.mails {
		from = append(from, m.from)
	}
	return from
}

// A user's own SMTP server must take the user's login at registration;
// mail then goes through it as that user. The operator's relay always
// sends from the hosted address, and cannot be named as one's own server.
func TestMailboxSubmissionVerified(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	relay := startOpenSink(t)
	env := mailEnv(t, srv)
	env["PASSERELLE_SMTP_RELAY"] = "smtp://" + relay.addr
	env["PASSERELLE_MAILBOX_ALLOW_PRIVATE"] = "true" // the test servers are on loopback
	e := startGateway(t, srv, env)
	open := startOpenSink(t)
	submission := startSink(t) // AUTH PLAIN with the password smtp-pw
	carol := e.dial(t, "carol@localhost")
	own := func(server, password, email string) []string {
		return []string{"address", "carol", "smtp_server", server, "smtp_username", "carol-smtp", "smtp_password", password, "email", email}
	}

	t.Run("server without AUTH", func(t *testing.T) {
		text := refusal(t, carol, "a submission server without AUTH", own(open.addr, "smtp-pw", "boss@corp.example")...)
		if !strings.Contains(text, "does not ask for a login") {
			t.Errorf("got %q", text)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		text := refusal(t, carol, "a refused login", own(submission.addr, "wrong", "carol@example.net")...)
		if !strings.Contains(text, "refused the login") {
			t.Errorf("got %q", text)
		}
	})
	t.Run("the operator's relay as one's own", func(t *testing.T) {
		refusal(t, carol, "the gateway's relay as own server", own(relay.addr, "smtp-pw", "boss@corp.example")...)
	})
	t.Run("verified server", func(t *testing.T) {
		wantResult(t, register(carol, t, mailDomain, own(submission.addr, "smtp-pw", "carol@example.net")...), "a verified server")
		carol.Send(t, "<message to='dan%%example.com@%s' type='chat' id='v1'><body>Through my own server</body></message>", mailDomain)
		m := submission.waitMail(t, wait, "dan@example.com", "Through my own server")
		if m.user != "carol-smtp" || m.from != "carol@example.net" {
			t.Errorf("AUTH as %q, MAIL FROM %q", m.user, m.from)
		}
	})
	t.Run("relay sender is the hosted address", func(t *testing.T) {
		dave := e.dial(t, "dave@localhost")
		wantResult(t, register(dave, t, mailDomain, "address", "dave", "email", "boss@corp.example"), "register dave")
		dave.Send(t, "<message to='dan%%example.com@%s' type='chat' id='r1'><body>Through the relay</body></message>", mailDomain)
		m := relay.waitMail(t, wait, "dan@example.com", "Through the relay")
		if m.from != "dave@"+mailDomain || header(m.raw, "From") != "<dave@"+mailDomain+">" {
			t.Errorf("MAIL FROM %q, From %q", m.from, header(m.raw, "From"))
		}
		for _, from := range append(relay.senders(), open.senders()...) {
			if from != "dave@"+mailDomain {
				t.Errorf("a mail from %q left through a server that did not authenticate its sender", from)
			}
		}
	})
}

// insecureCount reads passerelle_insecure_deliveries_total of the mail
// component from /metrics (-1 when absent).
func insecureCount(t *testing.T, e *gwEnv) int {
	t.Helper()
	resp, err := http.Get("http://" + e.env["PASSERELLE_HTTP_LISTEN"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var n int
	for _, line := range strings.Split(string(body), "\n") {
		if _, err := fmt.Sscanf(line, `passerelle_insecure_deliveries_total{domain="`+mailDomain+`"} %d`, &n); err == nil {
			return n
		}
	}
	return -1
}

// The operator's relay with credentials: on loopback a relay without TLS
// still gets them (the exemption); a STARTTLS relay whose certificate does
// not verify gets nothing, and the refusal is logged and counted in
// /metrics. (A relay off loopback without STARTTLS cannot be reached from
// a test here; the unit test TestRelayCredentialsNeedTLS drives it.)
func TestRelayCredentialsTLS(t *testing.T) {
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain}})
	plain := startSink(t) // no TLS; AUTH allowed in clear
	env := mailEnv(t, srv)
	env["PASSERELLE_SMTP_RELAY"] = "smtp://relay-user:smtp-pw@" + plain.addr
	e := startGateway(t, srv, env)
	top := t
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register alice")

	t.Run("loopback relay without TLS", func(t *testing.T) {
		alice.Send(t, "<message to='bob%%example.com@%s' type='chat' id='p1'><body>Local relay</body></message>", mailDomain)
		if m := plain.waitMail(t, wait, "bob@example.com", "Local relay"); m.user != "relay-user" {
			t.Errorf("AUTH as %q", m.user)
		}
	})

	t.Run("STARTTLS with an untrusted certificate", func(t *testing.T) {
		impostor := startSinkTLS(t, emailtest.NewCA(t, "Unknown CA").ServerTLS(t), false)
		e.restart(t, top, withVar(env, "PASSERELLE_SMTP_RELAY", "smtp://relay-user:smtp-pw@"+impostor.addr))
		alice.Send(t, "<message to='bob%%example.com@%s' type='chat' id='p2'><body>Not for an impostor</body></message>", mailDomain)
		m := alice.Expect(t, wait, "the refusal", func(el *xmlel.Element) bool {
			return harness.IsMessage(el) && el.Attr("type") == "error" && el.Attr("id") == "p2"
		})
		wantError(t, m, "not-acceptable", "untrusted STARTTLS relay")
		e.gw.WaitOutput(t, wait, `level=ERROR msg="mail delivery refused`)
		if n := insecureCount(t, e); n != 1 {
			t.Errorf("passerelle_insecure_deliveries_total = %d, want 1", n)
		}
		impostor.mu.Lock()
		defer impostor.mu.Unlock()
		if len(impostor.mails) != 0 {
			t.Errorf("%d mails reached the impostor", len(impostor.mails))
		}
	})
}
