package irc

import (
	"strings"
	"testing"

	"passerelle/component/xmlel"
)

// batch is requested; a chathistory batch replaying messages already
// shown does not show them again, new ones in it are shown once, and a
// netsplit batch's QUITs are handled.
func TestBatches(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.join(t)
	fx.f.expect(t, "USER")
	fx.f.send(t, ":srv CAP * LS :batch server-time message-tags")
	if l := fx.f.expect(t, "CAP REQ"); !strings.Contains(l, "batch") {
		t.Fatalf("batch not requested: %q", l)
	}
	fx.f.send(t, ":srv CAP nick ACK :server-time message-tags batch", ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 353 nick = #c :nick bob carol", ":srv 366 nick #c :End")
	fx.h.Expect(t, "self-presence", selfPresence)
	fx.f.send(t,
		"@msgid=m1;time=2026-01-01T00:00:00.000Z :bob!u@h PRIVMSG #c :live one",
		"@time=2026-01-01T00:00:01.000Z :bob!u@h PRIVMSG #c :live two",
		":srv BATCH +h1 chathistory #c",
		"@batch=h1;msgid=m1;time=2026-01-01T00:00:00.000Z :bob!u@h PRIVMSG #c :live one",
		"@batch=h1;time=2026-01-01T00:00:01.000Z :bob!u@h PRIVMSG #c :live two",
		"@batch=h1;msgid=m3;time=2026-01-01T00:00:02.000Z :bob!u@h PRIVMSG #c :missed",
		":srv BATCH -h1",
		":srv BATCH +s1 netsplit irc.a irc.b",
		"@batch=s1 :carol!u@h QUIT :irc.a irc.b",
		":srv BATCH -s1",
		":bob!u@h PRIVMSG #c :end")
	counts := map[string]int{}
	carolGone := false
	fx.h.Expect(t, "the last message", func(e *xmlel.Element) bool {
		counts[e.ChildText("", "body")]++
		carolGone = carolGone || (e.Attr("from") == testRoom+"/carol" && e.Attr("type") == "unavailable")
		return e.ChildText("", "body") == "end"
	})
	for _, b := range []string{"live one", "live two", "missed"} {
		if counts[b] != 1 {
			t.Errorf("%q shown %d times", b, counts[b])
		}
	}
	if !carolGone {
		t.Error("the netsplit QUIT was not shown")
	}
}
