package sms

import (
	"context"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/bridges/sms/smstest"
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

// newFakeHost is the component side of the bridge in unit tests; retries
// wait up to 20 ms.
func newFakeHost(t testing.TB) *bridgetest.Host {
	h := bridgetest.New(t, testDomain)
	h.Retry = 20 * time.Millisecond
	return h
}

// start runs b on h as the component does (bridges.Start).
func start(t testing.TB, ctx context.Context, b *Bridge, h *bridgetest.Host) (wait func() error) {
	t.Helper()
	return h.Start(t, ctx, b)
}

// testBridge is a bridge on a fake host with a fake provider, its worker
// running; webhooks are served by an httptest server.
type testBridge struct {
	b    *Bridge
	h    *bridgetest.Host
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
	if err := h.St.PutRegistration(ctx, testDomain, userJID, map[string]string{"number": ownNumber}, []string{ownNumber}); err != nil {
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
