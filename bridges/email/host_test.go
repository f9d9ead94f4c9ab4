package email

import (
	"context"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
)

const testDomain = "mail.example.org"

// newFakeHost is the component side of b in unit tests: setting defaults
// are b's, banned@example.org is not allowed, retries wait up to 200 ms.
func newFakeHost(t testing.TB, b *Bridge) *bridgetest.Host {
	h := bridgetest.New(t, testDomain)
	h.Settings, h.Retry = b, 200*time.Millisecond
	h.Allow = func(user string) bool { return user != "banned@example.org" }
	return h
}

// startBridge starts a bridge with opts on a fake host and registers users
// (JID → hosted address).
func startBridge(t testing.TB, opts Options, users map[string]string) (*Bridge, *bridgetest.Host) {
	// The test servers listen on loopback.
	opts.AllowPrivate = true
	return startBridgeWith(t, opts, users, nil)
}

// startBridgeWith is startBridge with opts as given (the private-address
// check on unless opts say otherwise) and, when set, a resolver.
func startBridgeWith(t testing.TB, opts Options, users map[string]string, r bridges.Resolver) (*Bridge, *bridgetest.Host) {
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
		if err := h.St.PutRegistration(ctx, testDomain, jid, map[string]string{"address": addr}, []string{addr}); err != nil {
			t.Fatal(err)
		}
	}
	wait := start(t, ctx, b, h)
	// Stopped, and its goroutines done, before the store closes.
	t.Cleanup(func() { cancel(); wait() })
	return b, h
}

// start runs b on h as the component does (bridges.Start).
func start(t testing.TB, ctx context.Context, b *Bridge, h *bridgetest.Host) (wait func() error) {
	t.Helper()
	return h.Start(t, ctx, b)
}
