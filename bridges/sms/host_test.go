package sms

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/sms/smstest"
	"passerelle/component/xmlel"
	"passerelle/store"
)

const (
	testDomain = "sms.test"
	testToken  = "unit-token"
	testSID    = "ACunit"
	testHook   = "https://hooks.example.test/gw"
	ownNumber  = "+15550001111"
	freeNumber = "+15550002222"
	peer       = "+15551234567"
	userJID    = "alice@example.test"
	userFull   = "alice@example.test/phone"
)

// fakeHost is the component side of the bridge in unit tests: stanzas are
// recorded instead of being sent.
type fakeHost struct {
	st *store.Store

	mu       sync.Mutex
	sent     []*xmlel.Element // Send
	messages []*xmlel.Element // SendMessage
	changed  chan struct{}
	failSend error         // returned by SendMessage and Deliver when set
	onSend   func()        // called by SendMessage and Deliver first, when set
	ready    chan struct{} // a token per Ready
}

func newFakeHost(t testing.TB) *fakeHost {
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &fakeHost{st: st, changed: make(chan struct{}), ready: make(chan struct{}, 1)}
}

func (h *fakeHost) Domain() string { return testDomain }
func (h *fakeHost) Ready() {
	select {
	case h.ready <- struct{}{}:
	default:
	}
}

// start runs b on h as the component does (bridges.Start).
func start(t testing.TB, ctx context.Context, b *Bridge, h *fakeHost) (wait func() error) {
	wait, err := bridges.Start(ctx, b, h, h.ready)
	if err != nil {
		t.Fatal(err)
	}
	return wait
}
func (h *fakeHost) Send(st *xmlel.Element) error {
	h.record(&h.sent, st)
	return nil
}
func (h *fakeHost) SendMessage(ctx context.Context, sts ...*xmlel.Element) error {
	_, err := h.Deliver(ctx, "", nil, sts...)
	return err
}

// Deliver commits key, links and messages in the store, as the component
// does, and records the messages when they were committed.
func (h *fakeHost) Deliver(ctx context.Context, key string, links []store.MessageID, sts ...*xmlel.Element) (bool, error) {
	h.mu.Lock()
	err, onSend := h.failSend, h.onSend
	h.mu.Unlock()
	if onSend != nil {
		onSend()
	}
	if err != nil {
		return false, err
	}
	raw := make([]string, len(sts))
	for i, st := range sts {
		raw[i] = st.String()
	}
	if ok, err := h.st.Deliver(ctx, testDomain, store.Delivery{Key: key, Links: links, Stanzas: raw}); !ok || err != nil {
		return ok, err
	}
	for _, st := range sts {
		h.record(&h.messages, st)
	}
	return true, nil
}

func (h *fakeHost) record(list *[]*xmlel.Element, st *xmlel.Element) {
	h.mu.Lock()
	defer h.mu.Unlock()
	*list = append(*list, st)
	close(h.changed)
	h.changed = make(chan struct{})
}
func (h *fakeHost) IQ(ctx context.Context, iq *xmlel.Element) (*xmlel.Element, error) {
	return nil, bridges.ErrDisconnected
}
func (h *fakeHost) Post(user string, fn func(ctx context.Context)) error {
	fn(context.Background())
	return nil
}
func (h *fakeHost) Registration(ctx context.Context, user string) (*bridges.Registration, error) {
	return nil, store.ErrNotFound
}
func (h *fakeHost) Registered(ctx context.Context) ([]string, error)              { return nil, nil }
func (h *fakeHost) Setting(ctx context.Context, user, key string) (string, error) { return "", nil }
func (h *fakeHost) Allowed(user string) bool                                      { return true }
func (h *fakeHost) Store() *store.Store                                           { return h.st }
func (h *fakeHost) Log() *slog.Logger                                             { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func (h *fakeHost) RetryMaxDelay() time.Duration                                  { return 20 * time.Millisecond }
func (h *fakeHost) Contact(context.Context, string, string, string)               {}

// wait returns the first stanza (from Send when sent, else from
// SendMessage) matching match, waiting up to 10 s.
func (h *fakeHost) wait(t testing.TB, sent bool, desc string, match func(*xmlel.Element) bool) *xmlel.Element {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		list := h.messages
		if sent {
			list = h.sent
		}
		list = append([]*xmlel.Element(nil), list...)
		changed := h.changed
		h.mu.Unlock()
		for _, e := range list {
			if match(e) {
				return e
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %s; got %v", desc, list)
		}
	}
}

func (h *fakeHost) setFailSend(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failSend = err
}

func (h *fakeHost) allMessages() []*xmlel.Element {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*xmlel.Element(nil), h.messages...)
}

func (h *fakeHost) count(sent bool) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sent {
		return len(h.sent)
	}
	return len(h.messages)
}

// testBridge is a bridge on a fake host with a fake provider, its worker
// running; webhooks are served by an httptest server.
type testBridge struct {
	b    *Bridge
	h    *fakeHost
	p    *smstest.Provider
	hook *httptest.Server
}

func newTestBridge(t *testing.T) *testBridge {
	p := smstest.Start(t, testSID, testToken)
	h := newFakeHost(t)
	b := New(Options{Numbers: []string{ownNumber, freeNumber}, Region: "US", APIURL: p.URL(),
		AccountSID: testSID, AuthToken: testToken, WebhookURL: testHook + "/"})
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, b, h)
	t.Cleanup(func() { cancel(); wait() }) // before the store closes
	hook := httptest.NewServer(b.webhookHandler())
	t.Cleanup(hook.Close)
	if err := h.st.PutRegistration(ctx, testDomain, userJID, map[string]string{"number": ownNumber}, []string{ownNumber}); err != nil {
		t.Fatal(err)
	}
	return &testBridge{b: b, h: h, p: p, hook: hook}
}

func (tb *testBridge) addr() string { return strings.TrimPrefix(tb.hook.URL, "http://") }

func (tb *testBridge) inbound(t *testing.T, params url.Values) int {
	t.Helper()
	code, _, err := tb.p.Inbound(tb.addr(), testHook, params)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func (tb *testBridge) status(t *testing.T, sid, status, code string) int {
	t.Helper()
	got, _, err := tb.p.Status(tb.addr(), testHook+statusPath, smstest.StatusParams(sid, status, code))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// user is alice, registered with ownNumber.
func user() *bridges.User {
	return &bridges.User{JID: userJID, Full: userFull,
		Registration: &bridges.Registration{JID: userJID, Fields: map[string]string{"number": ownNumber}, Claims: []string{ownNumber}}}
}
