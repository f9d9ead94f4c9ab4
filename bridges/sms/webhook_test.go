package sms

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges/bridgetest"
	"passerelle/bridges/sms/smstest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

func TestInboundDelivered(t *testing.T) {
	tb := newTestBridge(t)
	code, body, err := tb.p.Inbound(tb.addr(), testHook, smstest.InboundParams("SMa", "(555) 765-4321", ownNumber, "Hello",
		"https://m.test/1.jpg", "https://m.test/2.jpg"))
	if err != nil || code != http.StatusOK || !strings.Contains(body, "<Response/>") {
		t.Fatalf("webhook: %d %q %v", code, body, err)
	}
	m := tb.h.WaitMessage(t, "the text", func(e *xmlel.Element) bool { return e.Attr("id") == "SMa" })
	if m.Attr("from") != "+15557654321@"+testDomain || m.Attr("to") != userJID || m.Attr("type") != "chat" {
		t.Errorf("addressing: %s", m)
	}
	if b := m.ChildText("", "body"); b != "Hello\nhttps://m.test/1.jpg\nhttps://m.test/2.jpg" {
		t.Errorf("body %q", b)
	}
	if xs := m.ChildrenNamed(stanza.NSOOB, "x"); len(xs) != 2 || xs[1].ChildText("", "url") != "https://m.test/2.jpg" {
		t.Errorf("OOB: %s", m)
	}
	if got, want := tb.h.Contacts(), []bridgetest.Contact{{User: userJID, Local: "+15557654321", Name: "+15557654321"}}; !slices.Equal(got, want) {
		t.Errorf("contacts %v, want %v", got, want)
	}
	// The provider repeating the webhook does not deliver the text twice.
	if code := tb.inbound(t, smstest.InboundParams("SMa", "+15557654321", ownNumber, "Hello")); code != http.StatusOK {
		t.Fatalf("repeated webhook: %d", code)
	}
	if n := len(tb.h.Messages()); n != 1 {
		t.Errorf("%d messages after a repeated webhook", n)
	}
	// An alphanumeric sender.
	tb.inbound(t, smstest.InboundParams("SMb", "ACME Bank", ownNumber, "Your code"))
	m = tb.h.WaitMessage(t, "the text", func(e *xmlel.Element) bool { return e.Attr("id") == "SMb" })
	if m.Attr("from") != "acmebank@"+testDomain {
		t.Errorf("alphanumeric sender: %s", m)
	}
}

func TestInboundRefused(t *testing.T) {
	tb := newTestBridge(t)
	good := smstest.InboundParams("SMx", peer, ownNumber, "forged?")
	u := testHook + inboundPath
	cases := []struct {
		name   string
		params url.Values
		sig    string
		want   int
	}{
		{"no signature", good, "", http.StatusForbidden},
		{"bad signature", good, "bm90IGEgc2lnbmF0dXJl", http.StatusForbidden},
		{"signed by another token", good, smstest.Sign("other", u, good), http.StatusForbidden},
		{"signed for another URL", good, smstest.Sign(testToken, "http://"+tb.addr()+inboundPath, good), http.StatusForbidden},
		{"body changed after signing", smstest.InboundParams("SMx", peer, ownNumber, "changed"), smstest.Sign(testToken, u, good), http.StatusForbidden},
		{"number not the gateway's", smstest.InboundParams("SMy", peer, "+15559990000", "x"), "", http.StatusNotFound},
		{"no From", url.Values{"MessageSid": {"SMz"}, "To": {ownNumber}, "Body": {"x"}}, "", http.StatusBadRequest},
		{"bad To", url.Values{"MessageSid": {"SMz"}, "From": {peer}, "To": {"nowhere"}, "Body": {"x"}}, "", http.StatusBadRequest},
		{"no sid", url.Values{"From": {peer}, "To": {ownNumber}, "Body": {"x"}}, "", http.StatusBadRequest},
		{"empty", smstest.InboundParams("SMe", peer, ownNumber, ""), "", http.StatusBadRequest},
		{"bad NumMedia", url.Values{"MessageSid": {"SMz"}, "From": {peer}, "To": {ownNumber}, "Body": {"x"}, "NumMedia": {"99"}}, "", http.StatusBadRequest},
		{"media not http", smstest.InboundParams("SMm", peer, ownNumber, "x", "javascript:alert(1)"), "", http.StatusBadRequest},
	}
	for _, c := range cases {
		sig := c.sig
		if sig == "" && c.want != http.StatusForbidden {
			sig = smstest.Sign(testToken, u, c.params)
		}
		code, _, err := smstest.Post(tb.addr(), u, c.params, sig)
		if err != nil || code != c.want {
			t.Errorf("%s: %d %v, want %d", c.name, code, err, c.want)
		}
	}
	// Oversize body.
	big := smstest.InboundParams("SMbig", peer, ownNumber, strings.Repeat("x", maxWebhookBody))
	if code, _, _ := smstest.Post(tb.addr(), u, big, smstest.Sign(testToken, u, big)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize webhook: %d", code)
	}
	// Not a form.
	if resp, err := http.Post(tb.hook.URL+"/gw"+inboundPath, "application/x-www-form-urlencoded", strings.NewReader("Body=%zz")); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unreadable form: %v %v", resp, err)
	}
	// GET.
	if resp, err := http.Get(tb.hook.URL + inboundPath); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %v %v", resp, err)
	}
	if n := len(tb.h.Messages()); n != 0 {
		t.Errorf("%d messages delivered from refused webhooks", n)
	}
}

