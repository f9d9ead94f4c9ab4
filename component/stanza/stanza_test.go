package stanza

import (
	"testing"

	"passerelle/component/xmlel"
)

func TestErrorReply(t *testing.T) {
	iq := IQ("u@x/r", "gw.x", "get", "i1", xmlel.New("jabber:iq:version", "query"))
	r := ErrorReply(iq, Errorf("forbidden", "no"))
	if r.Attr("from") != "gw.x" || r.Attr("to") != "u@x/r" || r.Attr("id") != "i1" || r.Attr("type") != "error" {
		t.Fatalf("addressing: %s", r)
	}
	e := ErrorOf(r)
	if e.Condition != "forbidden" || e.Type != "auth" || e.Text != "no" {
		t.Fatalf("error = %+v", e)
	}
	if r.Child("jabber:iq:version", "query") == nil {
		t.Fatal("IQ error does not carry the request payload")
	}
	m := ErrorReply(Message("a@x", "b@y", "chat", "m1", "secret body"), Errorf("not-acceptable", ""))
	if m.Child("", "body") != nil {
		t.Fatal("message error echoes the body")
	}
	if ErrorOf(Message("a", "b", "chat", "", "x")) != nil {
		t.Fatal("ErrorOf found an error in a plain message")
	}
}

func TestJIDParts(t *testing.T) {
	for _, c := range []struct{ jid, bare, local, domain, res string }{
		{"a@b/c/d", "a@b", "a", "b", "c/d"},
		{"b", "b", "", "b", ""},
		{"b/r@x", "b", "", "b", "r@x"},
		{"#go%irc.libera.chat@irc.example.org/nick", "#go%irc.libera.chat@irc.example.org", "#go%irc.libera.chat", "irc.example.org", "nick"},
	} {
		if Bare(c.jid) != c.bare || Local(c.jid) != c.local || Domain(c.jid) != c.domain || Resource(c.jid) != c.res {
			t.Errorf("%s: %q %q %q %q", c.jid, Bare(c.jid), Local(c.jid), Domain(c.jid), Resource(c.jid))
		}
	}
}
