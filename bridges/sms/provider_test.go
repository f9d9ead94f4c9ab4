package sms

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"passerelle/bridges/sms/smstest"
)

func TestTwilioSend(t *testing.T) {
	p := smstest.Start(t, testSID, testToken)
	tw := NewTwilio(p.URL()+"/", testSID, testToken)
	ctx := context.Background()
	sid, err := tw.Send(ctx, Text{From: ownNumber, To: peer, Body: "hi", Media: []string{"https://x.test/a.png"},
		StatusCallback: testHook + statusPath})
	if err != nil || sid == "" {
		t.Fatalf("Send = %q, %v", sid, err)
	}
	r := p.Requests()[0]
	if r.From() != ownNumber || r.To() != peer || r.Body() != "hi" || r.Form.Get("MediaUrl") != "https://x.test/a.png" ||
		r.StatusCallback() != testHook+statusPath || r.SID != sid {
		t.Fatalf("request %v, sid %s", r.Form, sid)
	}

	for _, c := range []struct {
		status    int
		temporary bool
	}{{400, false}, {429, true}, {500, true}, {503, true}} {
		p.Respond(c.status)
		_, err := tw.Send(ctx, Text{From: ownNumber, To: peer, Body: "x"})
		var pe *ProviderError
		if !errors.As(err, &pe) || pe.Status != c.status || pe.Message == "" || pe.Code == 0 {
			t.Fatalf("%d: err = %#v", c.status, err)
		}
		if temporary(err) != c.temporary {
			t.Errorf("%d: temporary = %v", c.status, !c.temporary)
		}
	}

	bad := NewTwilio(p.URL(), testSID, "wrong-token")
	if _, err := bad.Send(ctx, Text{From: ownNumber, To: peer, Body: "x"}); temporary(err) {
		t.Errorf("wrong credentials: %v is temporary", err)
	}
}

func TestTwilioOddAnswers(t *testing.T) {
	ctx := context.Background()
	noSID := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"status":"queued"}`))
	}))
	defer noSID.Close()
	if _, err := NewTwilio(noSID.URL, testSID, testToken).Send(ctx, Text{To: peer, Body: "x"}); err == nil || temporary(err) {
		t.Errorf("201 without a sid: %v (a retry could send the text twice)", err)
	}
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer html.Close()
	_, err := NewTwilio(html.URL, testSID, testToken).Send(ctx, Text{To: peer, Body: "x"})
	var pe *ProviderError
	if !errors.As(err, &pe) || !temporary(err) || pe.Message != "<html>bad gateway</html>" {
		t.Errorf("502 with HTML: %#v", err)
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	if _, err := NewTwilio(gone.URL, testSID, testToken).Send(ctx, Text{To: peer, Body: "x"}); err == nil || !temporary(err) {
		t.Errorf("unreachable provider: %v, want a temporary error", err)
	}
}