func TestInboundUnclaimed(t *testing.T) {
	tb := newTestBridge(t)
	if code := tb.inbound(t, smstest.InboundParams("SMu", peer, freeNumber, "anyone?", "https://m.test/u.jpg")); code != http.StatusOK {
		t.Fatalf("webhook: %d", code)
	}
	kept, err := tb.h.St.UnclaimedTexts(context.Background(), freeNumber)
	if err != nil || len(kept) != 1 {
		t.Fatalf("kept: %+v %v", kept, err)
	}
	if k := kept[0]; k.To != freeNumber || k.From != peer || k.Body != "anyone?" || !slices.Equal(k.Media, []string{"https://m.test/u.jpg"}) || k.SID != "SMu" {
		t.Fatalf("kept: %+v", k)
	}
	if n := len(tb.h.Messages()); n != 0 {
		t.Errorf("%d messages for an unclaimed number", n)
	}
}

// Identical webhooks at the same moment each get 200 and give one message.
func TestInboundConcurrentDuplicates(t *testing.T) {
	tb := newTestBridge(t)
	codes := make([]int, 20)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Go(func() {
			codes[i], _, _ = tb.p.Inbound(tb.addr(), testHook, smstest.InboundParams("SMdup", peer, ownNumber, "once"))
		})
	}
	wg.Wait()
	for _, c := range codes {
		if c != http.StatusOK {
			t.Fatalf("answers %v, want 200 for each", codes)
		}
	}
	if n := len(tb.h.Messages()); n != 1 {
		t.Errorf("%d messages for %d identical webhooks, want 1", n, len(codes))
	}
	if m, err := tb.h.St.MessageByForeignID(context.Background(), testDomain, "SMdup"); err != nil || m.JID != userJID {
		t.Errorf("link: %+v %v", m, err)
	}
}

func TestInboundNotCommitted(t *testing.T) {
	tb := newTestBridge(t)
	tb.h.SetFail(errors.New("disk full"))
	// The provider is told to try again: the text is not lost.
	if code := tb.inbound(t, smstest.InboundParams("SMf", peer, ownNumber, "x")); code != http.StatusServiceUnavailable {
		t.Fatalf("webhook when the outbox fails: %d, want 503", code)
	}
	tb.h.SetFail(nil)
	if code := tb.inbound(t, smstest.InboundParams("SMf", peer, ownNumber, "x")); code != http.StatusOK {
		t.Fatalf("webhook retried: %d", code)
	}
	tb.h.WaitMessage(t, "the text", func(e *xmlel.Element) bool { return e.Attr("id") == "SMf" })
}

// A delivery report whose receipt the outbox refuses gets 503: the
// provider reports it again, and the receipt goes out then.
func TestStatusNotCommitted(t *testing.T) {
	tb := newTestBridge(t)
	tb.b.Handle(context.Background(), user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "r1", "receipt?").
		Add(xmlel.New(stanza.NSReceipts, "request")))
	r := tb.p.WaitRequest(t, wantWait, "the text", func(r smstest.Request) bool { return r.Body() == "receipt?" && r.SID != "" })
	// The report comes once the worker has recorded the text (an earlier
	// one is kept for it, and answered 200).
	waitLink(t, tb, r.SID)
	tb.h.SetFail(errors.New("disk full"))
	if code := tb.status(t, r.SID, "delivered", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("status callback when the outbox fails: %d, want 503", code)
	}
	tb.h.SetFail(nil)
	if code := tb.status(t, r.SID, "delivered", ""); code != http.StatusOK {
		t.Fatalf("status callback retried: %d", code)
	}
	tb.h.WaitMessage(t, "the receipt", func(e *xmlel.Element) bool { return e.Child(stanza.NSReceipts, "received").Attr("id") == "r1" })
}

