package irc

import (
	"strings"
	"testing"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

func mamWith(with string) string {
	return "<query xmlns='" + stanza.NSMAM + "' queryid='q'><x xmlns='jabber:x:data' type='submit'>" +
		"<field var='FORM_TYPE' type='hidden'><value>" + stanza.NSMAM + "</value></field>" +
		"<field var='with'><value>" + with + "</value></field></x></query>"
}

// The with filter selects one occupant's messages in a room archive.
func TestMAMWithFilter(t *testing.T) {
	fx := joined(t, "nick bob carol")
	fx.f.send(t, ":bob!u@h PRIVMSG #c :one", ":carol!u@h PRIVMSG #c :two", ":Bob!u@h PRIVMSG #c :three")
	fx.h.Expect(t, "the last message", func(e *xmlel.Element) bool { return e.ChildText("", "body") == "three" })
	query := func(with string) []string {
		t.Helper()
		fx.handle(t, "<iq xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+testRoom+"' type='set' id='m'>"+mamWith(with)+"</iq>")
		var bodies []string
		fx.h.Expect(t, "the fin", func(e *xmlel.Element) bool {
			if r := e.Child(stanza.NSMAM, "result"); r != nil {
				bodies = append(bodies, r.Child(stanza.NSForward, "forwarded").Child(stanza.NSClient, "message").ChildText("", "body"))
			}
			if e.Local == "iq" && e.Attr("id") == "m" {
				if e.Attr("type") != "result" || e.Child(stanza.NSMAM, "fin").Attr("complete") != "true" {
					t.Fatalf("with %q: %s", with, e)
				}
				return true
			}
			return false
		})
		return bodies
	}
	for with, want := range map[string]string{
		testRoom + "/bob":    "one three",
		testRoom + "/carol":  "two",
		testRoom:             "one two three",
		testRoom + "/nobody": "",
		"bob@example.org":    "",
	} {
		if got := strings.Join(query(with), " "); got != want {
			t.Errorf("with %q: %q, want %q", with, got, want)
		}
	}
	wantCondition(t, fx.iq(t, "set", testRoom, mamWith("not a jid")), "bad-request")
	// One-to-one archives are the user's server's: a clear refusal.
	r := fx.iq(t, "set", "bob%localhost@irc.example", mamWith(testUser))
	wantCondition(t, r, "service-unavailable")
	if !strings.Contains(r.String(), "your own server") {
		t.Errorf("no explanation: %s", r)
	}
	r = fx.iq(t, "get", testRoom, "<query xmlns='"+stanza.NSMAM+"'/>")
	if !strings.Contains(r.String(), `var="with"`) {
		t.Errorf("the form does not offer with: %s", r)
	}
}
