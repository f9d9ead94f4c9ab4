package email

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/component/stanza"
)

// nameResolver resolves every name to 127.0.0.1 and counts the lookups.
type nameResolver struct{ lookups atomic.Int64 }

func (r *nameResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	r.lookups.Add(1)
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

// named replaces the host of a loopback address with a name only the
// test's resolver knows.
func named(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort("mail.test", port)
}

// Users' own servers on private addresses: refused at registration and at
// each later connection, before any connection; allowed, the gateway dials
// the address it checked (the system cannot resolve the name).
func TestUserServerPrivate(t *testing.T) {
	ctx := context.Background()
	m := startMemIMAP(t)
	sub := startTLSRelay(t, nil, false)
	imapCount := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.conns)
	}

	t.Run("refused", func(t *testing.T) {
		r := &nameResolver{}
		b, h := startBridgeWith(t, Options{}, nil, r)
		_, err := b.Register(ctx, "bob@example.org", mailboxValues(named(m.addr), "secret"), nil)
		if e, ok := err.(*stanza.Error); !ok || e.Condition != "not-acceptable" || !strings.Contains(e.Text, "private address 127.0.0.1") {
			t.Fatalf("IMAP: got %v", err)
		}
		_, err = b.Register(ctx, "alice@example.org", map[string]string{"address": "alice", "smtp_server": named(sub.addr),
			"smtp_username": "u", "smtp_password": "pw", "email": "alice@example.net"}, nil)
		if e, ok := err.(*stanza.Error); !ok || e.Condition != "not-acceptable" || !strings.Contains(e.Text, "private address 127.0.0.1") {
			t.Fatalf("SMTP: got %v", err)
		}
		// A registration stored earlier (while allowed) is checked again
		// at each connection: the watcher and the queue refuse it too.
		b.startWatcher("bob@example.org", mailboxConfig{IMAPServer: named(m.addr), IMAPUser: "bob", IMAPPassword: "secret"})
		defer b.stopWatcher("bob@example.org")
		if st := nextChat(t, h); st.Attr("from") != testDomain || !strings.Contains(st.ChildText("", "body"), "private address") {
			t.Fatalf("got %s", st)
		}
		b.Handle(ctx, ownSender(t, h, named(sub.addr)), chat("bob%example.com", "p1", "not to my network"))
		if e := errorFor(t, h, "p1"); e.Condition != "not-acceptable" || !strings.Contains(e.Text, "private address") {
			t.Fatalf("got %+v", e)
		}
		if n, _ := sub.count(); n != 0 || imapCount() != 0 || r.lookups.Load() < 4 {
			t.Fatalf("%d mails, %d IMAP connections, %d lookups", n, imapCount(), r.lookups.Load())
		}
	})

	t.Run("allowed", func(t *testing.T) {
		r := &nameResolver{}
		b, h := startBridgeWith(t, Options{AllowPrivate: true}, nil, r)
		b.isLocal = func(string) bool { return true } // no TLS needed: the servers are on loopback
		if _, err := b.Register(ctx, "bob@example.org", mailboxValues(named(m.addr), "secret"), nil); err != nil {
			t.Fatal(err)
		}
		b.Handle(ctx, ownSender(t, h, named(sub.addr)), chat("bob%example.com", "p2", "through the checked address"))
		if got := waitTLSMail(t, sub); got.user != "u" {
			t.Fatalf("got %+v", got)
		}
		if r.lookups.Load() < 2 || imapCount() == 0 {
			t.Fatalf("%d lookups, %d IMAP connections", r.lookups.Load(), imapCount())
		}
	})
}

// Whatever answers at a user's server address (nothing, a closed
// connection, another protocol's banner), registration says the same.
func TestUserServerGenericError(t *testing.T) {
	ctx := context.Background()
	b, _ := startBridge(t, Options{CheckTimeout: 2 * time.Second}, nil)
	listen := func(serve func(net.Conn)) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					serve(c)
				}()
			}
		}()
		return ln.Addr().String()
	}
	closed := listen(func(net.Conn) {})
	banner := listen(func(c net.Conn) {
		c.Write([]byte("SSH-2.0-OpenSSH_9.2p1\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
	})
	silent := listen(func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := ln.Addr().String()
	ln.Close()
	for _, field := range []string{"imap_server", "smtp_server"} {
		var first string
		for name, addr := range map[string]string{"closed": closed, "refused": refusedAddr, "banner": banner, "silent": silent} {
			v := map[string]string{"address": "bob", field: addr, "imap_username": "bob", "imap_password": "pw", "email": "bob@example.net"}
			_, err := b.Register(ctx, "bob@example.org", v, nil)
			e, ok := err.(*stanza.Error)
			if !ok || e.Condition != "not-acceptable" {
				t.Fatalf("%s at %s: got %v", field, name, err)
			}
			if first == "" {
				first = e.Text
			}
			if e.Text != first || strings.Contains(e.Text, "SSH") || strings.Contains(e.Text, "refused") || strings.Contains(e.Text, "EOF") {
				t.Errorf("%s at %s: %q (first: %q)", field, name, e.Text, first)
			}
		}
	}
}

// The operator's relay with credentials: off loopback, a relay without
// STARTTLS never gets them; the mail stays queued, and the refusal is
// counted. On loopback, or without credentials, plain SMTP is used.
func TestRelayCredentialsNeedTLS(t *testing.T) {
	for _, tc := range []struct {
		name         string
		creds, local bool
		delivered    bool
	}{
		{"credentials, not local", true, false, false},
		{"credentials, loopback", true, true, true},
		{"no credentials, not local", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startTLSRelay(t, nil, false) // no TLS; AUTH in clear accepted
			url := "smtp://" + r.addr
			if tc.creds {
				url = "smtp://u:pw@" + r.addr
			}
			var insecure atomic.Int64
			b := New(Options{Domain: testDomain, Relay: url, Insecure: &insecure})
			if !tc.local {
				b.isLocal = func(string) bool { return false }
			}
			h := newFakeHost(t, b)
			ctx, cancel := context.WithCancel(context.Background())
			wait := start(t, ctx, b, h)
			t.Cleanup(func() { cancel(); wait() })
			b.Handle(ctx, alice(), chat("bob%example.com", "c1", "the relay's password"))
			if tc.delivered {
				m := waitTLSMail(t, r)
				if tc.creds != (m.user == "u") {
					t.Fatalf("got %+v", m)
				}
				return
			}
			for i := 0; insecure.Load() < 2; i++ { // the first try and a retry
				if mails, auths := r.count(); mails != 0 || auths != 0 {
					t.Fatalf("%d mails, %d logins in clear", mails, auths)
				}
				if i == 1000 {
					t.Fatal("the refusal was not counted at two tries (the mail was not kept queued)")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if mails, auths := r.count(); mails != 0 || auths != 0 {
				t.Fatalf("%d mails, %d logins in clear", mails, auths)
			}
			if _, ok, err := h.St.NextJobTime(ctx, testDomain); err != nil || !ok {
				t.Fatalf("the mail is no longer queued (%v)", err)
			}
			for _, st := range h.Stanzas() {
				if st.Attr("type") == "error" {
					t.Fatalf("the sender got an error for a mail that waits: %s", st)
				}
			}
		})
	}
}
