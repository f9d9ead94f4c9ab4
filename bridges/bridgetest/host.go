// Package bridgetest is the component side of a bridge in its unit tests:
// a bridges.Host over a real store that records the stanzas a bridge sends
// instead of writing them to an XMPP server.
package bridgetest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
	"passerelle/store/storetest"
)

// waitFor bounds every wait of a test on the host.
const waitFor = 10 * time.Second

// Host is a bridges.Host for tests. Its exported fields are set before the
// bridge starts.
type Host struct {
	St *storetest.Store
	// Retry is RetryMaxDelay (a minute when zero).
	Retry time.Duration
	// Allow decides Allowed (everyone when nil).
	Allow func(jid string) bool
	// Settings gives the default values of Setting.
	Settings bridges.Settings
	// Logs keeps what the bridge logs.
	Logs *LogBuffer
	// OnQueued, when set, is called with the stanzas given to Queued
	// before they are recorded.
	OnQueued func(sts ...*xmlel.Element)
	// OnFlushed, when set, gives what Flushed returns (a closed channel
	// when nil: the test host has no server to wait for).
	OnFlushed func() <-chan struct{}
	// Uncommitted keeps the messages out of the outbox (keys and links
	// are still committed): benchmarks measure the bridge, not SQLite.
	Uncommitted bool
	// Owned decides Own: the users the bridge may start work for (all
	// of them when nil).
	Owned func(users []string) ([]string, error)
	// Lease, when set, is what the fences (Fence) check: a test makes it
	// false to end the instance's lease.
	Lease func() bool
	// MessageNS is the privilege namespace in which the server granted
	// the message permission (SentCarbons); "": it grants none.
	MessageNS string

	domain string
	posted chan func(context.Context)
	ready  chan struct{} // a token per Ready

	mu       sync.Mutex
	all      []*xmlel.Element // Send and committed messages, in order
	sent     []*xmlel.Element // Send
	messages []*xmlel.Element // SendMessage, Deliver and Queued
	read     int              // all[:read] were returned by Next or Expect
	changed  chan struct{}    // closed and replaced when a stanza is recorded
	contacts []Contact
	known    chan struct{}         // PrivilegesKnown
	fail     error                 // SendMessage and Deliver fail with it
	onCommit func(context.Context) // called by SendMessage and Deliver first
}

// New returns a host for domain over a new store; its user goroutine and
// store end with the test.
func New(t testing.TB, domain string) *Host {
	h := &Host{St: storetest.Open(t), Logs: &LogBuffer{}, domain: domain,
		posted: make(chan func(context.Context), 256), ready: make(chan struct{}, 1), changed: make(chan struct{}),
		known: make(chan struct{})}
	close(h.known)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case fn := <-h.posted:
				fn(ctx)
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// Start runs b on h as the component does (bridges.Start) and fails t when
// it does not get ready.
func (h *Host) Start(t testing.TB, ctx context.Context, b bridges.Bridge) (wait func() error) {
	t.Helper()
	wait, err := bridges.Start(ctx, b, h, h.ready)
	if err != nil {
		t.Fatal(err)
	}
	return wait
}

// StartOn starts b until the test ends: the cleanup stops it and waits
// until it no longer uses the store (which the host's cleanup, run after,
// closes). It returns the bridge's context.
func (h *Host) StartOn(t testing.TB, b bridges.Bridge) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wait := h.Start(t, ctx, b)
	t.Cleanup(func() { cancel(); wait() })
	return ctx
}

func (h *Host) Domain() string { return h.domain }

func (h *Host) Ready() {
	select {
	case h.ready <- struct{}{}:
	default:
	}
}

func (h *Host) Send(st *xmlel.Element) error {
	h.record(st, false)
	return nil
}

// SendMessage commits sts in the store's outbox, as the component does.
func (h *Host) SendMessage(ctx context.Context, sts ...*xmlel.Element) error {
	_, err := h.Deliver(ctx, "", nil, sts...)
	return err
}

