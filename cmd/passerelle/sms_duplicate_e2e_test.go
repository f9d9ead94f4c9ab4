package main

// End-to-end tests of webhooks the provider delivers more than once, one
// after the other or at the same moment: a text reaches its user once, and
// a delivery report is applied once per text and status.

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges/sms/smstest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// dupConcurrent is how many identical webhooks are posted at once.
const dupConcurrent = 20

// postAtOnce posts params, signed, to the webhook at the public URL
// hookURL n times at once and returns the answers' status codes: it first
// opens n connections to the gateway's listener at addr, then writes the
// same request on all of them together, so that the gateway takes them at
// the same moment.
func postAtOnce(t *testing.T, n int, addr, hookURL string, params url.Values) []int {
	t.Helper()
	u, err := url.Parse(hookURL)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+u.Path, strings.NewReader(params.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", smstest.Sign(smsToken, hookURL, params))
	var raw bytes.Buffer
	if err := req.Write(&raw); err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, wait)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, n, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		conns[i] = c
	}
	codes := make([]int, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			<-start
			if _, errs[i] = c.Write(raw.Bytes()); errs[i] != nil {
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), req)
			if errs[i] = err; err == nil {
				codes[i] = resp.StatusCode
				resp.Body.Close()
			}
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("webhook %d of %d: %v", i+1, n, err)
		}
	}
	return codes
}

// wantAllOK fails the test unless every code is 200.
func wantAllOK(t *testing.T, what string, codes []int) {
	t.Helper()
	for _, c := range codes {
		if c != http.StatusOK {
			t.Fatalf("%s: answers %v, want 200 for every one (the provider must not retry)", what, codes)
		}
	}
}

// countReceived counts the stanzas c received that match.
func countReceived(c *harness.Client, match func(*xmlel.Element) bool) int {
	n := 0
	for _, e := range c.Received() {
		if match(e) {
			n++
		}
	}
	return n
}

// TestSMSDuplicateWebhooks: rounds of identical signed webhooks at the same
// moment, then replays, each get 200; alice receives each text once, and
// one receipt or notice per text and status.
func TestSMSDuplicateWebhooks(t *testing.T) {
	srv := startServer(t, "prosody")
	e := startSMS(t, srv)
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, smsDomain, "number", aliceNumber), "alice claims a number")
	acceptGateway(t, alice, smsDomain)
	const sender = "+15557654321"
	from := sender + "@" + smsDomain
	contactJID := contact + "@" + smsDomain

	// flush posts a new text and waits until alice has it: the gateway's
	// outbox keeps its order, so whatever the webhooks answered before
	// queued for her has arrived by then.
	flushes := 0
	flush := func(t *testing.T) {
		t.Helper()
		flushes++
		body := fmt.Sprintf("flush %d", flushes)
		if code, ans := e.inbound(t, fmt.Sprintf("SMflush%d", flushes), sender, aliceNumber, body); code != http.StatusOK {
			t.Fatalf("flush text: %d %q", code, ans)
		}
		alice.Expect(t, wait, "the flush text", harness.MessageFrom(from, body))
	}

	t.Run("inbound texts", func(t *testing.T) {
		// 5 rounds were counted when the race was found; more make it
		// more likely to show.
		const rounds = 20
		withBody := func(body string) func(*xmlel.Element) bool {
			return func(m *xmlel.Element) bool {
				return harness.IsMessage(m) && harness.Bare(m.Attr("from")) == from && m.ChildText("", "body") == body
			}
		}
		total, first5 := 0, 0
		for i := range rounds {
			sid := fmt.Sprintf("SMdup%02d", i)
			body := fmt.Sprintf("duplicated text %d", i)
			params := smstest.InboundParams(sid, sender, aliceNumber, body)
			post := func() (int, string, error) { return e.p.Inbound(e.hook, smsPublicURL, params) }
			wantAllOK(t, "concurrent duplicates", postAtOnce(t, dupConcurrent, e.hook, smsPublicURL+"/sms/inbound", params))
			// And replays after the first was taken.
			for range 3 {
				code, ans, err := post()
				if err != nil || code != http.StatusOK {
					t.Fatalf("replayed webhook: %d %q %v", code, ans, err)
				}
			}
			flush(t)
			n := countReceived(alice, withBody(body))
			total += n
			if i < 5 {
				first5 += n
			}
			if n != 1 {
				t.Errorf("round %d: alice received the text %d times, want once", i+1, n)
			}
		}
		t.Logf("rounds of %d concurrent identical webhooks (and 3 replays each): %d messages for the first 5, %d for all %d",
			dupConcurrent, first5, total, rounds)
	})

	// replay posts the status callback of r at once dupConcurrent times,
	// then 3 times one after the other.
	replay := func(t *testing.T, r smstest.Request, status, code string) {
		t.Helper()
		params := smstest.StatusParams(r.SID, status, code)
		post := func() (int, string, error) { return e.p.Status(e.hook, r.StatusCallback(), params) }
		wantAllOK(t, "concurrent "+status+" callbacks", postAtOnce(t, dupConcurrent, e.hook, r.StatusCallback(), params))
		for range 3 {
			got, ans, err := post()
			if err != nil || got != http.StatusOK {
				t.Fatalf("replayed %s callback: %d %q %v", status, got, ans, err)
			}
		}
	}
	// sent sends a text from alice and waits until the gateway has
	// recorded its SID.
	sent := func(t *testing.T, id, body string, receipt bool) smstest.Request {
		t.Helper()
		sendText(t, alice, contactJID, id, body, receipt)
		r := e.p.WaitRequest(t, wait, "the text "+id, okText(body))
		e.gw.WaitOutput(t, wait, "sid="+r.SID+" attempts=1")
		return r
	}

	t.Run("status callbacks", func(t *testing.T) {
		r1 := sent(t, "dup-r1", "one receipt", true)
		replay(t, r1, "delivered", "")
		r2 := sent(t, "dup-r2", "one notice per status", false)
		replay(t, r2, "undelivered", "30005")
		// Another status of the same text is another report.
		replay(t, r2, "failed", "30003")
		flush(t)

		receipts := countReceived(alice, receiptFor(contactJID, "dup-r1"))
		errs := countReceived(alice, errorWithID("dup-r2"))
		notice := func(status string) func(*xmlel.Element) bool {
			return func(m *xmlel.Element) bool {
				return harness.IsMessage(m) && m.Attr("type") == "chat" && harness.Bare(m.Attr("from")) == contactJID &&
					strings.HasPrefix(m.ChildText("", "body"), "The text to "+contact+" was not delivered ("+status+",")
			}
		}
		undelivered, failed := countReceived(alice, notice("undelivered")), countReceived(alice, notice("failed"))
		t.Logf("%d callbacks per (sid, status): %d receipts (delivered), %d notices (undelivered), %d notices (failed), %d error stanzas",
			dupConcurrent+3, receipts, undelivered, failed, errs)
		if receipts != 1 || undelivered != 1 || failed != 1 || errs != 2 {
			t.Errorf("got %d receipts, %d undelivered and %d failed notices, %d errors; want 1, 1, 1 and 2 (one per status)",
				receipts, undelivered, failed, errs)
		}
		for _, m := range alice.Received() {
			if errorWithID("dup-r2")(m) && !strings.Contains(stanza.ErrorOf(m).Text, "not delivered") {
				t.Errorf("error for dup-r2 without the report: %s", m)
			}
		}
	})
}
