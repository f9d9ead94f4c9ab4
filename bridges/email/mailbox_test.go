package email

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"passerelle/bridges/bridgetest"
	"passerelle/bridges/email/emailtest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// memIMAP is go-imap's in-memory server on a fixed loopback address that
// can be stopped and started again.
type memIMAP struct {
	addr  string
	mem   *imapmemserver.Server
	user  *imapmemserver.User
	srv   *imapserver.Server
	mu    sync.Mutex
	conns []net.Conn
	// wrap, when set, wraps each new session (a server's faults).
	wrap func(imapserver.Session) imapserver.Session
	// With serverTLS the server offers STARTTLS and refuses a login in
	// clear; clientTLS is what appendMail trusts then.
	serverTLS, clientTLS *tls.Config
}

// trackingListener remembers accepted connections so that stop can cut
// them all (a server outage as clients see it).
type trackingListener struct {
	net.Listener
	m *memIMAP
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.m.mu.Lock()
		l.m.conns = append(l.m.conns, c)
		l.m.mu.Unlock()
	}
	return c, err
}

func startMemIMAP(t *testing.T) *memIMAP { return startMemIMAPB(t) }

func startMemIMAPB(t testing.TB) *memIMAP { return startMemIMAPTLS(t, nil, nil) }

// startMemIMAPTLS starts a server offering STARTTLS with serverTLS (none
// when nil); the test's own client trusts clientTLS.
func startMemIMAPTLS(t testing.TB, serverTLS, clientTLS *tls.Config) *memIMAP {
	m := &memIMAP{mem: imapmemserver.New(), user: imapmemserver.NewUser("bob", "secret"), serverTLS: serverTLS, clientTLS: clientTLS}
	if err := m.user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	m.mem.AddUser(m.user)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = ln.Addr().String()
	m.serve(ln)
	t.Cleanup(func() { m.srv.Close() })
	return m
}

func (m *memIMAP) serve(ln net.Listener) {
	m.srv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			var s imapserver.Session = emailtest.FlushingSession{Session: m.mem.NewSession()}
			m.mu.Lock()
			wrap := m.wrap
			m.mu.Unlock()
			if wrap != nil {
				s = wrap(s)
			}
			return s, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}},
		InsecureAuth: m.serverTLS == nil,
		TLSConfig:    m.serverTLS,
		Logger:       log.New(io.Discard, "", 0),
	})
	go m.srv.Serve(trackingListener{ln, m})
}

func (m *memIMAP) stop() {
	m.srv.Close()
	m.mu.Lock()
	for _, c := range m.conns {
		c.Close()
	}
	m.conns = nil
	m.mu.Unlock()
}

func (m *memIMAP) restart(t *testing.T) {
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	m.serve(ln)
}