func TestStatusCallbacks(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	send := func(id, body string, receipt bool) smstest.Request {
		t.Helper()
		st := stanza.Message(userFull, peer+"@"+testDomain, "chat", id, body)
		if receipt {
			st.Add(xmlel.New(stanza.NSReceipts, "request"))
		}
		tb.b.Handle(ctx, user(), st)
		return tb.p.WaitRequest(t, wantWait, "text "+id, func(r smstest.Request) bool { return r.Body() == body && r.SID != "" })
	}
	receipt := func(id string) func(*xmlel.Element) bool {
		return func(e *xmlel.Element) bool { return e.Child(stanza.NSReceipts, "received").Attr("id") == id }
	}

	r := send("m1", "first", true)
	if code := tb.status(t, r.SID, "sent", ""); code != http.StatusOK {
		t.Fatalf("sent: %d", code)
	}
	tb.status(t, r.SID, "delivered", "")
	rc := tb.h.WaitMessage(t, "receipt", receipt("m1"))
	if rc.Attr("from") != peer+"@"+testDomain || rc.Attr("to") != userFull {
		t.Errorf("receipt addressing: %s", rc)
	}

	// No receipt unless asked for.
	r = send("m2", "second", false)
	tb.status(t, r.SID, "delivered", "")
	r = send("m3", "third", false)
	tb.status(t, r.SID, "undelivered", "30003")
	e := tb.h.WaitMessage(t, "error for m3", func(e *xmlel.Element) bool { return e.Attr("id") == "m3" })
	if se := stanza.ErrorOf(e); e.Attr("type") != "error" || se.Condition != "recipient-unavailable" || !strings.Contains(se.Text, "30003") {
		t.Errorf("error: %s", e)
	}
	for _, m := range tb.h.Messages() {
		if receipt("m2")(m) {
			t.Errorf("receipt not asked for: %s", m)
		}
	}

	// Unknown SIDs are kept, and applied once the send's answer comes.
	if code := tb.status(t, "SMunknown", "failed", "30005"); code != http.StatusOK {
		t.Fatalf("status for an unknown sid: %d", code)
	}
	x := `{"user":"` + userFull + `","id":"m9","part":1,"parts":1}`
	if err := tb.h.St.PutMessageID(ctx, storeMessage("m9", "SMunknown", x)); err != nil {
		t.Fatal(err)
	}
	s, err := tb.b.takeEarlyStatus(ctx, "SMunknown")
	if err != nil || s == nil || s.Status != "failed" || s.ErrorCode != "30005" {
		t.Fatalf("early status: %+v %v", s, err)
	}
	// Malformed and unsigned callbacks.
	bad := url.Values{"MessageSid": {"SM1"}}
	u := testHook + statusPath
	if code, _, _ := smstest.Post(tb.addr(), u, bad, smstest.Sign(testToken, u, bad)); code != http.StatusBadRequest {
		t.Errorf("status without MessageStatus: %d", code)
	}
	good := smstest.StatusParams(r.SID, "failed", "1")
	if code, _, _ := smstest.Post(tb.addr(), u, good, ""); code != http.StatusForbidden {
		t.Errorf("unsigned status: %d", code)
	}
}

