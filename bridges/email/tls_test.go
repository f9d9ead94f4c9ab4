package email

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/bridges/email/emailtest"
	"passerelle/component/stanza"
)

// testPKI is a throwaway CA and a certificate it signed for 127.0.0.1,
// ::1 and localhost.
type testPKI struct {
	roots  *x509.CertPool
	server *tls.Config // the servers' side
}

// client is the TLS configuration of a client trusting the CA only.
func (p *testPKI) client() *tls.Config { return &tls.Config{RootCAs: p.roots} }

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca := emailtest.NewCA(t, "Passerelle test CA")
	return &testPKI{roots: ca.Roots, server: ca.ServerTLS(t)}
}

// tlsRelay is an SMTP server with TLS (STARTTLS, or implicit TLS) that
// wants AUTH PLAIN (user "u", password "pw") and never allows it in clear.
type tlsRelay struct {
	addr  string
	mu    sync.Mutex
	mails []tlsMail
	got   chan tlsMail
	auths int // successful logins
}

type tlsMail struct {
	to   string
	tls  bool // the session ran over TLS
	user string
}

func startTLSRelay(t *testing.T, cfg *tls.Config, implicit bool) *tlsRelay {
	t.Helper()
	var ln net.Listener
	var err error
	if implicit {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &tlsRelay{addr: ln.Addr().String(), got: make(chan tlsMail, 10)}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &tlsSession{r: r, c: c}, nil }))
	s.Domain = "relay.test"
	s.ErrorLog = log.New(io.Discard, "", 0)
	s.AllowInsecureAuth = cfg == nil // so that a login in clear would succeed
	if cfg != nil && !implicit {
		s.TLSConfig = cfg
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return r
}

type tlsSession struct {
	r        *tlsRelay
	c        *smtp.Conn
	user, to string
}

func (s *tlsSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *tlsSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, password string) error {
		if user != "u" || password != "pw" {
			return smtp.ErrAuthFailed
		}
		s.user = user
		s.r.mu.Lock()
		s.r.auths++
		s.r.mu.Unlock()
		return nil
	}), nil
}
func (s *tlsSession) Reset()                               {}
func (s *tlsSession) Logout() error                        { return nil }
func (s *tlsSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *tlsSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = to
	return nil
}
func (s *tlsSession) Data(rd io.Reader) error {
	io.Copy(io.Discard, rd)
	_, isTLS := s.c.TLSConnectionState()
	m := tlsMail{to: s.to, tls: isTLS, user: s.user}
	s.r.mu.Lock()
	s.r.mails = append(s.r.mails, m)
	s.r.mu.Unlock()
	s.r.got <- m
	return nil
}

func (r *tlsRelay) count() (mails, auths int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.mails), r.auths
}

func waitTLSMail(t *testing.T, r *tlsRelay) tlsMail {
	t.Helper()
	select {
	case m := <-r.got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no mail reached the server")
		return tlsMail{}
	}
}

