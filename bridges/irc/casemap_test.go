package irc

import (
	"context"
	"strings"
	"testing"
	"unsafe"

	"passerelle/component/xmlel"
)

func TestFoldWith(t *testing.T) {
	cases := []struct{ cm, in, want string }{
		{caseASCII, "Nick[a]\\~", "nick[a]\\~"},
		{caseRFC1459, "Nick[a]\\~", "nick{a}|^"},
		{caseRFC1459Strict, "Nick[a]\\~", "nick{a}|~"},
		{"unknown", "A[", "a{"},
		{caseRFC1459, "already", "already"},
	}
	for _, c := range cases {
		if got := foldWith(c.cm, c.in); got != c.want {
			t.Errorf("foldWith(%s, %q) = %q, want %q", c.cm, c.in, got, c.want)
		}
	}
}

// With CASEMAPPING=ascii, #c[1] and #c{1} are different channels, and
// a join queued before 005 is found again under the server's mapping.
func TestCasemappingFromISupport(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	room := "#c[1]%localhost@irc.example"
	fx.handle(t, "<presence xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+room+"/nick'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
	fx.f.expect(t, "USER")
	fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome", ":srv 005 nick CASEMAPPING=ascii CHANTYPES=# :are supported")
	fx.f.expect(t, "JOIN #c[1]")
	fx.f.send(t, ":NICK!u@h JOIN #C[1]", ":srv 353 nick = #c[1] :nick Bob", ":srv 366 nick #C[1] :End")
	fx.h.Expect(t, "self-presence", selfPresence)
	fx.f.send(t, ":bob!u@h PRIVMSG #c{1} :elsewhere", ":BOB!u@h PRIVMSG #C[1] :here")
	var got []*xmlel.Element
	fx.h.Expect(t, "the message to #c[1]", func(e *xmlel.Element) bool {
		got = append(got, e)
		return e.ChildText("", "body") == "here"
	})
	for _, e := range got {
		if e.ChildText("", "body") == "elsewhere" {
			t.Errorf("a message to #c{1} shown in #c[1]: %s", e)
		}
	}
	// The nick comparison follows the mapping too: BOB is bob.
	fx.f.send(t, ":BOB!u@h PART #c[1]")
	fx.h.Expect(t, "bob leaves", func(e *xmlel.Element) bool {
		return e.Attr("from") == room+"/Bob" && e.Attr("type") == "unavailable"
	})
}

// TestKeptStringsAreNotSlicesOfLines: what a connection keeps from the
// server's lines (the case mapping, a topic) is its own copy, not a
// slice that would keep the whole line alive as long as the connection.
func TestKeptStringsAreNotSlicesOfLines(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.connectWith(t, "#c", "")
	within := func(s, line string) bool {
		p, start := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(line)))
		return p >= start && p < start+uintptr(len(line))
	}
	fx.h.Run(func(ctx context.Context) {
		n := fx.b.networkOf(testUser, "localhost")
		isupport := ":srv 005 nick CASEMAPPING=ascii :are supported"
		i := strings.Index(isupport, "ascii")
		n.setCasemap(ctx, isupport[i:i+len("ascii")])
		if n.casemap != caseASCII || within(n.casemap, isupport) {
			t.Errorf("case mapping %q kept as a slice of the line", n.casemap)
		}
		ch := n.chans[n.fold("#c")]
		if ch.members.cm != caseASCII || within(ch.members.cm, isupport) {
			t.Errorf("the roster's case mapping %q kept as a slice of the line", ch.members.cm)
		}
		topic := ":srv 332 nick #c :a plain topic"
		n.onTopic(ctx, ch, "", topic[strings.LastIndex(topic, ":")+1:])
		if ch.topic != "a plain topic" || within(ch.topic, topic) {
			t.Errorf("topic %q kept as a slice of the line", ch.topic)
		}
	})
}