// Deliver commits key, links and messages in one transaction, as the
// component does, and records the messages when they were committed.
func (h *Host) Deliver(ctx context.Context, key string, links []store.MessageID, sts ...*xmlel.Element) (bool, error) {
	h.mu.Lock()
	fail, onCommit := h.fail, h.onCommit
	h.mu.Unlock()
	if onCommit != nil {
		onCommit(ctx)
	}
	if fail != nil {
		return false, fail
	}
	d := store.Delivery{Key: key, Links: links}
	if !h.Uncommitted {
		for _, st := range sts {
			d.Stanzas = append(d.Stanzas, st.String())
		}
	}
	if !h.Uncommitted || key != "" || len(links) > 0 {
		if ok, err := h.St.Deliver(ctx, h.domain, d); !ok || err != nil {
			return ok, err
		}
	}
	for _, st := range sts {
		h.record(st, true)
	}
	return true, nil
}

// Queued records sts as committed messages: the bridge committed them.
func (h *Host) Queued(sts ...*xmlel.Element) {
	if h.OnQueued != nil {
		h.OnQueued(sts...)
	}
	for _, st := range sts {
		h.record(st, true)
	}
}

// Flushed is OnFlushed's channel, or a closed one.
func (h *Host) Flushed() <-chan struct{} {
	if h.OnFlushed != nil {
		return h.OnFlushed()
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

func (h *Host) IQ(ctx context.Context, iq *xmlel.Element) (*xmlel.Element, error) {
	return nil, bridges.ErrDisconnected
}

// Post runs fn on the host's one user goroutine.
func (h *Host) Post(user string, fn func(context.Context)) error {
	h.posted <- fn
	return nil
}

// Run runs fn on the user goroutine and waits for it.
func (h *Host) Run(fn func(context.Context)) {
	done := make(chan struct{})
	h.posted <- func(ctx context.Context) { fn(ctx); close(done) }
	<-done
}

func (h *Host) Registration(ctx context.Context, user string) (*bridges.Registration, error) {
	r, err := h.St.GetRegistration(ctx, h.domain, user)
	if err != nil {
		return nil, err
	}
	return &bridges.Registration{JID: user, Fields: r.Fields, Claims: r.Claims}, nil
}

// Own holds every user, as one instance with its own store does; Owned
// (when set) decides instead.
func (h *Host) Own(ctx context.Context, users []string) ([]string, error) {
	if h.Owned != nil {
		return h.Owned(users)
	}
	return users, nil
}

func (h *Host) Registered(ctx context.Context) ([]string, error) {
	return h.St.ListRegistrations(ctx, h.domain)
}

// Setting returns the stored value, or the default from Settings.
func (h *Host) Setting(ctx context.Context, user, key string) (string, error) {
	m, err := h.St.Settings(ctx, h.domain, user)
	if err != nil {
		return "", err
	}
	if v, ok := m[key]; ok {
		return v, nil
	}
	if h.Settings != nil {
		for _, f := range h.Settings.SettingsFields() {
			if f.Var == key {
				return f.Value(), nil
			}
		}
	}
	return "", nil
}

// Fence implements bridges.Host: true, or h.Lease until it reports
// false once (a fence that failed stays failed).
func (h *Host) Fence() func() bool {
	var failed atomic.Bool
	return func() bool {
		if h.Lease == nil {
			return true
		}
		if failed.Load() || !h.Lease() {
			failed.Store(true)
			return false
		}
		return true
	}
}

func (h *Host) Allowed(user string) bool { return h.Allow == nil || h.Allow(user) }
func (h *Host) Store() *store.Store      { return h.St.Store }
func (h *Host) Log() *slog.Logger        { return slog.New(slog.NewTextHandler(h.Logs, nil)) }

func (h *Host) RetryMaxDelay() time.Duration {
	if h.Retry == 0 {
		return time.Minute
	}
	return h.Retry
}

// SentCarbons wraps as the component does (stanza.SentCarbon), when
// MessageNS is set; before that ErrPrivilegeUnknown while the grants are
// pending (PendingPrivileges), else ErrNoPrivilege.
func (h *Host) SentCarbons(user string) (func(msg *xmlel.Element) *xmlel.Element, error) {
	h.mu.Lock()
	ns, known := h.MessageNS, h.known
	h.mu.Unlock()
	if ns == "" {
		select {
		case <-known:
			return nil, bridges.ErrNoPrivilege
		default:
			return nil, bridges.ErrPrivilegeUnknown
		}
	}
	server := stanza.Domain(user)
	return func(msg *xmlel.Element) *xmlel.Element { return stanza.SentCarbon(ns, h.domain, server, msg) }, nil
}

// PrivilegesKnown is closed unless the grants are pending.
func (h *Host) PrivilegesKnown() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.known
}

// PendingPrivileges makes the grants unknown until learn is called with
// the namespace of the message permission ("": none granted).
func (h *Host) PendingPrivileges() (learn func(ns string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	known := make(chan struct{})
	h.known = known
	return func(ns string) {
		h.mu.Lock()
		h.MessageNS = ns
		h.mu.Unlock()
		close(known)
	}
}

// Contact is a call of Host.Contact.
type Contact struct{ User, Local, Name string }

// Contact records the call.
func (h *Host) Contact(ctx context.Context, user, local, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.contacts = append(h.contacts, Contact{User: user, Local: local, Name: name})
}

// Contacts returns the calls of Contact, in order.
func (h *Host) Contacts() []Contact {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Contact(nil), h.contacts...)
}

// SetFail makes SendMessage and Deliver fail with err (nil: succeed).
func (h *Host) SetFail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = err
}

