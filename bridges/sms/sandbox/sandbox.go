// Package sandbox is a stand-in for a Twilio-compatible SMS provider, for
// tests and for a local demo: it records the texts the gateway sends,
// answers them with scripted HTTP statuses, and posts signed inbound and
// status webhooks as the real provider does. Nothing leaves the machine.
package sandbox

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one text the gateway asked the provider to send.
type Request struct {
	Form   url.Values
	Status int    // what the fake answered
	SID    string // the message SID given (only for 2xx answers)
}

// To, From, Body and StatusCallback are the request's fields.
func (r Request) To() string             { return r.Form.Get("To") }
func (r Request) From() string           { return r.Form.Get("From") }
func (r Request) Body() string           { return r.Form.Get("Body") }
func (r Request) StatusCallback() string { return r.Form.Get("StatusCallback") }

// Provider is the provider's API, an http.Handler.
type Provider struct {
	SID, Token string
	// OnText, when set, is called with every text recorded.
	OnText func(Request)

	seq  atomic.Int64
	mu   sync.Mutex
	reqs []Request
	next []int // scripted statuses for the next requests; then 201
	// changed is closed (and replaced) whenever a request is recorded.
	changed chan struct{}
}

// New returns a provider for account sid with auth token token.
func New(sid, token string) *Provider {
	return &Provider{SID: sid, Token: token, changed: make(chan struct{})}
}

// Respond scripts the HTTP statuses of the next requests (201, 400, 429,
// 500, ...); after them the fake answers 201 again.
func (p *Provider) Respond(statuses ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next = append(p.next, statuses...)
}

// ClearScript forgets the statuses scripted by Respond and not used yet.
func (p *Provider) ClearScript() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next = nil
}

// Requests returns the texts received so far.
func (p *Provider) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.reqs...)
}

// Watch returns the texts received so far and a channel closed when the
// next one is recorded.
func (p *Provider) Watch() ([]Request, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.reqs...), p.changed
}

// ServeHTTP answers POST /2010-04-01/Accounts/<sid>/Messages.json.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	want := "/2010-04-01/Accounts/" + p.SID + "/Messages.json"
	if r.Method != http.MethodPost || r.URL.Path != want {
		writeError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	if u, pw, ok := r.BasicAuth(); !ok || u != p.SID || pw != p.Token {
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, 20001, "bad form")
		return
	}
	p.mu.Lock()
	status := http.StatusCreated
	if len(p.next) > 0 {
		status, p.next = p.next[0], p.next[1:]
	}
	req := Request{Form: r.PostForm, Status: status}
	if status/100 == 2 {
		req.SID = fmt.Sprintf("SM%032d", p.seq.Add(1))
	}
	p.reqs = append(p.reqs, req)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	if p.OnText != nil {
		p.OnText(req)
	}

	switch {
	case status/100 == 2:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"sid": req.SID, "status": "queued",
			"to": req.To(), "from": req.From(), "body": req.Body(), "account_sid": p.SID})
	case status == http.StatusBadRequest:
		writeError(w, status, 21211, "The 'To' number "+req.To()+" is not a valid phone number.")
	case status == http.StatusTooManyRequests:
		writeError(w, status, 20429, "Too Many Requests")
	default:
		writeError(w, status, 20500, "Internal Server Error")
	}
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg, "status": status})
}

// Sign returns the X-Twilio-Signature of a POST of params to fullURL.
func Sign(token, fullURL string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := fullURL
	for _, k := range keys {
		vs := append([]string(nil), params[k]...)
		sort.Strings(vs)
		for i, v := range vs {
			if i == 0 || v != vs[i-1] {
				s += k + v
			}
		}
	}
	m := hmac.New(sha1.New, []byte(token))
	io.WriteString(m, s)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Post sends params to url (at address addr when non-empty, otherwise to
// url itself) with the given signature ("" for none) and returns the
// status and body of the answer.
func Post(addr, rawURL string, params url.Values, signature string) (int, string, error) {
	target := rawURL
	if addr != "" {
		u, err := url.Parse(rawURL)
		if err != nil {
			return 0, "", err
		}
		u.Scheme, u.Host = "http", addr
		target = u.String()
	}
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(params.Encode()))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if signature != "" {
		req.Header.Set("X-Twilio-Signature", signature)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// InboundParams returns the parameters of an inbound-text webhook.
func InboundParams(sid, from, to, body string, media ...string) url.Values {
	v := url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {"AC-test"}, "From": {from}, "To": {to},
		"Body": {body}, "NumMedia": {strconv.Itoa(len(media))}, "NumSegments": {"1"}}
	for i, m := range media {
		v.Set("MediaUrl"+strconv.Itoa(i), m)
		v.Set("MediaContentType"+strconv.Itoa(i), "image/jpeg")
	}
	return v
}

// StatusParams returns the parameters of a status callback.
func StatusParams(sid, status, errorCode string) url.Values {
	v := url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "MessageStatus": {status}, "SmsStatus": {status}, "AccountSid": {"AC-test"}}
	if errorCode != "" {
		v.Set("ErrorCode", errorCode)
	}
	return v
}

// Inbound posts a signed inbound text to <webhookURL>/sms/inbound (sent to
// addr when the public URL is not where the gateway listens).
func (p *Provider) Inbound(addr, webhookURL string, params url.Values) (int, string, error) {
	u := strings.TrimRight(webhookURL, "/") + "/sms/inbound"
	return Post(addr, u, params, Sign(p.Token, u, params))
}

// Status posts a signed status callback to the URL the gateway gave as
// StatusCallback (sent to addr when non-empty).
func (p *Provider) Status(addr, callbackURL string, params url.Values) (int, string, error) {
	return Post(addr, callbackURL, params, Sign(p.Token, callbackURL, params))
}
