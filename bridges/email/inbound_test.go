package email

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"passerelle/store/storetest"
)

// submit sends raw from a real SMTP client and returns the refusal, if any.
func submit(addr, from string, to []string, raw string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
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
	io.WriteString(w, strings.ReplaceAll(raw, "\n", "\r\n"))
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func code(err error) (int, smtp.EnhancedCode) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, se.EnhancedCode
	}
	return 0, smtp.EnhancedCode{}
}

func TestInboundRefusals(t *testing.T) {
	b, h := startBridge(t, Options{Listen: "127.0.0.1:0", MaxSize: 2000, MaxRecipients: 2},
		map[string]string{"alice@example.org": "alice", "bob@example.org": "bob", "banned@example.org": "banned", "carol@example.org": "carol"})
	addr := b.smtpAddr
	ctx := context.Background()
	if err := h.St.SetSetting(ctx, testDomain, "carol@example.org", settingAcceptMail, "false"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		to   []string
		raw  string
		code int
		enh  smtp.EnhancedCode
	}{
		{"unknown user", []string{"nobody@" + testDomain}, "x\n", 550, smtp.EnhancedCode{5, 1, 1}},
		{"other domain", []string{"alice@example.net"}, "x\n", 550, smtp.EnhancedCode{5, 7, 1}},
		{"no domain", []string{"alice"}, "x\n", 501, smtp.EnhancedCode{5, 5, 2}},
		{"user not allowed", []string{"banned@" + testDomain}, "x\n", 550, smtp.EnhancedCode{5, 1, 1}},
		{"mail turned off", []string{"carol@" + testDomain}, "x\n", 550, smtp.EnhancedCode{5, 2, 1}},
		{"oversize", []string{"alice@" + testDomain}, "Subject: big\n\n" + strings.Repeat("yyyyyyyyy\n", 300) + "\n", 552, smtp.EnhancedCode{5, 3, 4}},
		{"too many recipients", []string{"alice@" + testDomain, "bob@" + testDomain, "alice+x@" + testDomain}, "x\n", 452, smtp.EnhancedCode{4, 5, 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := submit(addr, "x@example.com", c.to, c.raw)
			got, enh := code(err)
			if got != c.code || enh != c.enh {
				t.Fatalf("got %v, want %d %v", err, c.code, c.enh)
			}
		})
	}
	if n, _ := h.St.CountStanzas(ctx, testDomain); n != 0 {
		t.Fatalf("%d stanzas queued by refused mail", n)
	}
	// Accepted afterwards; a subaddress reaches its owner.
	if err := submit(addr, "x@example.com", []string{"Alice+News@" + testDomain}, "From: x@example.com\n\nhello\n"); err != nil {
		t.Fatal(err)
	}
	if st := h.Next(t); st.Attr("to") != "alice@example.org" || st.ChildText("", "body") != unverifiedMark+"\nhello" {
		t.Fatalf("got %s", st)
	}

	t.Run("store failure answers 451", func(t *testing.T) {
		h.SetFail(errors.New("disk full"))
		defer h.SetFail(nil)
		err := submit(addr, "x@example.com", []string{"alice@" + testDomain}, "From: x@example.com\n\nhello\n")
		if c, _ := code(err); c != 451 {
			t.Fatalf("got %v, want 451", err)
		}
	})

	t.Run("data before recipients", func(t *testing.T) {
		c, err := smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Rcpt("alice@"+testDomain, nil); err == nil {
			t.Fatal("RCPT before MAIL accepted")
		}
	})
}

