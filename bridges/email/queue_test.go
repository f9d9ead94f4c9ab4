package email

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
	"passerelle/store/storetest"
)

// relay is a scripted SMTP relay: the local part of the recipient picks
// the answer ("soft": 451 once, "hard": 550 at RCPT, "body": 554 at DATA).
type relay struct {
	addr   string
	mu     sync.Mutex
	soft   int
	mails  [][]byte
	got    chan []byte
	onData func() // called once a mail is accepted, before the answer
	// The connections made to it, and those of them ended.
	conns  []net.Conn
	closed int
}

func startRelay(t testing.TB) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String(), got: make(chan []byte, 100)}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		r.mu.Lock()
		r.conns = append(r.conns, c.Conn())
		r.mu.Unlock()
		return &relaySession{r: r}, nil
	}))
	s.AllowInsecureAuth = true
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return r
}

// connections returns how many connections were made to r, and how many
// of them ended.
func (r *relay) connections() (made, ended int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns), r.closed
}

type relaySession struct {
	r  *relay
	to string
}

func (s *relaySession) Reset() {}
func (s *relaySession) Logout() error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	s.r.closed++
	return nil
}
func (s *relaySession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	s.to = to
	switch strings.Split(to, "@")[0] {
	case "soft":
		if s.r.soft == 0 {
			s.r.soft++
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
		}
	case "hard":
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	return nil
}
func (s *relaySession) Data(rd io.Reader) error {
	raw, _ := io.ReadAll(rd)
	if strings.HasPrefix(s.to, "body@") {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"}
	}
	s.r.mu.Lock()
	s.r.mails = append(s.r.mails, raw)
	onData := s.r.onData
	s.r.mu.Unlock()
	s.r.got <- raw
	if onData != nil {
		onData()
	}
	return nil
}

func alice() *bridges.User {
	return &bridges.User{JID: "alice@example.org", Full: "alice@example.org/phone",
		Registration: &bridges.Registration{JID: "alice@example.org", Fields: map[string]string{"address": "alice"}}}
}

func chat(to, id, body string, extra ...*xmlel.Element) *xmlel.Element {
	m := stanza.Message("alice@example.org/phone", to+"@"+testDomain, "chat", id, body)
	return m.Add(extra...)
}

func errorFor(t *testing.T, h *bridgetest.Host, id string) *stanza.Error {
	t.Helper()
	for {
		st := h.Next(t)
		if st.Attr("type") == "error" && st.Attr("id") == id {
			return stanza.ErrorOf(st)
		}
	}
}

// noticeFor waits for the notice of a failed mail: a chat message from
// contact to alice's bare JID, through the outbox, whose body contains
// each of want. It must follow the error (errorFor) it repeats.
func noticeFor(t *testing.T, h *bridgetest.Host, e *stanza.Error, contact string, want ...string) *xmlel.Element {
	t.Helper()
	for {
		st := h.Next(t)
		if st.Attr("type") != "chat" || st.Attr("to") != "alice@example.org" {
			continue
		}
		body := st.ChildText("", "body")
		if st.Attr("from") != contact+"@"+testDomain || !strings.HasPrefix(body, e.Text) || st.Child(stanza.NSHints, "store") == nil {
			t.Fatalf("notice %s for the error %q", st, e.Text)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("notice %q does not say %q", body, w)
			}
		}
		// Both went through the outbox (the fake host records only what
		// it committed there).
		items, err := h.St.PendingStanzas(context.Background(), testDomain, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var gotErr, gotNote bool
		for _, it := range items {
			gotNote = gotNote || strings.Contains(it.Stanza, `id="`+st.Attr("id")+`"`)
			gotErr = gotErr || strings.Contains(it.Stanza, `to="alice@example.org/phone"`) && strings.Contains(it.Stanza, `type="error"`) &&
				strings.Contains(it.Stanza, `from="`+contact+"@"+testDomain+`"`)
		}
		if !gotErr || !gotNote {
			t.Fatalf("outbox has the error: %v, the notice: %v", gotErr, gotNote)
		}
		return st
	}
}

func TestOutboundQueue(t *testing.T) {
	r := startRelay(t)
	b, h := startBridge(t, Options{Relay: "smtp://" + r.addr}, map[string]string{"alice@example.org": "alice"})
	ctx := context.Background()

	t.Run("451 then 250, once", func(t *testing.T) {
		b.Handle(ctx, alice(), chat("soft%example.com", "m1", "hello", xmlel.New(stanza.NSReceipts, "request")))
		raw := <-r.got
		if !bytes.Contains(raw, []byte("hello")) {
			t.Fatalf("mail %s", raw)
		}
		st := h.Next(t)
		if rc := st.Child(stanza.NSReceipts, "received"); rc == nil || rc.Attr("id") != "m1" || st.Attr("from") != "soft%example.com@"+testDomain {
			t.Fatalf("want a receipt, got %s", st)
		}
		if n, _ := h.St.CountJobs(ctx, testDomain); n != 0 {
			t.Fatalf("%d jobs left", n)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.mails) != 1 {
			t.Fatalf("%d mails", len(r.mails))
		}
	})
	t.Run("550 at RCPT", func(t *testing.T) {
		b.Handle(ctx, alice(), chat("hard%example.com", "m2", "hello"))
		e := errorFor(t, h, "m2")
		if e.Condition != "recipient-unavailable" || !strings.Contains(e.Text, "550") || !strings.Contains(e.Text, "no such mailbox") {
			t.Fatalf("got %+v", e)
		}
		noticeFor(t, h, e, "hard%example.com", "Your mail to hard@example.com was not delivered", "Subject: hello")
	})
	t.Run("554 at DATA", func(t *testing.T) {
		b.Handle(ctx, alice(), chat("body%example.com", "m3", "hello"))
		e := errorFor(t, h, "m3")
		if e.Condition != "not-acceptable" || !strings.Contains(e.Text, "content rejected") {
			t.Fatalf("got %+v", e)
		}
		noticeFor(t, h, e, "body%example.com", "Your mail to body@example.com was not delivered", "554")
	})
}

// Mails queued one after another go over one connection to the relay
// (RSET between); one the relay closed meanwhile is dialled again; the
// connection is closed when the bridge stops, and when idle
// (TestRelayConnectionIdle).
func TestRelayConnectionKept(t *testing.T) {
	r := startRelay(t)
	b := New(Options{Domain: testDomain, Relay: "smtp://" + r.addr, AllowPrivate: true, Inbound: InboundOptions{Resolver: fakeDNS{}}})
	h := newFakeHost(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, b, h)
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			wait()
		}
	}()
	mail := func(id string) { t.Helper(); r.mail(t, b, id) }
	waitConns := func(made, ended int) { t.Helper(); r.waitConns(t, made, ended) }
	for _, id := range []string{"m1", "m2", "m3"} {
		mail(id)
	}
	waitConns(1, 0)

	// The relay drops the connection (once the last mail is recorded as
	// sent: the relay has it before its answer): the next mail dials again.
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := h.St.CountJobs(ctx, testDomain); n != 0; n, _ = h.St.CountJobs(ctx, testDomain) {
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs left", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	r.conns[0].Close()
	r.mu.Unlock()
	waitConns(1, 1)
	mail("m4")
	mail("m5")
	waitConns(2, 1)

	// Stopping: closed.
	cancel()
	wait()
	stopped = true
	waitConns(2, 2)
	if n, _ := h.St.CountJobs(context.Background(), testDomain); n != 0 {
		t.Errorf("%d jobs left", n)
	}
}

