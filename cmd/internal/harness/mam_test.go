package harness

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const nsMAM = "urn:xmpp:mam:2"

// TestProsodyMAM: with ServerOptions.MAM a user's chats are archived both
// ways and found by a query with the "with" filter; without it there is no
// archive.
func TestProsodyMAM(t *testing.T) {
	t.Parallel()
	srv := StartProsody(t, ServerOptions{MAM: true, Components: []string{"irc.localhost"}})
	alice := Dial(t, srv.C2SAddr(), "alice@localhost", srv.AddUser(t, "alice"), "a")
	bob := Dial(t, srv.C2SAddr(), "bob@localhost", srv.AddUser(t, "bob"), "b")
	carol := Dial(t, srv.C2SAddr(), "carol@localhost", srv.AddUser(t, "carol"), "c")

	alice.Send(t, "<message to='bob@localhost' type='chat' id='m1'><body>one</body></message>")
	bob.Expect(t, 10*time.Second, "alice's message", MessageFrom("alice@localhost", "one"))
	bob.Send(t, "<message to='alice@localhost' type='chat' id='m2'><body>two</body></message>")
	alice.Expect(t, 10*time.Second, "bob's answer", MessageFrom("bob@localhost", "two"))
	carol.Send(t, "<message to='alice@localhost' type='chat' id='m3'><body>other</body></message>")
	alice.Expect(t, 10*time.Second, "carol's message", MessageFrom("carol@localhost", "other"))

	got := mamQuery(t, alice, "bob@localhost")
	want := []string{"alice@localhost/a>bob@localhost:one", "bob@localhost/b>alice@localhost:two"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("alice's archive with bob:\n got %q\nwant %q", got, want)
	}

	plain := StartProsody(t, ServerOptions{Components: []string{"irc.localhost"}})
	dave := Dial(t, plain.C2SAddr(), "dave@localhost", plain.AddUser(t, "dave"), "d")
	r := dave.IQ(t, "set", "", "<query xmlns='"+nsMAM+"' queryid='q'/>")
	if r.Attr("type") != "error" || r.Child("", "error").Child("urn:ietf:params:xml:ns:xmpp-stanzas", "service-unavailable") == nil {
		t.Fatalf("a MAM query without ServerOptions.MAM: %s", r)
	}
}

// mamQuery queries c's own archive for the messages exchanged with the
// bare JID with, and returns them as "from>to:body", oldest first.
func mamQuery(t *testing.T, c *Client, with string) []string {
	t.Helper()
	qid := fmt.Sprintf("q%d", time.Now().UnixNano())
	form := "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>" + nsMAM +
		"</value></field><field var='with'><value>" + Esc(with) + "</value></field></x>"
	r := c.IQ(t, "set", "", "<query xmlns='"+nsMAM+"' queryid='"+qid+"'>"+form+"</query>")
	if r.Attr("type") != "result" || r.Child(nsMAM, "fin") == nil {
		t.Fatalf("MAM query: %s", r)
	}
	var out []string
	for _, e := range c.Received() {
		res := e.Child(nsMAM, "result")
		if !IsMessage(e) || res == nil || res.Attr("queryid") != qid {
			continue
		}
		m := res.Child("urn:xmpp:forward:0", "forwarded").Child(nsClient, "message")
		out = append(out, m.Attr("from")+">"+m.Attr("to")+":"+m.ChildText(nsClient, "body"))
	}
	return out
}
