package main

// End-to-end tests of the SMS bridge: the built binary against a real
// Prosody, with the fake Twilio-compatible provider of bridges/sms/smstest
// standing in for the SMS provider (which cannot run here).

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"passerelle/bridges/sms/smstest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

const (
	smsSID       = "ACe2e0000000000000000000000000000"
	smsToken     = "e2e-auth-token"
	smsPublicURL = "https://sms-hooks.example.test/passerelle"
	aliceNumber  = "+15550001111"
	otherNumber  = "+15550002222"
	contact      = "+15551234567"
)

// smsEnv is a gateway with only the SMS bridge, talking to a fake provider.
type smsEnv struct {
	*gwEnv
	p    *smstest.Provider
	hook string // the webhook listener's address
}

// startSMS starts it; tune, when given, changes the configuration first.
func startSMS(t *testing.T, srv harness.Server, tune ...func(env map[string]string)) *smsEnv {
	p := smstest.Start(t, smsSID, smsToken)
	env := baseEnv(t, srv)
	delete(env, "PASSERELLE_IRC_DOMAIN")
	delete(env, "PASSERELLE_EMAIL_DOMAIN")
	hook := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	for k, v := range map[string]string{
		"PASSERELLE_SMS_API_URL":        p.URL(),
		"PASSERELLE_SMS_ACCOUNT_SID":    smsSID,
		"PASSERELLE_SMS_AUTH_TOKEN":     smsToken,
		"PASSERELLE_SMS_WEBHOOK_LISTEN": hook,
		"PASSERELLE_SMS_WEBHOOK_URL":    smsPublicURL,
		"PASSERELLE_RETRY_MAX_DELAY":    "1s",
	} {
		env[k] = v
	}
	for _, f := range tune {
		f(env)
	}
	e := startGateway(t, srv, env)
	e.gw.WaitOutput(t, wait, `msg="SMS webhooks listening"`)
	return &smsEnv{gwEnv: e, p: p, hook: hook}
}

// restart starts the gateway again on the same database.
func (e *smsEnv) restart(t *testing.T) {
	e.gw = harness.StartGateway(t, e.bin, e.env)
	e.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+smsDomain)
	e.gw.WaitOutput(t, wait, `msg="SMS webhooks listening"`)
}

// inbound posts a signed inbound text and returns the HTTP status.
func (e *smsEnv) inbound(t *testing.T, sid, from, to, body string, media ...string) (int, string) {
	t.Helper()
	code, ans, err := e.p.Inbound(e.hook, smsPublicURL, smstest.InboundParams(sid, from, to, body, media...))
	if err != nil {
		t.Fatalf("inbound webhook: %v", err)
	}
	return code, ans
}

// status posts a signed status callback for the text r.
func (e *smsEnv) status(t *testing.T, r smstest.Request, status, code string) {
	t.Helper()
	got, ans, err := e.p.Status(e.hook, r.StatusCallback(), smstest.StatusParams(r.SID, status, code))
	if err != nil || got != http.StatusOK {
		t.Fatalf("status callback %s: %d %q %v", status, got, ans, err)
	}
}

// sendText sends a chat message from c to number (a JID localpart).
func sendText(t *testing.T, c *harness.Client, to, id, body string, receipt bool) {
	t.Helper()
	req := ""
	if receipt {
		req = "<request xmlns='urn:xmpp:receipts'/>"
	}
	c.Send(t, "<message to='%s' id='%s' type='chat'><body>%s</body>%s</message>", harness.Esc(to), id, harness.Esc(body), req)
}

// okText matches a request with that body the fake accepted.
func okText(body string) func(smstest.Request) bool {
	return func(r smstest.Request) bool { return r.Body() == body && r.SID != "" }
}

func errorWithID(id string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return harness.IsMessage(e) && e.Attr("id") == id && e.Attr("type") == "error"
	}
}

func receiptFor(from, id string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		r := e.Child("urn:xmpp:receipts", "received")
		return harness.IsMessage(e) && harness.Bare(e.Attr("from")) == from && r != nil && r.Attr("id") == id
	}
}

