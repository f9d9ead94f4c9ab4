package main

// End-to-end tests of the failure notices of the SMS bridge: a text that
// fails for good after its sender went offline is reported by a chat
// notice to the sender's bare JID, which the XMPP server keeps in offline
// storage and delivers when the user comes back.

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"passerelle/bridges/sms/smstest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// serverLogged counts the lines of Prosody's (debug) log that contain
// every one of parts.
func serverLogged(t *testing.T, srv harness.Server, parts ...string) int {
	t.Helper()
	lp, ok := srv.(interface{ LogPath() string })
	if !ok {
		t.Fatalf("%s has no log to read", srv.Name())
	}
	b, err := os.ReadFile(lp.LogPath())
	if err != nil {
		t.Fatalf("reading the server log: %v", err)
	}
	return linesWith(string(b), parts...)
}

// linesWith counts the lines of text that contain every one of parts.
func linesWith(text string, parts ...string) int {
	n := 0
lines:
	for _, line := range strings.Split(text, "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		n++
	}
	return n
}

// waitServerLogged waits until Prosody has logged n lines containing every
// one of parts.
func waitServerLogged(t *testing.T, srv harness.Server, n int, desc string, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for serverLogged(t, srv, parts...) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the server logged %d lines with %q within %v, want %d\n%s",
				desc, serverLogged(t, srv, parts...), parts, wait, n, srv.LogTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// offlineSaved are the parts of the line mod_offline logs when it keeps a
// message from from to to.
func offlineSaved(from, to string) []string {
	return []string{"Saved to offline storage", "from='" + from + "'", "to='" + to + "'"}
}

// errorReceived are the parts of the line Prosody logs when the gateway
// sends it an error stanza from from to to answering message id.
func errorReceived(from, to, id string) []string {
	return []string{"Received[component]", "<message ", "type='error'", "from='" + from + "'", "to='" + to + "'", "id='" + id + "'"}
}

// checkNotice checks a failure notice delivered from offline storage: a
// chat message from contact to the bare JID user with exactly body, the
// XEP-0334 store hint, and the server's XEP-0203 delay.
func checkNotice(t *testing.T, m *xmlel.Element, contact, user, body string) {
	t.Helper()
	if got := m.Attr("from"); got != contact {
		t.Errorf("notice from %q, want %q", got, contact)
	}
	if got := m.Attr("to"); got != user {
		t.Errorf("notice to %q, want the bare JID %q", got, user)
	}
	if got := m.Attr("type"); got != "chat" {
		t.Errorf("notice of type %q, want chat", got)
	}
	if got := m.ChildText("", "body"); got != body {
		t.Errorf("notice body:\n got %q\nwant %q", got, body)
	}
	if m.Child("urn:xmpp:hints", "store") == nil {
		t.Errorf("notice without the <store/> hint: %s", m)
	}
	d := m.Child("urn:xmpp:delay", "delay")
	if d == nil {
		t.Fatalf("notice without <delay/>: it was not delivered from offline storage: %s", m)
	}
	if d.Attr("from") != "localhost" {
		t.Errorf("delay from %q, want the user's server localhost", d.Attr("from"))
	}
	if _, err := time.Parse(time.RFC3339, d.Attr("stamp")); err != nil {
		t.Errorf("delay stamp %q: %v", d.Attr("stamp"), err)
	}
}

// TestSMSNoticeOffline: a text that fails for good while its sender is
// offline, refused by the provider on a retry or reported undelivered by
// a status callback, is reported by a notice the user gets on coming back.
func TestSMSNoticeOffline(t *testing.T) {
	srv := startServer(t, "prosody")
	e := startSMS(t, srv)
	const user = "alice@localhost"
	pw := srv.AddUser(t, user)
	alice := harness.Dial(t, srv.C2SAddr(), user, pw, "phone")
	wantResult(t, register(alice, t, smsDomain, "number", aliceNumber), "alice claims a number")
	acceptGateway(t, alice, smsDomain)
	contactJID := contact + "@" + smsDomain

	t.Run("queued text refused after the sender left", func(t *testing.T) {
		const body = "refused while you were away"
		forBody := func() []smstest.Request {
			var out []smstest.Request
			for _, r := range e.p.Requests() {
				if r.Body() == body {
					out = append(out, r)
				}
			}
			return out
		}
		// Temporary failures until the sender has gone (more than the
		// retries that can happen meanwhile; the fake accepts with 201
		// once they are used up).
		var unavailable []int
		for range 30 {
			unavailable = append(unavailable, http.StatusServiceUnavailable)
		}
		e.p.Respond(unavailable...)
		sendText(t, alice, contactJID, "a1", body, false)
		e.p.WaitRequest(t, wait, "the first try, answered 503", func(r smstest.Request) bool {
			return r.Body() == body && r.Status == http.StatusServiceUnavailable
		})
		saved := serverLogged(t, srv, offlineSaved(contactJID, user)...)
		alice.Close()

		// A retry after alice left, still 503: the next one is about a
		// second later (PASSERELLE_RETRY_MAX_DELAY=1s), and is refused.
		before := len(forBody())
		e.p.WaitRequest(t, wait, "a retry after the sender left", func(smstest.Request) bool { return len(forBody()) > before })
		e.p.ClearScript()
		e.p.Respond(http.StatusBadRequest)
		e.p.WaitRequest(t, 30*time.Second, "the retry refused with 400", func(r smstest.Request) bool {
			return r.Body() == body && r.Status == http.StatusBadRequest
		})
		// The error to the resource that sent the text, which the server
		// drops (it is gone), and the notice, which it keeps.
		waitServerLogged(t, srv, 1, "the error for a1", errorReceived(contactJID, user+"/phone", "a1")...)
		waitServerLogged(t, srv, saved+1, "the notice kept offline", offlineSaved(contactJID, user)...)

		// Only temporary failures, then the refusal: the text was never
		// accepted.
		var statuses []int
		for _, r := range forBody() {
			statuses = append(statuses, r.Status)
		}
		n := len(statuses)
		ok := n >= 3 && statuses[n-1] == http.StatusBadRequest
		for _, s := range statuses[:max(n-1, 0)] {
			ok = ok && s == http.StatusServiceUnavailable
		}
		if !ok {
			t.Errorf("provider answers for the text: %v, want at least two 503s then one 400", statuses)
		}

		back := harness.Dial(t, srv.C2SAddr(), user, pw, "laptop")
		m := back.Expect(t, wait, "the refusal notice from offline storage", harness.MessageFrom(contactJID, "refused"))
		checkNotice(t, m, contactJID, user, "The text to "+contact+" was refused by the SMS provider: The 'To' number "+
			contact+" is not a valid phone number. (error 21211).\nYour message: “"+body+"”")
		back.Close()
	})

	t.Run("delivery report after the sender left", func(t *testing.T) {
		const body = "lost on the way"
		c := harness.Dial(t, srv.C2SAddr(), user, pw, "phone")
		sendText(t, c, contactJID, "b1", body, false)
		r := e.p.WaitRequest(t, wait, "the text", okText(body))
		// The gateway has recorded the text's SID.
		e.gw.WaitOutput(t, wait, "sid="+r.SID+" attempts=1")
		saved := serverLogged(t, srv, offlineSaved(contactJID, user)...)
		c.Close()

		params := smstest.StatusParams(r.SID, "undelivered", "30005")
		params.Set("ErrorMessage", "Unknown destination handset")
		code, ans, err := e.p.Status(e.hook, r.StatusCallback(), params)
		if err != nil || code != http.StatusOK {
			t.Fatalf("status callback undelivered: %d %q %v", code, ans, err)
		}
		waitServerLogged(t, srv, 1, "the error for b1", errorReceived(contactJID, user+"/phone", "b1")...)
		waitServerLogged(t, srv, saved+1, "the notice kept offline", offlineSaved(contactJID, user)...)

		back := harness.Dial(t, srv.C2SAddr(), user, pw, "laptop")
		m := back.Expect(t, wait, "the undelivered notice from offline storage", harness.MessageFrom(contactJID, "not delivered"))
		checkNotice(t, m, contactJID, user,
			"The text to "+contact+" was not delivered (undelivered, error 30005: Unknown destination handset).")
	})
}