// A connection kept open is closed once idle for the bridge's relayIdle.
func TestRelayConnectionIdle(t *testing.T) {
	r := startRelay(t)
	b := New(Options{Domain: testDomain, Relay: "smtp://" + r.addr, AllowPrivate: true, Inbound: InboundOptions{Resolver: fakeDNS{}}})
	b.relayIdle = 50 * time.Millisecond
	h := newFakeHost(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, b, h)
	t.Cleanup(func() { cancel(); wait() })
	r.mail(t, b, "m1")
	r.waitConns(t, 1, 1)
	r.mail(t, b, "m2")
	r.waitConns(t, 2, 2)
}

// mail has alice send a mail through b, and waits until r got it.
func (r *relay) mail(t *testing.T, b *Bridge, id string) {
	t.Helper()
	b.Handle(context.Background(), alice(), chat("bob%example.com", id, "mail "+id))
	select {
	case raw := <-r.got:
		if !bytes.Contains(raw, []byte("mail "+id)) {
			t.Fatalf("the relay got %s, want mail %s", raw, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("mail %s did not reach the relay", id)
	}
}

// waitConns waits until made connections were made to r and ended of
// them ended.
func (r *relay) waitConns(t *testing.T, made, ended int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, e := r.connections()
		if m == made && e == ended {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections made and %d ended, want %d and %d", m, e, made, ended)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOutboundUnreachableRelay(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	b, h := startBridge(t, Options{Relay: "smtp://" + dead}, map[string]string{"alice@example.org": "alice"})
	ctx := context.Background()
	b.Handle(ctx, alice(), chat("bob%example.com", "m1", "hello"))
	// The job stays queued with its error and a later try.
	var n int
	for i := 0; i < 200; i++ {
		jobs, err := h.St.DueJobs(ctx, testDomain, time.Now().Add(time.Hour), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) == 1 && jobs[0].Attempts > 0 {
			if jobs[0].LastError == "" || !jobs[0].NextTry.After(time.Now().Add(-time.Second)) {
				t.Fatalf("job %+v", jobs[0])
			}
			n = jobs[0].Attempts
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n == 0 {
		t.Fatal("the failed mail was not rescheduled")
	}
	for _, st := range h.Stanzas() {
		if st.Attr("type") == "error" {
			t.Fatalf("a temporary failure was reported: %s", st)
		}
	}

	// Past the retry window, it fails for good. While the report cannot
	// be committed, the job stays queued for a later try.
	jobs, _ := h.St.DueJobs(ctx, testDomain, time.Now().Add(time.Hour), 10)
	h.SetFail(errors.New("outbox unavailable"))
	jobs[0].Created = time.Now().Add(-bridges.MaxQueueAge - time.Minute)
	runQueued(ctx, b, jobs[0])
	j, err := h.St.GetJob(ctx, jobs[0].ID)
	if err != nil || j.Attempts <= jobs[0].Attempts || !j.NextTry.After(time.Now().Add(-time.Second)) {
		t.Fatalf("job after an unreported failure: %+v %v", j, err)
	}
	h.SetFail(nil)
	// Then an error to the sending resource and a notice to the user.
	j.Created = jobs[0].Created
	runQueued(ctx, b, *j)
	e := errorFor(t, h, "m1")
	if e.Condition != "remote-server-timeout" || e.Type != "cancel" || !strings.Contains(e.Text, "could not be delivered for 24 hours") ||
		!strings.Contains(e.Text, "connection refused") {
		t.Fatalf("got %+v", e)
	}
	noticeFor(t, h, e, "bob%example.com", "Your mail to bob@example.com", "Subject: hello")
	if c, _ := h.St.CountJobs(ctx, testDomain); c != 0 {
		t.Fatalf("%d jobs left", c)
	}
}

func TestOutboundRefusals(t *testing.T) {
	ctx := context.Background()
	b, h := startBridge(t, Options{}, map[string]string{"alice@example.org": "alice"})
	b.Handle(ctx, alice(), chat("bob%example.com", "n1", "hi"))
	if e := errorFor(t, h, "n1"); e.Condition != "service-unavailable" {
		t.Fatalf("no relay: %+v", e)
	}
	r := startRelay(t)
	b, h = startBridge(t, Options{Relay: "smtp://" + r.addr}, nil)
	u := alice()
	u.Registration = nil
	b.Handle(ctx, u, chat("bob%example.com", "n2", "hi"))
	if e := errorFor(t, h, "n2"); e.Condition != "registration-required" {
		t.Fatalf("unregistered: %+v", e)
	}
	b.Handle(ctx, alice(), chat("bob", "n3", "hi"))
	if e := errorFor(t, h, "n3"); e.Condition != "jid-malformed" {
		t.Fatalf("bad address: %+v", e)
	}
	// Chat states without a body send nothing.
	b.Handle(ctx, alice(), chat("bob%example.com", "n4", ""))
	if n, _ := h.St.CountJobs(ctx, testDomain); n != 0 {
		t.Fatalf("%d jobs for an empty message", n)
	}
}

func TestParseRelay(t *testing.T) {
	r, err := parseRelay("smtps://u:p%40ss@relay.example.org:465")
	if err != nil || !r.implicitTLS || r.user != "u" || r.password != "p@ss" || r.addr != "relay.example.org:465" {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"http://x:1", "smtp://x", "smtp://:25"} {
		if _, err := parseRelay(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// queuedOnly returns a bridge with a relay at addr that is not started (no
// queue runs: the test runs the job), and the one job of a mail alice
// sent with id.
func queuedOnly(t *testing.T, addr, id string, extra ...*xmlel.Element) (*Bridge, *bridgetest.Host, store.Job) {
	t.Helper()
	b := New(Options{Domain: testDomain, Relay: "smtp://" + addr})
	h := newFakeHost(t, b)
	b.host = h
	relay, err := parseRelay(b.opts.Relay)
	if err != nil {
		t.Fatal(err)
	}
	b.relay = relay
	ctx := context.Background()
	if err := h.St.PutRegistration(ctx, testDomain, "alice@example.org", map[string]string{"address": "alice"}, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	b.Handle(ctx, alice(), chat("bob%example.com", id, "hello", extra...))
	jobs, err := h.St.DueJobs(ctx, testDomain, time.Now().Add(time.Hour), 10)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("%d jobs queued (%v)", len(jobs), err)
	}
	return b, h, jobs[0]
}

// runQueued runs job j through the bridge's runner, as the queue does.
func runQueued(ctx context.Context, b *Bridge, j store.Job) {
	bridges.NewRunner(b.host, jobKind, b.runJob).Do(ctx, j)
}

// A mail the relay accepted while the gateway was stopping is recorded as
// delivered: its job is gone (it would go out again after the restart)
// and the receipt asked for is queued.
func TestAcceptedWhileStopping(t *testing.T) {
	r := startRelay(t)
	b, h, j := queuedOnly(t, r.addr, "m1", xmlel.New(stanza.NSReceipts, "request"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.mu.Lock()
	r.onData = cancel // the gateway stops while the relay takes the mail
	r.mu.Unlock()
	runQueued(ctx, b, j)
	if n, _ := h.St.CountJobs(context.Background(), testDomain); n != 0 {
		t.Fatalf("%d jobs left: the mail would go out again", n)
	}
	if st := h.Next(t); st.Child(stanza.NSReceipts, "received") == nil {
		t.Fatalf("want a receipt, got %s", st)
	}
}

// A mail whose sending failed because the gateway was stopping stays
// queued as it was, and is not reported.
func TestFailedWhileStopping(t *testing.T) {
	r := startRelay(t)
	b, h, j := queuedOnly(t, r.addr, "m2")
	ctx, stop := context.WithCancel(context.Background())
	stop()
	runQueued(ctx, b, j)
	got, err := h.St.GetJob(context.Background(), j.ID)
	if err != nil || got.Attempts != 0 || got.LastError != "" {
		t.Fatalf("job after a send cut off by the stop: %+v %v", got, err)
	}
	if items, _ := h.St.PendingStanzas(context.Background(), testDomain, 10); len(items) != 0 {
		t.Fatalf("%d stanzas in the outbox for a send cut off by the stop", len(items))
	}
	if sent := h.Stanzas(); len(sent) != 0 {
		t.Fatalf("%d stanzas for a send cut off by the stop", len(sent))
	}
}

// sabotage makes the store refuse op (storetest.Delete or Update) on jobs
// until the function returned is called.
func sabotage(t *testing.T, h *bridgetest.Host, op string) (mend func()) {
	t.Helper()
	return storetest.Refuse(t, h.St.Store, op, "jobs", "")
}

// When the store will not remove a mail the relay took, the mail is not
// sent again: the removal is tried again until it works.
func TestDeliveredButNotRemoved(t *testing.T) {
	r := startRelay(t)
	b, h := startBridge(t, Options{Relay: "smtp://" + r.addr}, map[string]string{"alice@example.org": "alice"})
	mend := sabotage(t, h, storetest.Delete)
	b.Handle(context.Background(), alice(), chat("bob%example.com", "d1", "only once"))
	<-r.got
	time.Sleep(500 * time.Millisecond) // two backoffs of the fake host (200 ms)
	r.mu.Lock()
	n := len(r.mails)
	r.mu.Unlock()
	if n != 1 {
		t.Fatalf("relayed %d times while the store kept the job", n)
	}
	mend()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if c, _ := h.St.CountJobs(context.Background(), testDomain); c == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job was not removed once the store allowed it")
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.mails) != 1 {
		t.Fatalf("relayed %d times", len(r.mails))
	}
}

// When the store will not reschedule a mail that failed, the queue backs
// off instead of trying it again at once, over and over.
func TestMailRescheduleRefusedBacksOff(t *testing.T) {
	var tries atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // a relay that answers 421 at once: a temporary failure
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tries.Add(1)
			io.WriteString(c, "421 busy\r\n")
			c.Close()
		}
	}()
	b, h := startBridge(t, Options{Relay: "smtp://" + ln.Addr().String()}, map[string]string{"alice@example.org": "alice"})
	sabotage(t, h, storetest.Update)
	b.Handle(context.Background(), alice(), chat("bob%example.com", "d2", "later"))
	time.Sleep(300 * time.Millisecond)
	// The fake host's backoff is 200 ms: two or three tries; a queue that
	// does not wait makes hundreds.
	if n := tries.Load(); n == 0 || n > 10 {
		t.Fatalf("%d tries in 300 ms", n)
	}
}
