package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"passerelle/bridges/sms/sandbox"
)

// gateway records the webhooks posted to it, answering status.
type gateway struct {
	mu     sync.Mutex
	posts  []url.Values
	sigOK  []bool
	status int
	got    chan struct{}
}

func startGateway(t *testing.T, token string, status int) (*gateway, *httptest.Server) {
	g := &gateway{status: status, got: make(chan struct{}, 10)}
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		ok := r.Header.Get("X-Twilio-Signature") == sandbox.Sign(token, srv.URL+r.URL.Path, r.PostForm)
		g.mu.Lock()
		g.posts, g.sigOK = append(g.posts, r.PostForm), append(g.sigOK, ok)
		g.mu.Unlock()
		w.WriteHeader(g.status)
		g.got <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	return g, srv
}

func newServer(webhook string) (*server, *bytes.Buffer) {
	var buf bytes.Buffer
	s := &server{p: sandbox.New("ACsandbox", "tok"), webhook: webhook, log: slog.New(slog.NewTextHandler(&buf, nil))}
	s.p.OnText = s.sent
	return s, &buf
}

func post(t *testing.T, s *server, form url.Values) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/send", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	s.send(w, req)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

// A text sent from a phone reaches the gateway's webhook signed, with the
// numbers in E.164 whether the "+" was given, lost to form encoding or left out.
func TestSendSignedInbound(t *testing.T) {
	g, srv := startGateway(t, "tok", http.StatusOK)
	s, _ := newServer(srv.URL)
	for _, from := range []string{"+15557654321", " 15557654321", "15557654321"} {
		if code, body := post(t, s, url.Values{"from": {from}, "to": {"15550001111"}, "body": {"hello"}}); code != http.StatusOK {
			t.Fatalf("from %q: %d %s", from, code, body)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, p := range g.posts {
		if p.Get("From") != "+15557654321" || p.Get("To") != "+15550001111" || p.Get("Body") != "hello" || !g.sigOK[i] {
			t.Errorf("webhook %d: %v, signature ok %v", i, p, g.sigOK[i])
		}
	}
}

func TestSendRefused(t *testing.T) {
	_, refusing := startGateway(t, "tok", http.StatusForbidden)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	for _, c := range []struct {
		webhook string
		form    url.Values
		code    int
		says    string
	}{
		{refusing.URL, url.Values{"from": {"1"}, "to": {"2"}}, http.StatusBadRequest, "required"},
		{refusing.URL, url.Values{"from": {"1"}, "to": {"2"}, "body": {"x"}}, http.StatusBadGateway, "the gateway answered 403"},
		{down.URL, url.Values{"from": {"1"}, "to": {"2"}, "body": {"x"}}, http.StatusBadGateway, "cannot reach the gateway"},
	} {
		s, _ := newServer(c.webhook)
		if code, body := post(t, s, c.form); code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s %v: %d %q, want %d %q", c.webhook, c.form, code, body, c.code, c.says)
		}
	}
}

// A text from the gateway is logged and reported delivered to its
// StatusCallback, signed; a refused report is logged.
func TestSentReportedDelivered(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusForbidden} {
		g, srv := startGateway(t, "tok", status)
		s, log := newServer(srv.URL)
		form := url.Values{"From": {"+15550001111"}, "To": {"+15557654321"}, "Body": {"hi"}, "StatusCallback": {srv.URL + "/sms/status"}}
		req := httptest.NewRequest(http.MethodPost, "/2010-04-01/Accounts/ACsandbox/Messages.json", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("ACsandbox", "tok")
		w := httptest.NewRecorder()
		s.p.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			t.Fatalf("send: %d", w.Code)
		}
		s.reports.Wait()
		g.mu.Lock()
		p, ok := g.posts[0], g.sigOK[0]
		g.mu.Unlock()
		if p.Get("MessageStatus") != "delivered" || !ok {
			t.Errorf("status callback %v, signature ok %v", p, ok)
		}
		if !strings.Contains(log.String(), `msg="text sent" from=+15550001111 to=+15557654321 body=hi`) {
			t.Errorf("not logged: %s", log)
		}
		if status != http.StatusOK {
			if !strings.Contains(log.String(), "did not take the delivery report") {
				t.Errorf("refused report not logged: %s", log)
			}
		}
	}
}