// The gateway's relay: STARTTLS and implicit TLS (smtps) with a verified
// certificate; an untrusted certificate fails at once, reported to the
// sender, and nothing is sent.
func TestRelayTLS(t *testing.T) {
	pki := newTestPKI(t)
	for _, implicit := range []bool{false, true} {
		name := map[bool]string{false: "STARTTLS", true: "smtps"}[implicit]
		scheme := map[bool]string{false: "smtp", true: "smtps"}[implicit]
		t.Run(name, func(t *testing.T) {
			r := startTLSRelay(t, pki.server, implicit)
			b, _ := startBridge(t, Options{Relay: scheme + "://u:pw@" + r.addr, TLSConfig: pki.client()}, nil)
			b.Handle(context.Background(), alice(), chat("bob%example.com", "t1", "over TLS"))
			if m := waitTLSMail(t, r); !m.tls || m.user != "u" || m.to != "bob@example.com" {
				t.Fatalf("got %+v", m)
			}
		})
		t.Run(name+" untrusted", func(t *testing.T) {
			r := startTLSRelay(t, pki.server, implicit)
			// No test roots: the system's roots do not know the test CA.
			b, h := startBridge(t, Options{Relay: scheme + "://u:pw@" + r.addr}, nil)
			b.Handle(context.Background(), alice(), chat("bob%example.com", "t2", "not to an impostor"))
			e := errorFor(t, h, "t2")
			if e.Condition != "not-acceptable" || e.Type != "cancel" || !strings.Contains(e.Text, "not trusted") || !strings.Contains(e.Text, r.addr) {
				t.Fatalf("got %+v", e)
			}
			if mails, auths := r.count(); mails != 0 || auths != 0 {
				t.Fatalf("%d mails, %d logins reached an untrusted server", mails, auths)
			}
			// The job goes once the error is committed: no retry.
			for i := 0; ; i++ {
				_, ok, err := h.St.NextJobTime(context.Background(), testDomain)
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				if i == 500 {
					t.Fatal("the mail stays queued")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if mails, auths := r.count(); mails != 0 || auths != 0 {
				t.Fatalf("%d mails, %d logins reached an untrusted server", mails, auths)
			}
		})
	}
}

// ownSender is a mailbox-mode user sending through her own server.
func ownSender(t *testing.T, h *bridgetest.Host, server string) *bridges.User {
	t.Helper()
	f := map[string]string{"address": "alice", "smtp_server": server, "smtp_username": "u", "smtp_password": "pw", "email": "alice@example.net"}
	if err := h.St.PutRegistration(context.Background(), testDomain, "alice@example.org", f, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	return &bridges.User{JID: "alice@example.org", Full: "alice@example.org/phone",
		Registration: &bridges.Registration{JID: "alice@example.org", Fields: f}}
}

// A user's own submission server: STARTTLS used when offered (even on
// loopback), and a server that is not local and offers no TLS never gets
// the password.
func TestOwnServerTLS(t *testing.T) {
	pki := newTestPKI(t)
	remote := func(string) bool { return false } // every server is "remote"
	t.Run("STARTTLS", func(t *testing.T) {
		r := startTLSRelay(t, pki.server, false)
		b, h := startBridge(t, Options{TLSConfig: pki.client()}, nil)
		b.isLocal = remote
		b.Handle(context.Background(), ownSender(t, h, r.addr), chat("bob%example.com", "o1", "through my server"))
		if m := waitTLSMail(t, r); !m.tls || m.user != "u" {
			t.Fatalf("got %+v", m)
		}
	})
	t.Run("no TLS, not local", func(t *testing.T) {
		r := startTLSRelay(t, nil, false)
		b, h := startBridge(t, Options{TLSConfig: pki.client()}, nil)
		b.isLocal = remote
		b.Handle(context.Background(), ownSender(t, h, r.addr), chat("bob%example.com", "o2", "not in clear"))
		e := errorFor(t, h, "o2")
		if e.Condition != "not-acceptable" || !strings.Contains(e.Text, "offers no TLS") {
			t.Fatalf("got %+v", e)
		}
		if mails, auths := r.count(); mails != 0 || auths != 0 {
			t.Fatalf("%d mails, %d logins without TLS", mails, auths)
		}
	})
}

// A user's IMAP server: STARTTLS with a verified certificate; an untrusted
// certificate or a remote server without TLS is refused at registration,
// and a watcher meeting one tells the user once.
func TestIMAPTLS(t *testing.T) {
	pki := newTestPKI(t)
	ctx := context.Background()
	user := "bob@example.org"
	t.Run("STARTTLS", func(t *testing.T) {
		m := startMemIMAPTLS(t, pki.server, pki.client())
		b, h := startBridge(t, Options{TLSConfig: pki.client()}, nil)
		b.isLocal = func(string) bool { return false }
		reg, err := b.Register(ctx, user, mailboxValues(m.addr, "secret"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.St.PutRegistration(ctx, testDomain, user, reg.Fields, reg.Claims); err != nil {
			t.Fatal(err)
		}
		waitPos(t, b, user, func(imapPos) bool { return true })
		m.appendMail(t, "secure", "read over TLS")
		if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "read over TLS") {
			t.Fatalf("got %s", st)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		m := startMemIMAPTLS(t, pki.server, pki.client())
		b, h := startBridge(t, Options{}, nil)
		_, err := b.Register(ctx, user, mailboxValues(m.addr, "secret"), nil)
		if e, ok := err.(*stanza.Error); !ok || e.Condition != "not-acceptable" || !strings.Contains(e.Text, "not trusted") {
			t.Fatalf("got %v", err)
		}
		b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
		defer b.stopWatcher(user)
		st := nextChat(t, h)
		if st.Attr("from") != testDomain || !strings.Contains(st.ChildText("", "body"), "not trusted") {
			t.Fatalf("got %s", st)
		}
	})
	t.Run("no TLS, not local", func(t *testing.T) {
		m := startMemIMAPTLS(t, nil, nil)
		b, h := startBridge(t, Options{TLSConfig: pki.client()}, nil)
		b.isLocal = func(string) bool { return false }
		_, err := b.Register(ctx, user, mailboxValues(m.addr, "secret"), nil)
		if e, ok := err.(*stanza.Error); !ok || e.Condition != "not-acceptable" || !strings.Contains(e.Text, "offers no TLS") {
			t.Fatalf("got %v", err)
		}
		b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
		defer b.stopWatcher(user)
		st := nextChat(t, h)
		if st.Attr("from") != testDomain || !strings.Contains(st.ChildText("", "body"), "offers no TLS") {
			t.Fatalf("got %s", st)
		}
	})
}