// appendMail puts a mail into INBOX with a real IMAP client.
func (m *memIMAP) appendMail(t *testing.T, subject, body string) {
	t.Helper()
	var c *imapclient.Client
	var err error
	if m.clientTLS != nil {
		c, err = imapclient.DialStartTLS(m.addr, &imapclient.Options{TLSConfig: m.clientTLS})
	} else {
		c, err = imapclient.DialInsecure(m.addr, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("bob", "secret").Wait(); err != nil {
		t.Fatal(err)
	}
	raw := fmt.Sprintf("From: carol@example.com\r\nSubject: %s\r\nMessage-ID: <%s@example.com>\r\n\r\n%s\r\n", subject, strings.ReplaceAll(subject, " ", "."), body)
	cmd := c.Append("INBOX", int64(len(raw)), nil)
	cmd.Write([]byte(raw))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// nextChat waits for the next chat message the bridge sends, skipping
// other stanzas.
func nextChat(t *testing.T, h *bridgetest.Host) *xmlel.Element {
	t.Helper()
	for {
		st := h.Next(t)
		if st.Local == "message" && st.Attr("type") == "chat" {
			return st
		}
	}
}

func mailboxValues(addr, password string) map[string]string {
	return map[string]string{"address": "bob", "imap_server": addr, "imap_username": "bob", "imap_password": password}
}

func testMailbox(t *testing.T, noIdle bool) {
	m := startMemIMAP(t)
	m.appendMail(t, "old mail", "already there before registration")
	b, h := startBridge(t, Options{PollInterval: 100 * time.Millisecond}, nil)
	b.noIdle = noIdle
	ctx := context.Background()
	user := "bob@example.org"

	// Bad credentials are refused at registration.
	_, err := b.Register(ctx, user, mailboxValues(m.addr, "wrong"), nil)
	if e, ok := err.(*stanza.Error); !ok || e.Condition != "not-acceptable" || !strings.Contains(e.Text, "mailbox") {
		t.Fatalf("bad password: got %v", err)
	}
	reg, err := b.Register(ctx, user, mailboxValues(m.addr, "secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.St.PutRegistration(ctx, testDomain, user, reg.Fields, reg.Claims); err != nil {
		t.Fatal(err)
	}
	// Wait until the watcher has recorded its starting point, then add mail.
	waitPos(t, b, user, func(p imapPos) bool { return p.LastUID == 1 })
	m.appendMail(t, "first", "hello from the mailbox")
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "hello from the mailbox") || st.Attr("from") != "carol%example.com@"+testDomain {
		t.Fatalf("got %s", st)
	}
	m.appendMail(t, "second", "second mail")
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "second mail") {
		t.Fatalf("got %s", st)
	}

	// Reconnect: mail that arrives while the connection is down is
	// forwarded once, when it comes back.
	m.stop()
	m.appendMailDirect(t, "while away", "arrived during the outage")
	m.restart(t)
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "arrived during the outage") {
		t.Fatalf("got %s", st)
	}

	// UIDVALIDITY change: the user is told, old mail is not forwarded again.
	m.stop()
	m.user.Delete("INBOX")
	m.user.Create("INBOX", nil)
	m.appendMailDirect(t, "renumbered", "in the new mailbox")
	m.restart(t)
	st := nextChat(t, h)
	if st.Attr("from") != testDomain || !strings.Contains(st.ChildText("", "body"), "UIDVALIDITY") {
		t.Fatalf("got %s", st)
	}
	m.appendMail(t, "after", "after the renumbering")
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "after the renumbering") {
		t.Fatalf("got %s (the mail already in the renumbered mailbox was forwarded again?)", st)
	}

	// A restart of the bridge resumes where it was: nothing twice.
	b.stopWatcher(user)
	m.appendMail(t, "during restart", "sent while the bridge was stopped")
	b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "sent while the bridge was stopped") {
		t.Fatalf("got %s", st)
	}

	// A password that stops working is reported to the user.
	b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "changed"})
	st = nextChat(t, h)
	if st.Attr("from") != testDomain || !strings.Contains(st.ChildText("", "body"), "refused the login") {
		t.Fatalf("got %s", st)
	}
	b.Unregistered(ctx, user)
	if _, ok, _ := b.loadPos(ctx, user); ok {
		t.Fatal("position kept after unregistration")
	}
}

// appendMailDirect adds a mail through the server's backend (while the
// IMAP listener is down).
func (m *memIMAP) appendMailDirect(t *testing.T, subject, body string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tmp := &memIMAP{addr: ln.Addr().String(), mem: m.mem, user: m.user}
	tmp.serve(ln)
	defer tmp.srv.Close()
	tmp.appendMail(t, subject, body)
}

func waitPos(t *testing.T, b *Bridge, user string, ok func(imapPos) bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if p, found, _ := b.loadPos(context.Background(), user); found && ok(p) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the watcher did not record its position")
}

func TestMailboxIdle(t *testing.T) { testMailbox(t, false) }
func TestMailboxPoll(t *testing.T) { testMailbox(t, true) }

// A watcher left behind by a registration that was not saved stops at the
// first mail instead of forwarding it.
func TestMailboxWatcherWithoutRegistration(t *testing.T) {
	m := startMemIMAP(t)
	b, h := startBridge(t, Options{}, nil)
	if _, err := b.Register(context.Background(), "ghost@example.org", mailboxValues(m.addr, "secret"), nil); err != nil {
		t.Fatal(err)
	}
	// A mail that arrives before the watcher's first look at the mailbox
	// is old mail to it: wait for that look, so this one is new.
	waitPos(t, b, "ghost@example.org", func(imapPos) bool { return true })
	m.appendMail(t, "to nobody", "must not be forwarded")
	for i := 0; ; i++ {
		b.mu.Lock()
		n := len(b.watchers)
		b.mu.Unlock()
		if n == 0 {
			break
		}
		if i > 1500 {
			t.Fatal("the watcher keeps running")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sent := h.Stanzas(); len(sent) != 0 {
		t.Fatalf("sent %s", sent[0])
	}
}

// Run returns once the mailbox watchers have stopped, so the store can be
// closed after it (the queue: TestRunnerStopRecords in bridges).
func TestRunStopsWatchers(t *testing.T) {
	m := startMemIMAP(t)
	b := New(Options{Domain: testDomain, AllowPrivate: true})
	h := newFakeHost(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := start(t, ctx, b, h)
	b.startWatcher("bob@example.org", mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
	waitPos(t, b, "bob@example.org", func(imapPos) bool { return true })
	b.mu.Lock()
	w := b.watchers["bob@example.org"]
	b.mu.Unlock()
	cancel()
	wait()
	select {
	case <-w.done:
	default:
		t.Error("the watcher still runs after Run returned")
	}
}
