package sms

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"passerelle/bridges/sms/smstest"
	"passerelle/component/stanza"
	"passerelle/mapping"
)

// FuzzNumberInput: whatever a user types into the address prompt, a JID
// the bridge hands out maps back to the same number, and outbound
// addressing accepts it.
func FuzzNumberInput(f *testing.F) {
	for _, s := range []string{"(555) 123-4567", "+44 20 7946 0958", "72345", "0044 20 7946 0958", "+1 (555) 123-4567 ext 2",
		"555-CALL", "", "+", "+0123", "1234567890123456789", "\u0660\u0661\u0662", "+1\t555\t123\t4567", "(((", "+1 555 123 4567/"} {
		f.Add(s, "US")
		f.Add(s, "GB")
	}
	f.Fuzz(func(t *testing.T, input, region string) {
		if region != "US" && region != "GB" && region != "FR" {
			region = "US"
		}
		b := New(Options{Region: region})
		local, err := b.Translate(context.Background(), input)
		if err != nil {
			if se, ok := err.(*stanza.Error); !ok || se.Condition != "jid-malformed" || se.Text == "" {
				t.Fatalf("Translate(%q) error %#v is not jid-malformed with a text", input, err)
			}
			return
		}
		n, err := mapping.NumberFromLocal(local)
		if err != nil || n != local {
			t.Fatalf("Translate(%q) = %q, which NumberFromLocal reads as %q, %v", input, local, n, err)
		}
		if strings.ContainsAny(local, " \t()-./@") {
			t.Fatalf("Translate(%q) = %q keeps separators", input, local)
		}
	})
}

// FuzzWebhook: any signed form posted to either webhook gets a definite
// answer, and an accepted inbound text is delivered once, from a JID the
// bridge can parse back.
func FuzzWebhook(f *testing.F) {
	for _, v := range []url.Values{
		smstest.InboundParams("SM1", "+15557654321", ownNumber, "hi"),
		smstest.InboundParams("SM2", "(555) 765-4321", ownNumber, "", "https://m.test/a.jpg"),
		smstest.InboundParams("SM3", "ACME", freeNumber, "code 1234"),
		smstest.InboundParams("SM4", "72345", "+1 555 000 1111", "x", "ftp://bad"),
		smstest.StatusParams("SM5", "delivered", ""),
		smstest.StatusParams("SM6", "failed", "30003"),
		{"MessageSid": {"SM7"}, "From": {"+15557654321"}, "To": {ownNumber}, "NumMedia": {"-1"}, "Body": {"x"}},
	} {
		f.Add(v.Encode(), true)
		f.Add(v.Encode(), false)
	}
	f.Add("From=%2&To=+&Body=\x00", true)
	f.Add(strings.Repeat("a=b&", 100), true)
	h := newFakeHost(f)
	b := New(Options{Numbers: []string{ownNumber, freeNumber}, Region: "US", AuthToken: testToken, WebhookURL: testHook})
	b.host = h
	ctx := context.Background()
	if err := h.St.PutRegistration(ctx, testDomain, userJID, map[string]string{"number": ownNumber}, []string{ownNumber}); err != nil {
		f.Fatal(err)
	}
	handler := b.webhookHandler()
	f.Fuzz(func(t *testing.T, body string, inbound bool) {
		path := statusPath
		if inbound {
			path = inboundPath
		}
		form, err := url.ParseQuery(body)
		if err != nil {
			return // not what a provider sends; ParseForm refuses it too
		}
		req := httptest.NewRequest(http.MethodPost, "http://gw.test/gw"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", smstest.Sign(testToken, testHook+path, form))
		before := len(h.Messages())
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("%s %q: status %d (%s)", path, body, w.Code, w.Body)
		}
		if !inbound || w.Code != http.StatusOK {
			if inbound && len(h.Messages()) != before {
				t.Fatalf("refused webhook %q delivered a message", body)
			}
			return
		}
		in, err := parseInbound(form, "US")
		if err != nil {
			t.Fatalf("accepted %q, which does not parse: %v", body, err)
		}
		if in.To != ownNumber && in.To != freeNumber {
			t.Fatalf("accepted a text for %q", in.To)
		}
		after := h.Messages()
		if in.To == freeNumber || len(after) == before {
			return // kept as unclaimed, or a repeated SID
		}
		m := after[len(after)-1]
		local := stanza.Local(m.Attr("from"))
		if n, err := mapping.NumberFromLocal(local); err != nil && senderID(local) != local {
			t.Fatalf("text from %q: %v", local, err)
		} else if err == nil && n != in.From {
			t.Fatalf("text from %q for sender %q", local, in.From)
		}
		for _, u := range in.Media {
			if !strings.Contains(m.ChildText("", "body"), u) {
				t.Fatalf("body lacks media %q", u)
			}
		}
	})
}