func TestSMS(t *testing.T) {
	srv := startServer(t, "prosody")
	e := startSMS(t, srv)
	alice := e.dial(t, "alice@localhost")
	bob := e.dial(t, "bob@localhost")
	contactJID := contact + "@" + smsDomain

	t.Run("register and claim", func(t *testing.T) {
		wantResult(t, register(alice, t, smsDomain, "number", "(555) 000-1111"), "alice claims a number")
		acceptGateway(t, alice, smsDomain)
		wantError(t, register(bob, t, smsDomain, "number", aliceNumber), "conflict", "bob claiming alice's number")
	})

	t.Run("outbound text", func(t *testing.T) {
		sendText(t, alice, contactJID, "o1", "Hello from XMPP <&>", true)
		r := e.p.WaitRequest(t, wait, "the text", okText("Hello from XMPP <&>"))
		if r.From() != aliceNumber || r.To() != contact {
			t.Fatalf("From %q To %q, want %s and %s", r.From(), r.To(), aliceNumber, contact)
		}
		if want := smsPublicURL + "/sms/status"; r.StatusCallback() != want {
			t.Fatalf("StatusCallback = %q, want %q", r.StatusCallback(), want)
		}
		// Delivered: the receipt the message asked for.
		e.status(t, r, "sent", "")
		e.status(t, r, "delivered", "")
		alice.Expect(t, wait, "receipt for o1", receiptFor(contactJID, "o1"))
	})

	t.Run("number typed in national format", func(t *testing.T) {
		r := alice.IQ(t, "set", smsDomain, "<query xmlns='jabber:iq:gateway'><prompt>(555) 123-4567</prompt></query>")
		wantResult(t, r, "gateway prompt")
		jid := r.Child("jabber:iq:gateway", "query").ChildText("", "jid")
		if jid != contactJID {
			t.Fatalf("prompt gave %q", jid)
		}
		sendText(t, alice, jid, "o2", "typed nationally", false)
		if got := e.p.WaitRequest(t, wait, "the text", okText("typed nationally")); got.To() != contact {
			t.Fatalf("To = %q", got.To())
		}
	})

	t.Run("invalid number", func(t *testing.T) {
		sendText(t, alice, "12@"+smsDomain, "bad1", "to nowhere", false)
		wantError(t, alice.Expect(t, wait, "error for a bad number", errorWithID("bad1")), "jid-malformed", "bad number")
	})

	t.Run("inbound text", func(t *testing.T) {
		code, ans := e.inbound(t, "SMin1", "+15557654321", aliceNumber, "Hi alice", "https://media.example.test/cat.jpg")
		if code != http.StatusOK || !strings.Contains(ans, "<Response/>") {
			t.Fatalf("inbound webhook answered %d %q", code, ans)
		}
		m := alice.Expect(t, wait, "the inbound text", harness.MessageFrom("+15557654321@"+smsDomain, "Hi alice"))
		if m.Attr("type") != "chat" {
			t.Errorf("type = %q", m.Attr("type"))
		}
		if u := m.Child(stanza.NSOOB, "x").ChildText("", "url"); u != "https://media.example.test/cat.jpg" {
			t.Errorf("OOB url = %q in %s", u, m)
		}
		if b := m.ChildText("", "body"); !strings.Contains(b, "https://media.example.test/cat.jpg") {
			t.Errorf("body lacks the media link: %q", b)
		}
	})

	t.Run("forged webhooks refused", func(t *testing.T) {
		params := smstest.InboundParams("SMforged", "+15557654321", aliceNumber, "forged text")
		u := smsPublicURL + "/sms/inbound"
		for name, sig := range map[string]string{
			"missing":   "",
			"bad":       "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
			"wrong key": smstest.Sign("not-the-token", u, params),
			"wrong url": smstest.Sign(smsToken, "http://"+e.hook+"/sms/inbound", params),
		} {
			code, _, err := smstest.Post(e.hook, u, params, sig)
			if err != nil || code != http.StatusForbidden {
				t.Errorf("%s signature: %d %v, want 403", name, code, err)
			}
		}
		e.gw.WaitOutput(t, wait, "refused an SMS webhook with a bad or missing signature")
		// A genuine text sent afterwards arrives; the forged one never did.
		if code, _ := e.inbound(t, "SMafter", "+15557654321", aliceNumber, "genuine after forged"); code != http.StatusOK {
			t.Fatalf("genuine webhook: %d", code)
		}
		alice.Expect(t, wait, "the genuine text", harness.MessageFrom("+15557654321@"+smsDomain, "genuine after forged"))
		for _, m := range alice.Received() {
			if strings.Contains(m.ChildText("", "body"), "forged text") {
				t.Fatalf("a forged text was delivered: %s", m)
			}
		}
	})

	t.Run("inbound for other numbers", func(t *testing.T) {
		if code, _ := e.inbound(t, "SMnotours", "+15557654321", "+15559990000", "not ours"); code != http.StatusNotFound {
			t.Errorf("text for a number that is not the gateway's: %d, want 404", code)
		}
		e.gw.WaitOutput(t, wait, "refused an inbound text for a number that is not the gateway's")
		if code, _ := e.inbound(t, "SMunclaimed", "+15557654321", otherNumber, "nobody's"); code != http.StatusOK {
			t.Errorf("text for an unclaimed number: %d, want 200", code)
		}
		e.gw.WaitOutput(t, wait, "kept an inbound text for a number nobody has claimed")
	})

	t.Run("failed delivery", func(t *testing.T) {
		sendText(t, alice, contactJID, "o3", "will fail", true)
		r := e.p.WaitRequest(t, wait, "the text", okText("will fail"))
		e.status(t, r, "failed", "30003")
		el := alice.Expect(t, wait, "error for o3", errorWithID("o3"))
		wantError(t, el, "recipient-unavailable", "failed text")
		if txt := stanza.ErrorOf(el).Text; !strings.Contains(txt, "30003") {
			t.Errorf("error text %q lacks the provider's code", txt)
		}
		if harness.Bare(el.Attr("from")) != contactJID {
			t.Errorf("error from %q", el.Attr("from"))
		}
	})

	t.Run("retry after 500 and 429", func(t *testing.T) {
		e.p.Respond(500, 429)
		sendText(t, alice, contactJID, "o4", "retried text", true)
		r := e.p.WaitRequest(t, 30*time.Second, "the text accepted after two refusals", okText("retried text"))
		e.status(t, r, "delivered", "")
		alice.Expect(t, wait, "receipt for o4", receiptFor(contactJID, "o4"))
		var statuses []int
		for _, q := range e.p.Requests() {
			if q.Body() == "retried text" {
				statuses = append(statuses, q.Status)
			}
		}
		if fmt.Sprint(statuses) != "[500 429 201]" {
			t.Errorf("provider answers for the text: %v, want [500 429 201]", statuses)
		}
	})

	t.Run("400 refused", func(t *testing.T) {
		e.p.Respond(400)
		sendText(t, alice, contactJID, "o5", "refused text", false)
		el := alice.Expect(t, wait, "error for o5", errorWithID("o5"))
		wantError(t, el, "not-acceptable", "refused text")
		if txt := stanza.ErrorOf(el).Text; !strings.Contains(txt, "is not a valid phone number") {
			t.Errorf("error text %q lacks the provider's message", txt)
		}
	})

	t.Run("long message split", func(t *testing.T) {
		long := strings.Repeat("0123456789 ", 200) // 2200 characters
		sendText(t, alice, contactJID, "o6", long, false)
		parts := func() []smstest.Request {
			var out []smstest.Request
			for _, r := range e.p.Requests() {
				if r.SID != "" && strings.HasPrefix(r.Body(), "0123456789") {
					out = append(out, r)
				}
			}
			return out
		}
		e.p.WaitRequest(t, wait, "two parts", func(smstest.Request) bool { return len(parts()) == 2 })
		var got string
		for _, r := range parts() {
			if n := len([]rune(r.Body())); n > 1600 || r.To() != contact || r.From() != aliceNumber {
				t.Fatalf("part of %d characters from %s to %s", n, r.From(), r.To())
			}
			got += r.Body()
		}
		if got != long {
			t.Fatalf("the parts do not make up the message")
		}
	})

	t.Run("queued text sent after restart", func(t *testing.T) {
		e.p.Respond(500, 500, 500, 500, 500, 500, 500, 500, 500, 500)
		sendText(t, alice, contactJID, "o7", "survives a restart", false)
		e.p.WaitRequest(t, wait, "the first try", func(r smstest.Request) bool { return r.Body() == "survives a restart" })
		e.gw.Signal(syscall.SIGTERM)
		if code := e.gw.Wait(t, wait); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		e.p.ClearScript()
		e.restart(t)
		e.p.WaitRequest(t, 30*time.Second, "the text sent after the restart", okText("survives a restart"))
	})
}