func TestInboundConnectionLimit(t *testing.T) {
	b, _ := startBridge(t, Options{Listen: "127.0.0.1:0", MaxConnsPerClient: 1}, nil)
	first, err := net.Dial("tcp", b.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	greeting, _ := bufio.NewReader(first).ReadString('\n')
	if !strings.HasPrefix(greeting, "220") {
		t.Fatalf("greeting %q", greeting)
	}
	second, err := net.Dial("tcp", b.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	line, _ := bufio.NewReader(second).ReadString('\n')
	if !strings.HasPrefix(line, "421 4.7.0") {
		t.Fatalf("second connection got %q, want 421", line)
	}
	first.Close()
	// Once the first is gone, a new connection is served.
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", b.smtpAddr)
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if strings.HasPrefix(line, "220") {
			break
		}
		if i > 100 {
			t.Fatalf("still refused: %q", line)
		}
	}
}

// A mail for two users whose commit fails for the second one leaves
// nothing queued: the sender's retry gives each user the mail once.
func TestInboundTwoRecipientsAllOrNone(t *testing.T) {
	b, h := startBridge(t, Options{Listen: "127.0.0.1:0"}, map[string]string{"alice@example.org": "alice", "bob@example.org": "bob"})
	ctx := context.Background()
	// The outbox refuses bob's stanza.
	lift := storetest.Refuse(t, h.St.Store, storetest.Insert, "outbox", `to="bob@example.org"`)
	rcpts := []string{"alice@" + testDomain, "bob@" + testDomain}
	raw := "From: x@example.com\nSubject: both\n\nfor both of you\n"
	if c, _ := code(submit(b.smtpAddr, "x@example.com", rcpts, raw)); c != 451 {
		t.Fatalf("got %d, want 451", c)
	}
	if n, _ := h.St.CountStanzas(ctx, testDomain); n != 0 {
		t.Fatalf("%d stanzas queued by a failed mail", n)
	}
	lift()
	if err := submit(b.smtpAddr, "x@example.com", rcpts, raw); err != nil {
		t.Fatal(err)
	}
	items, err := h.St.PendingStanzas(ctx, testDomain, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, it := range items {
		for _, u := range []string{"alice@example.org", "bob@example.org"} {
			if strings.Contains(it.Stanza, `to="`+u+`"`) && strings.Contains(it.Stanza, "for both of you") {
				got[u]++
			}
		}
	}
	if len(items) != 2 || got["alice@example.org"] != 1 || got["bob@example.org"] != 1 {
		t.Fatalf("queued %d stanzas: %v", len(items), got)
	}
}

// After MaxRefusedRcpts refused recipients, the next refusal answers 421
// and closes the connection.
func TestInboundRefusedRecipientLimit(t *testing.T) {
	b, _ := startBridge(t, Options{Listen: "127.0.0.1:0", Inbound: InboundOptions{MaxRefusedRcpts: 3}},
		map[string]string{"alice@example.org": "alice"})
	c := mailSession(t, b.smtpAddr)
	// An accepted recipient does not count.
	if err := c.Rcpt("alice@"+testDomain, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if got, _ := code(c.Rcpt("nobody@"+testDomain, nil)); got != 550 {
			t.Fatalf("refusal %d: got %d, want 550", i+1, got)
		}
	}
	if got, enh := code(c.Rcpt("nobody2@"+testDomain, nil)); got != 421 || enh != (smtp.EnhancedCode{4, 7, 0}) {
		t.Fatalf("refusal past the limit: got %d %v, want 421 4.7.0", got, enh)
	}
	if err := c.Noop(); err == nil {
		t.Fatal("the connection is still open after the 421")
	}
}

// The global cap refuses a connection from any address once MaxConns are
// open; the relay's address is exempt from the per-client cap only.
func TestInboundGlobalCapAndRelayExemption(t *testing.T) {
	b, _ := startBridge(t, Options{Listen: "127.0.0.1:0", Relay: "smtp://127.0.0.1:25", MaxConnsPerClient: 1,
		Inbound: InboundOptions{MaxConns: 3}}, nil)
	dial := func(local string) (net.Conn, string) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", b.smtpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		line, _ := bufio.NewReader(c).ReadString('\n')
		return c, line
	}
	// The relay (127.0.0.1) holds two connections, over the per-client cap.
	for i := range 2 {
		if _, line := dial("127.0.0.1"); !strings.HasPrefix(line, "220") {
			t.Fatalf("relay connection %d: %q", i+1, line)
		}
	}
	// Another client gets one, then the per-client cap.
	if _, line := dial("127.0.0.2"); !strings.HasPrefix(line, "220") {
		t.Fatalf("first connection of 127.0.0.2: %q", line)
	}
	// All three are taken: everyone is refused, the relay too.
	for _, ip := range []string{"127.0.0.3", "127.0.0.1"} {
		if _, line := dial(ip); line != "421 4.7.0 Too many connections, try again later\r\n" {
			t.Fatalf("%s past the global cap: %q", ip, line)
		}
	}
}

// An idle client is closed with 421 after the timeout, and its connection
// no longer counts.
func TestInboundIdleTimeout(t *testing.T) {
	b, _ := startBridge(t, Options{Listen: "127.0.0.1:0", MaxConnsPerClient: 1,
		Inbound: InboundOptions{Timeout: 300 * time.Millisecond}}, nil)
	c, err := net.Dial("tcp", b.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "220") {
		t.Fatalf("greeting %q", line)
	}
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "421 4.4.2") {
		t.Fatalf("after idling: %q, want 421 4.4.2", line)
	}
	if _, err := r.ReadString('\n'); err != io.EOF {
		t.Fatalf("connection not closed: %v", err)
	}
	if got, _ := code(submit(b.smtpAddr, "x@example.com", []string{"nobody@" + testDomain}, "x\n")); got != 550 {
		t.Fatalf("after the timeout, a new connection: got %d, want the 550 of an unknown user", got)
	}
}