// The provider repeating a status callback, one after the other or at
// once, gets 200 each time; the report is applied once per text and
// status.
func TestStatusRepeated(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	send := func(id, body string, receipt bool) string {
		t.Helper()
		st := stanza.Message(userFull, peer+"@"+testDomain, "chat", id, body)
		if receipt {
			st.Add(xmlel.New(stanza.NSReceipts, "request"))
		}
		tb.b.Handle(ctx, user(), st)
		r := tb.p.WaitRequest(t, wantWait, "text "+id, func(r smstest.Request) bool { return r.Body() == body && r.SID != "" })
		waitLink(t, tb, r.SID)
		return r.SID
	}
	repeat := func(sid, status, code string) {
		t.Helper()
		codes := make([]int, 10)
		var wg sync.WaitGroup
		for i := range codes {
			wg.Go(func() {
				codes[i], _, _ = tb.p.Status(tb.addr(), testHook+statusPath, smstest.StatusParams(sid, status, code))
			})
		}
		wg.Wait()
		codes = append(codes, tb.status(t, sid, status, code))
		for _, c := range codes {
			if c != http.StatusOK {
				t.Fatalf("%s callbacks: %v, want 200 for each", status, codes)
			}
		}
	}
	count := func(match func(*xmlel.Element) bool) int {
		n := 0
		for _, m := range tb.h.Messages() {
			if match(m) {
				n++
			}
		}
		return n
	}
	delivered := send("r1", "receipt once", true)
	repeat(delivered, "delivered", "")
	failed := send("r2", "reported once per status", false)
	repeat(failed, "undelivered", "30005")
	repeat(failed, "failed", "30003")
	receipts := count(func(e *xmlel.Element) bool { return e.Child(stanza.NSReceipts, "received").Attr("id") == "r1" })
	errs := count(func(e *xmlel.Element) bool { return e.Attr("id") == "r2" && e.Attr("type") == "error" })
	notices := count(func(e *xmlel.Element) bool {
		return e.Attr("to") == userJID && strings.Contains(e.ChildText("", "body"), "was not delivered")
	})
	if receipts != 1 || errs != 2 || notices != 2 {
		t.Errorf("%d receipts, %d errors, %d notices; want 1, 2 (one per status) and 2", receipts, errs, notices)
	}
}

// A status callback the store cannot commit gets 503, so that the
// provider tries again; its retry is applied.
func TestFailureStatusNotCommitted(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	tb.b.Handle(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "n1", "not committed"))
	r := tb.p.WaitRequest(t, wantWait, "the text", func(r smstest.Request) bool { return r.Body() == "not committed" && r.SID != "" })
	waitLink(t, tb, r.SID)
	tb.h.SetFail(errors.New("disk full"))
	if code := tb.status(t, r.SID, "undelivered", "30005"); code != http.StatusServiceUnavailable {
		t.Fatalf("status callback when the outbox fails: %d, want 503", code)
	}
	tb.h.SetFail(nil)
	if code := tb.status(t, r.SID, "undelivered", "30005"); code != http.StatusOK {
		t.Fatalf("status callback retried: %d", code)
	}
	tb.h.WaitMessage(t, "the error for n1", func(e *xmlel.Element) bool { return e.Attr("id") == "n1" && e.Attr("type") == "error" })
}

// waitLink waits until the worker has recorded the text's sid.
func waitLink(t *testing.T, tb *testBridge, sid string) {
	t.Helper()
	deadline := time.Now().Add(wantWait)
	for {
		if _, err := tb.h.St.MessageByForeignID(context.Background(), testDomain, sid); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sid %s was not recorded", sid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEarlyStatusAppliedBySend(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	// The fake gives SIDs in sequence: report on the first before it is sent.
	first := "SM00000000000000000000000000000001"
	if code := tb.status(t, first, "delivered", ""); code != http.StatusOK {
		t.Fatalf("early status: %d", code)
	}
	st := stanza.Message(userFull, peer+"@"+testDomain, "chat", "e1", "early").Add(xmlel.New(stanza.NSReceipts, "request"))
	tb.b.Handle(ctx, user(), st)
	tb.h.WaitMessage(t, "receipt", func(e *xmlel.Element) bool { return e.Child(stanza.NSReceipts, "received").Attr("id") == "e1" })
	// The report kept and applied by the worker is not applied again when
	// the provider repeats it.
	if code := tb.status(t, first, "delivered", ""); code != http.StatusOK {
		t.Fatalf("repeated status: %d", code)
	}
	if n := len(tb.h.Messages()); n != 1 {
		t.Errorf("%d messages after the repeated report, want the one receipt", n)
	}
}

// A media URL with bytes XML cannot carry reaches the user percent-encoded,
// whole, in the body and in the XEP-0066 link.
func TestInboundMediaURLEscaped(t *testing.T) {
	tb := newTestBridge(t)
	tb.inbound(t, smstest.InboundParams("SMu", peer, ownNumber, "", "http://m.test/\x89a\x01b?q=\xff#é"))
	m := tb.h.WaitMessage(t, "the text", func(e *xmlel.Element) bool { return e.Attr("id") == "SMu" })
	const want = "http://m.test/%89a%01b?q=%FF#é"
	if b := m.ChildText("", "body"); b != want {
		t.Errorf("body %q, want %q", b, want)
	}
	if xs := m.ChildrenNamed(stanza.NSOOB, "x"); len(xs) != 1 || xs[0].ChildText("", "url") != want {
		t.Errorf("OOB: %s", m)
	}
}

// webhookBridge starts a bridge serving its webhooks on a loopback port,
// with alice registered; stop stops it.
func webhookBridge(t *testing.T, h *bridgetest.Host) (b *Bridge, p *smstest.Provider, stop context.CancelFunc, wait func() error) {
	t.Helper()
	p = smstest.Start(t, testSID, testToken)
	b = New(Options{Numbers: []string{ownNumber}, Region: "US", APIURL: p.URL(), AccountSID: testSID, AuthToken: testToken,
		WebhookListen: "127.0.0.1:0", WebhookURL: testHook + "/"})
	ctx, cancel := context.WithCancel(context.Background())
	wait = start(t, ctx, b, h)
	t.Cleanup(func() { cancel(); wait() })
	if err := h.St.PutRegistration(ctx, testDomain, userJID, map[string]string{"number": ownNumber}, []string{ownNumber}); err != nil {
		t.Fatal(err)
	}
	return b, p, cancel, wait
}

// waitReturns runs wait and reports whether it returned within d.
func waitReturns(wait func() error, d time.Duration) (returned <-chan struct{}, within bool) {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
		return done, true
	case <-time.After(d):
		return done, false
	}
}

