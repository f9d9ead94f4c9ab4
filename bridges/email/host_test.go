package email

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/xmlel"
	"passerelle/store"
)

const testDomain = "mail.example.org"

// fakeHost is a bridges.Host over a real store that records the stanzas
// sent instead of writing them to an XMPP server.
type fakeHost struct {
	b     *Bridge
	st    *store.Store
	mu    sync.Mutex
	sent  []*xmlel.Element
	ch    chan *xmlel.Element
	fail  error // SendMessage fails with it when set
	retry time.Duration
	ready chan struct{} // a token per Ready
}

func newFakeHost(t testing.TB, b *Bridge) *fakeHost {
	st, err := store.Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &fakeHost{b: b, st: st, ch: make(chan *xmlel.Element, 1000), retry: 200 * time.Millisecond, ready: make(chan struct{}, 1)}
}

func (h *fakeHost) Domain() string { return testDomain }
func (h *fakeHost) Send(st *xmlel.Element) error {
	h.record(st)
	return nil
}

// SendMessage commits a batch in one transaction, as the component does.
func (h *fakeHost) SendMessage(ctx context.Context, sts ...*xmlel.Element) error {
	_, err := h.Deliver(ctx, "", nil, sts...)
	return err
}

// Deliver commits a batch under key in one transaction, as the component
// does.
func (h *fakeHost) Deliver(ctx context.Context, key string, links []store.MessageID, sts ...*xmlel.Element) (bool, error) {
	h.mu.Lock()
	fail := h.fail
	h.mu.Unlock()
	if fail != nil {
		return false, fail
	}
	raw := make([]string, len(sts))
	for i, st := range sts {
		raw[i] = st.String()
	}
	if ok, err := h.st.Deliver(ctx, testDomain, store.Delivery{Key: key, Links: links, Stanzas: raw}); !ok || err != nil {
		return ok, err
	}
	for _, st := range sts {
		h.record(st)
	}
	return true, nil
}

func (h *fakeHost) record(st *xmlel.Element) {
	h.mu.Lock()
	h.sent = append(h.sent, st)
	h.mu.Unlock()
	select {
	case h.ch <- st:
	default:
	}
}
func (h *fakeHost) IQ(ctx context.Context, iq *xmlel.Element) (*xmlel.Element, error) {
	return nil, errors.New("no IQ in tests")
}
func (h *fakeHost) Post(user string, fn func(ctx context.Context)) error {
	fn(context.Background())
	return nil
}
func (h *fakeHost) Registration(ctx context.Context, user string) (*bridges.Registration, error) {
	r, err := h.st.GetRegistration(ctx, testDomain, user)
	if err != nil {
		return nil, err
	}
	return &bridges.Registration{JID: user, Fields: r.Fields, Claims: r.Claims}, nil
}
func (h *fakeHost) Registered(ctx context.Context) ([]string, error) {
	return h.st.ListRegistrations(ctx, testDomain)
}
func (h *fakeHost) Setting(ctx context.Context, user, key string) (string, error) {
	m, err := h.st.Settings(ctx, testDomain, user)
	if err != nil {
		return "", err
	}
	if v, ok := m[key]; ok {
		return v, nil
	}
	for _, f := range h.b.SettingsFields() {
		if f.Var == key {
			return f.Value(), nil
		}
	}
	return "", nil
}
func (h *fakeHost) Allowed(user string) bool     { return user != "banned@example.org" }
func (h *fakeHost) Store() *store.Store          { return h.st }
func (h *fakeHost) Log() *slog.Logger            { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func (h *fakeHost) RetryMaxDelay() time.Duration { return h.retry }
func (h *fakeHost) Ready() {
	select {
	case h.ready <- struct{}{}:
	default:
	}
}
func (h *fakeHost) Contact(context.Context, string, string, string) {}

// next waits for the next stanza sent.
func (h *fakeHost) next(t testing.TB) *xmlel.Element {
	t.Helper()
	select {
	case st := <-h.ch:
		return st
	case <-time.After(10 * time.Second):
		t.Fatal("no stanza sent")
		return nil
	}
}

// startBridge starts a bridge with opts on a fake host and registers users
// (JID → hosted address).
func startBridge(t testing.TB, opts Options, users map[string]string) (*Bridge, *fakeHost) {
	// The test servers listen on loopback.
	opts.AllowPrivate = true
	return startBridgeWith(t, opts, users, nil)
}

// startBridgeWith is startBridge with opts as given (the private-address
// check on unless opts say otherwise) and, when set, a resolver.
func startBridgeWith(t testing.TB, opts Options, users map[string]string, r bridges.Resolver) (*Bridge, *fakeHost) {
	opts.Domain = testDomain
	if opts.Inbound.Resolver == nil {
		opts.Inbound.Resolver = fakeDNS{} // no records; never the network
	}
	b := New(opts)
	if r != nil {
		b.resolver = r
	}
	h := newFakeHost(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	for jid, addr := range users {
		if err := h.st.PutRegistration(ctx, testDomain, jid, map[string]string{"address": addr}, []string{addr}); err != nil {
			t.Fatal(err)
		}
	}
	wait := start(t, ctx, b, h)
	// Stopped, and its goroutines done, before the store closes.
	t.Cleanup(func() { cancel(); wait() })
	return b, h
}

// start runs b on h as the component does (bridges.Start).
func start(t testing.TB, ctx context.Context, b *Bridge, h *fakeHost) (wait func() error) {
	wait, err := bridges.Start(ctx, b, h, h.ready)
	if err != nil {
		t.Fatal(err)
	}
	return wait
}