// OnCommit has SendMessage and Deliver call fn with their context first
// (nil: nothing).
func (h *Host) OnCommit(fn func(context.Context)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onCommit = fn
}

func (h *Host) record(st *xmlel.Element, committed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.all = append(h.all, st)
	if committed {
		h.messages = append(h.messages, st)
	} else {
		h.sent = append(h.sent, st)
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// Stanzas returns every stanza sent or committed, in order.
func (h *Host) Stanzas() []*xmlel.Element {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*xmlel.Element(nil), h.all...)
}

// Sent returns the stanzas given to Send.
func (h *Host) Sent() []*xmlel.Element {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*xmlel.Element(nil), h.sent...)
}

// Messages returns the stanzas committed by SendMessage and Deliver, and
// those the bridge committed itself (Queued).
func (h *Host) Messages() []*xmlel.Element {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*xmlel.Element(nil), h.messages...)
}

// Receive returns the next stanza (sent or committed) not returned yet,
// waiting up to d; false when none came.
func (h *Host) Receive(d time.Duration) (*xmlel.Element, bool) {
	timeout := time.After(d)
	for {
		h.mu.Lock()
		if h.read < len(h.all) {
			st := h.all[h.read]
			h.read++
			h.mu.Unlock()
			return st, true
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			return nil, false
		}
	}
}

// Drain returns the stanzas not returned yet, without waiting.
func (h *Host) Drain() []*xmlel.Element {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := append([]*xmlel.Element(nil), h.all[h.read:]...)
	h.read = len(h.all)
	return out
}

// Next waits for the next stanza not returned yet.
func (h *Host) Next(t testing.TB) *xmlel.Element {
	t.Helper()
	st, ok := h.Receive(waitFor)
	if !ok {
		t.Fatal("no stanza sent")
	}
	return st
}

// Expect waits for the next stanza matching match, skipping others.
func (h *Host) Expect(t testing.TB, desc string, match func(*xmlel.Element) bool) *xmlel.Element {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		st, ok := h.Receive(time.Until(deadline))
		if !ok {
			t.Fatalf("timed out waiting for %s", desc)
		}
		if match(st) {
			return st
		}
	}
}

// WaitSent returns the first stanza given to Send matching match, waiting
// for it.
func (h *Host) WaitSent(t testing.TB, desc string, match func(*xmlel.Element) bool) *xmlel.Element {
	t.Helper()
	return h.find(t, &h.sent, desc, match)
}

// WaitMessage returns the first committed message matching match, waiting
// for it.
func (h *Host) WaitMessage(t testing.TB, desc string, match func(*xmlel.Element) bool) *xmlel.Element {
	t.Helper()
	return h.find(t, &h.messages, desc, match)
}

func (h *Host) find(t testing.TB, list *[]*xmlel.Element, desc string, match func(*xmlel.Element) bool) *xmlel.Element {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		h.mu.Lock()
		got := append([]*xmlel.Element(nil), (*list)...)
		changed := h.changed
		h.mu.Unlock()
		for _, e := range got {
			if match(e) {
				return e
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %s; got %v", desc, got)
		}
	}
}

// LogBuffer keeps a host's log lines.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Wait waits until the log has a line with substr.
func (l *LogBuffer) Wait(t testing.TB, substr string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		s := l.String()
		if strings.Contains(s, substr) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", substr, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
