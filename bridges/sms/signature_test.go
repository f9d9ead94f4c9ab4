package sms

import (
	"net/url"
	"testing"

	"passerelle/bridges/sms/smstest"
)

func TestSignature(t *testing.T) {
	// The example of Twilio's request-validation documentation.
	u := "https://mycompany.com/myapp.php?foo=1&bar=2"
	params := url.Values{"CallSid": {"CA1234567890ABCDE"}, "Caller": {"+14158675309"}, "Digits": {"1234"},
		"From": {"+14158675309"}, "To": {"+18005551212"}}
	const want = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
	if got := signature("12345", u, params); got != want {
		t.Fatalf("signature = %s, want %s", got, want)
	}
	if !validSignature("12345", u, params, want) {
		t.Fatal("the documented signature is refused")
	}
	for name, c := range map[string]struct {
		token, url, sig string
		params          url.Values
	}{
		"other token":  {"54321", u, want, params},
		"other url":    {"12345", u + "&x=1", want, params},
		"other params": {"12345", u, want, url.Values{"Digits": {"9999"}}},
		"empty":        {"12345", u, "", params},
		"no token":     {"", u, signature("", u, params), params},
	} {
		if validSignature(c.token, c.url, c.params, c.sig) {
			t.Errorf("%s: accepted", name)
		}
	}
	// Repeated parameters: values sorted too.
	rep := url.Values{"Sid": {"CA123"}, "SidAccount": {"AC123"}, "Digits": {"5678", "1234", "1234"}}
	if got := signature("12345", u, rep); got != "IK+Dwps556ElfBT0I3Rgjkr1wJU=" {
		t.Errorf("repeated parameters: %s", got)
	}
	// The fake provider signs the same way.
	in := smstest.InboundParams("SM1", peer, ownNumber, "hé", "https://m.test/1")
	if smstest.Sign(testToken, testHook, in) != signature(testToken, testHook, in) {
		t.Error("smstest.Sign disagrees")
	}
}