// A stop lets the webhooks being answered finish: the provider gets its
// 200 for a text that was delivered, and Run returns only then.
func TestStopAnswersWebhooks(t *testing.T) {
	h := newFakeHost(t)
	entered, release := make(chan struct{}), make(chan struct{})
	h.OnCommit(func(context.Context) { close(entered); <-release })
	b, p, stop, wait := webhookBridge(t, h)
	code := make(chan int, 1)
	go func() {
		c, _, err := p.Inbound(b.webhookAddr.String(), testHook, smstest.InboundParams("SMstop", "+15557654321", ownNumber, "late"))
		if err != nil {
			t.Error(err)
		}
		code <- c
	}()
	<-entered
	stop()
	done, returned := waitReturns(wait, 100*time.Millisecond)
	if returned {
		t.Fatal("Run returned while a webhook was being answered")
	}
	close(release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once the webhook was answered")
	}
	if c := <-code; c != http.StatusOK {
		t.Fatalf("the webhook answered during the stop: %d, want 200", c)
	}
	h.WaitMessage(t, "the text", func(e *xmlel.Element) bool { return e.Attr("id") == "SMstop" })
}

// A webhook still being answered after shutdownWait is cut off: its
// context is cancelled (the store's calls return then) and Run returns only
// once it has returned, so that nothing touches the store after Run.
func TestStopCutsOffHungWebhook(t *testing.T) {
	h := newFakeHost(t)
	entered, hookDone := make(chan struct{}), make(chan struct{})
	h.OnCommit(func(ctx context.Context) { close(entered); <-ctx.Done(); close(hookDone) })
	b, p, stop, wait := webhookBridge(t, h)
	b.shutdownWait = 200 * time.Millisecond
	code := make(chan int, 1)
	go func() {
		c, _, _ := p.Inbound(b.webhookAddr.String(), testHook, smstest.InboundParams("SMhung", "+15557654321", ownNumber, "hung"))
		code <- c
	}()
	<-entered
	stop()
	if _, returned := waitReturns(wait, 5*time.Second); !returned {
		t.Fatalf("Run still blocked 5 s after a stop with shutdownWait %v", b.shutdownWait)
	}
	select {
	case <-hookDone:
	default:
		t.Fatal("Run returned while a webhook was still being answered")
	}
	if c := <-code; c == http.StatusOK {
		t.Fatal("a webhook cut off by the stop was answered 200")
	}
	if n, err := h.St.CountStanzas(context.Background(), testDomain); err != nil || n != 0 {
		t.Fatalf("%d stanzas committed for a webhook cut off by the stop (%v)", n, err)
	}
}

// A webhook arriving once the stop has waited for the others is not
// served: 503, so that the provider sends it again.
func TestWebhookAfterStop(t *testing.T) {
	var running sync.RWMutex
	served := false
	h := whileRunning(&running, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true }))
	running.Lock()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, inboundPath, nil))
	if w.Code != http.StatusServiceUnavailable || served {
		t.Fatalf("got %d (served %v), want 503", w.Code, served)
	}
	running.Unlock()
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, inboundPath, nil))
	if !served {
		t.Fatalf("not served while running: %d", w.Code)
	}
}