// The relay given by name is exempt once resolved; when it cannot be
// resolved, its connections get the per-client cap like any other.
func TestInboundRelayByName(t *testing.T) {
	dns := fakeDNS{"ip:relay.test": {"127.0.0.1"}}
	for _, c := range []struct {
		relay, second string
	}{{"smtp://relay.test:25", "220"}, {"smtp://unknown.test:25", "421 4.7.0 Too many connections from your address"}} {
		t.Run(c.relay, func(t *testing.T) {
			b, _ := startBridge(t, Options{Listen: "127.0.0.1:0", Relay: c.relay, MaxConnsPerClient: 1,
				Inbound: InboundOptions{MaxConns: 5, Resolver: dns}}, nil)
			var lines []string
			for range 2 {
				conn, err := net.Dial("tcp", b.smtpAddr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				line, _ := bufio.NewReader(conn).ReadString('\n')
				lines = append(lines, line)
			}
			if !strings.HasPrefix(lines[0], "220") || !strings.HasPrefix(lines[1], c.second) {
				t.Fatalf("got %q, want 220 then %s", lines, c.second)
			}
		})
	}
}

// A recipient the store cannot check gets 451 and does not count as
// refused.
func TestInboundTemporaryRecipientFailureNotCounted(t *testing.T) {
	b, h := startBridge(t, Options{Listen: "127.0.0.1:0", Inbound: InboundOptions{MaxRefusedRcpts: 1}}, nil)
	storetest.Drop(t, h.St.Store, "claims")
	c := mailSession(t, b.smtpAddr)
	for i := range 3 {
		if got, _ := code(c.Rcpt("alice@"+testDomain, nil)); got != 451 {
			t.Fatalf("attempt %d: got %d, want 451", i+1, got)
		}
	}
	if err := c.Noop(); err != nil {
		t.Fatalf("the session was closed: %v", err)
	}
}

// Refused connections are logged once a minute at most, with their count.
func TestConnLimitsLogSpacing(t *testing.T) {
	var buf strings.Builder
	l := &connLimits{max: 1, perIP: 1, byIP: map[string]int{}, log: slog.New(slog.NewTextHandler(&buf, nil))}
	if r := l.acquire("192.0.2.1"); r != "" {
		t.Fatalf("first connection refused: %s", r)
	}
	for range 100 {
		if r := l.acquire("192.0.2.2"); r == "" {
			t.Fatal("a connection past the cap was accepted")
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 || !strings.Contains(buf.String(), "count=1 ") {
		t.Fatalf("%d lines for 100 refusals:\n%s", n, buf.String())
	}
	l.logged = l.logged.Add(-refusalLogEvery)
	l.acquire("192.0.2.2")
	if n := strings.Count(buf.String(), "\n"); n != 2 || !strings.Contains(buf.String(), "count=100 ") {
		t.Fatalf("after a minute: %d lines:\n%s", n, buf.String())
	}
	l.release("192.0.2.1")
	if r := l.acquire("192.0.2.2"); r != "" {
		t.Fatalf("refused after a release: %s", r)
	}
}

// mailSession dials addr and starts a transaction.
func mailSession(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Mail("x@example.com", nil); err != nil {
		t.Fatal(err)
	}
	return c
}

// A mail given twice (a sender that got no answer sends it again) reaches
// each of its users once: its Message-ID and its users are its delivery's
// key with its content, whatever the order of the recipients. The same
// Message-ID for other users, or on another mail (that would otherwise
// drop the first one's later copies), is delivered; mails without a
// Message-ID are delivered each time.
func TestInboundSameMailTwice(t *testing.T) {
	b, h := startBridge(t, Options{Listen: "127.0.0.1:0"}, map[string]string{"alice@example.org": "alice", "bob@example.org": "bob"})
	ctx := context.Background()
	alice, bob := "alice@"+testDomain, "bob@"+testDomain
	raw := "From: x@example.com\nMessage-ID: <once@example.com>\nSubject: once\n\nonly once\n"
	for _, rcpts := range [][]string{{alice, bob}, {bob, alice}, {alice, bob}} {
		if err := submit(b.smtpAddr, "x@example.com", rcpts, raw); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := h.St.CountStanzas(ctx, testDomain); err != nil || n != 2 {
		t.Fatalf("%d stanzas queued for a mail to two users given three times (%v)", n, err)
	}
	if err := submit(b.smtpAddr, "x@example.com", []string{alice}, raw); err != nil {
		t.Fatal(err)
	}
	if n, _ := h.St.CountStanzas(ctx, testDomain); n != 3 {
		t.Fatalf("%d stanzas queued after the mail for alice alone", n)
	}
	if err := b.deliverMail(ctx, "alice@example.org", "", []byte(raw)); err != nil {
		t.Fatal(err)
	}
	if n, _ := h.St.CountStanzas(ctx, testDomain); n != 3 {
		t.Fatalf("%d stanzas queued after the mail read again from alice's mailbox", n)
	}
	forged := strings.Replace(raw, "only once", "not the same mail", 1)
	if err := submit(b.smtpAddr, "x@example.com", []string{alice}, forged); err != nil {
		t.Fatal(err)
	}
	if n, _ := h.St.CountStanzas(ctx, testDomain); n != 4 {
		t.Fatalf("%d stanzas queued after another mail with the same Message-ID", n)
	}
	noID := "From: x@example.com\nSubject: no id\n\nevery time\n"
	for range 2 {
		if err := submit(b.smtpAddr, "x@example.com", []string{alice}, noID); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := h.St.CountStanzas(ctx, testDomain); n != 6 {
		t.Fatalf("%d stanzas queued after two mails without a Message-ID", n)
	}
}

// blockingDNS is fakeDNS whose TXT lookups wait until release is closed;
// entered is closed at the first.
type blockingDNS struct {
	fakeDNS
	once             sync.Once
	entered, release chan struct{}
}

func (d *blockingDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	d.once.Do(func() { close(d.entered) })
	<-d.release
	return d.fakeDNS.LookupTXT(ctx, name)
}

// A mail being received when the gateway stops is taken and committed
// before Run returns (the store is closed after it): the client gets its
// 250 and the message is in the outbox.
func TestInboundDataDuringStop(t *testing.T) {
	dns := &blockingDNS{entered: make(chan struct{}), release: make(chan struct{})}
	b := New(Options{Domain: testDomain, Listen: "127.0.0.1:0", Inbound: InboundOptions{Resolver: dns}})
	h := newFakeHost(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.St.PutRegistration(ctx, testDomain, "alice@example.org", map[string]string{"address": "alice"}, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	wait := start(t, ctx, b, h)
	c := mailSession(t, b.smtpAddr)
	if err := c.Rcpt("alice@"+testDomain, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "From: x@example.com\r\nSubject: late\r\n\r\nsent as the gateway stops\r\n")
	answer := make(chan error, 1)
	go func() {
		answer <- w.Close()
		c.Quit()
	}()
	<-dns.entered // the mail is being checked
	cancel()
	returned := make(chan struct{})
	go func() { wait(); close(returned) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		conn, err := net.Dial("tcp", b.smtpAddr)
		if err != nil {
			break // the stop has begun: the listener is closed
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener is still open after the stop")
		}
	}
	select {
	case <-returned:
		t.Fatal("Run returned while a mail was being received")
	default:
	}
	close(dns.release)
	<-returned
	if err := <-answer; err != nil {
		t.Fatalf("the mail received during the stop: %v", err)
	}
	items, err := h.St.PendingStanzas(context.Background(), testDomain, 10)
	if err != nil || len(items) != 1 || !strings.Contains(items[0].Stanza, "sent as the gateway stops") {
		t.Fatalf("outbox after the stop: %v %v", items, err)
	}
}

// A client that stops sending in the middle of a mail holds a stop up
// for smtpShutdownWait at most: then its connection is closed, and the
// mail is not taken.
func TestInboundStopBoundedByStalledData(t *testing.T) {
	b := New(Options{Domain: testDomain, Listen: "127.0.0.1:0", Inbound: InboundOptions{Resolver: fakeDNS{}}})
	b.smtpShutdownWait = 100 * time.Millisecond
	h := newFakeHost(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.St.PutRegistration(ctx, testDomain, "alice@example.org", map[string]string{"address": "alice"}, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	wait := start(t, ctx, b, h)
	c := mailSession(t, b.smtpAddr)
	if err := c.Rcpt("alice@"+testDomain, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: stalled\r\n\r\nand then nothing")
	cancel()
	returned := make(chan struct{})
	go func() { wait(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Run still waits for a stalled mail 10 s after the stop")
	}
	if err := w.Close(); err == nil {
		t.Fatal("a mail cut off by the stop was taken")
	}
	if n, _ := h.St.CountStanzas(context.Background(), testDomain); n != 0 {
		t.Fatalf("%d stanzas for a mail cut off by the stop", n)
	}
}

// A command that comes after the listener stopped is refused with 421:
// the store may be closed.
func TestInboundCommandAfterStop(t *testing.T) {
	b, h := startBridge(t, Options{}, map[string]string{"alice@example.org": "alice"})
	in := &inbound{b: b, sessions: map[*smtp.Conn]bool{}}
	in.stopped = true
	s := &session{b: b, in: in, hasMail: true, rcpts: []recipient{{addr: "alice@" + testDomain, user: "alice@example.org"}}}
	if got, _ := code(s.Rcpt("alice@"+testDomain, nil)); got != 421 {
		t.Fatalf("RCPT after the stop: %d, want 421", got)
	}
	if got, _ := code(s.Data(strings.NewReader("Subject: late\r\n\r\nlate\r\n"))); got != 421 {
		t.Fatalf("DATA after the stop: %d, want 421", got)
	}
	if n, _ := h.St.CountStanzas(context.Background(), testDomain); n != 0 {
		t.Fatalf("%d stanzas after the stop", n)
	}
}
