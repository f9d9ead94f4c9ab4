// Package smstest is a fake Twilio-compatible SMS provider for tests: the
// sandbox provider on a loopback port, closed with the test.
package smstest

import (
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"passerelle/bridges/sms/sandbox"
)

// Request is one text the gateway asked the provider to send.
type Request = sandbox.Request

// Provider is a fake provider listening on a loopback port.
type Provider struct {
	*sandbox.Provider
	srv *httptest.Server
}

// Start starts a fake provider for account sid with auth token token; it
// is closed in t.Cleanup.
func Start(t testing.TB, sid, token string) *Provider {
	p := &Provider{Provider: sandbox.New(sid, token)}
	p.srv = httptest.NewServer(p.Provider)
	t.Cleanup(p.srv.Close)
	return p
}

// URL is the provider's base URL (PASSERELLE_SMS_API_URL).
func (p *Provider) URL() string { return p.srv.URL }

// WaitRequest waits up to timeout for a recorded request that match
// accepts, and returns the first one.
func (p *Provider) WaitRequest(t testing.TB, timeout time.Duration, desc string, match func(Request) bool) Request {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		reqs, changed := p.Watch()
		for _, r := range reqs {
			if match(r) {
				return r
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("smstest: no %s within %v; requests: %v", desc, timeout, reqs)
		}
	}
}

// Sign returns the X-Twilio-Signature of a POST of params to fullURL.
func Sign(token, fullURL string, params url.Values) string {
	return sandbox.Sign(token, fullURL, params)
}

// Post sends params to url (at address addr when non-empty, otherwise to
// url itself) with the given signature ("" for none) and returns the
// status and body of the answer.
func Post(addr, rawURL string, params url.Values, signature string) (int, string, error) {
	return sandbox.Post(addr, rawURL, params, signature)
}

// InboundParams returns the parameters of an inbound-text webhook.
func InboundParams(sid, from, to, body string, media ...string) url.Values {
	return sandbox.InboundParams(sid, from, to, body, media...)
}

// StatusParams returns the parameters of a status callback.
func StatusParams(sid, status, errorCode string) url.Values {
	return sandbox.StatusParams(sid, status, errorCode)
}