// TestSMSQueuedDuringOutage: texts accepted by the webhook while the XMPP
// server is down, or just before the gateway is killed, still arrive.
func TestSMSQueuedDuringOutage(t *testing.T) {
	srv := startServer(t, "prosody")
	e := startSMS(t, srv)
	pw := srv.AddUser(t, "carol@localhost")
	carol := harness.Dial(t, srv.C2SAddr(), "carol@localhost", pw, "phone")
	wantResult(t, register(carol, t, smsDomain, "number", aliceNumber), "carol claims a number")
	acceptGateway(t, carol, smsDomain)
	carol.Close()
	from := "+15557654321@" + smsDomain

	t.Run("xmpp server down", func(t *testing.T) {
		srv.Stop(t)
		code, _ := e.inbound(t, "SMoutage", "+15557654321", aliceNumber, "sent while the server was down")
		if code != http.StatusOK {
			t.Fatalf("webhook during the outage: %d, want 200", code)
		}
		srv.Start(t)
		c := harness.Dial(t, srv.C2SAddr(), "carol@localhost", pw, "after-restart")
		c.Expect(t, 60*time.Second, "the text sent during the outage", harness.MessageFrom(from, "sent while the server was down"))
		c.Close()
	})

	t.Run("gateway killed", func(t *testing.T) {
		code, _ := e.inbound(t, "SMkilled", "+15557654321", aliceNumber, "sent just before SIGKILL")
		e.gw.Signal(syscall.SIGKILL)
		if code != http.StatusOK {
			t.Fatalf("webhook: %d, want 200", code)
		}
		e.gw.Wait(t, wait)
		e.restart(t)
		c := harness.Dial(t, srv.C2SAddr(), "carol@localhost", pw, "after-kill")
		c.Expect(t, 30*time.Second, "the text taken before the kill", harness.MessageFrom(from, "sent just before SIGKILL"))
	})
}

// TestSMSWebhookPortTaken: a webhook listener that cannot be opened is a
// fatal error naming the variable.
func TestSMSWebhookPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := map[string]string{
		"PASSERELLE_XMPP_ADDR":          "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
		"PASSERELLE_XMPP_SECRET":        "s",
		"PASSERELLE_DB":                 filepath.Join(t.TempDir(), "passerelle.db"),
		"PASSERELLE_SMS_DOMAIN":         smsDomain,
		"PASSERELLE_SMS_WEBHOOK_LISTEN": ln.Addr().String(),
		"PASSERELLE_SMS_WEBHOOK_URL":    smsPublicURL,
	}
	gw := harness.StartGateway(t, harness.BuildBinary(t), env)
	if code := gw.Wait(t, wait); code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, gw.Output())
	}
	if !strings.Contains(gw.Output(), "PASSERELLE_SMS_WEBHOOK_LISTEN") {
		t.Fatalf("the message does not name PASSERELLE_SMS_WEBHOOK_LISTEN:\n%s", gw.Output())
	}
}
