package irc

import (
	"context"
	"strings"
	"testing"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

const testRoom = "#c%localhost@irc.example"

// joined is a fixture whose resource is in #c with the given NAMES.
func joined(t *testing.T, names string) *fixture {
	t.Helper()
	fx := setup(t, true, defaultNetConfig())
	fx.enter(t, names)
	return fx
}

// enter joins #c and completes the registration and the join.
func (fx *fixture) enter(t *testing.T, names string) {
	t.Helper()
	fx.join(t)
	fx.f.expect(t, "USER")
	fx.f.send(t, ":srv CAP * LS :", ":srv 001 nick :Welcome")
	fx.f.expect(t, "JOIN #c")
	fx.f.send(t, ":nick!u@h JOIN #c", ":srv 353 nick = #c :"+names, ":srv 366 nick #c :End")
	fx.h.Expect(t, "self-presence", selfPresence)
}

// iq sends an IQ from the test resource and returns its answer.
func (fx *fixture) iq(t *testing.T, typ, to, payload string) *xmlel.Element {
	t.Helper()
	id := stanza.NewID()
	fx.handle(t, "<iq xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+to+"' type='"+typ+"' id='"+id+"'>"+payload+"</iq>")
	return fx.h.Expect(t, "answer to "+payload, func(e *xmlel.Element) bool { return e.Local == "iq" && e.Attr("id") == id })
}

func adminQuery(item string) string {
	return "<query xmlns='" + stanza.NSMUCAdmin + "'><item " + item + "/></query>"
}

func listedNicks(t *testing.T, r *xmlel.Element) []string {
	t.Helper()
	if r.Attr("type") != "result" {
		t.Fatalf("not a result: %s", r)
	}
	var out []string
	for _, it := range r.Child(stanza.NSMUCAdmin, "query").ChildrenNamed(stanza.NSMUCAdmin, "item") {
		out = append(out, it.Attr("nick")+it.Attr("jid"))
	}
	return out
}

func wantCondition(t *testing.T, r *xmlel.Element, cond string) {
	t.Helper()
	if r.Attr("type") != "error" || stanza.ErrorOf(r).Condition != cond {
		t.Fatalf("want %s, got %s", cond, r)
	}
}

func TestAdminListsFromOccupants(t *testing.T) {
	fx := joined(t, "nick @op +voiced plain")
	cases := []struct{ item, want string }{
		{"affiliation='owner'", ""},
		{"affiliation='admin'", "op"},
		{"affiliation='member'", "voiced"},
		{"role='moderator'", "op"},
		{"role='participant'", "nick plain voiced"},
		{"role='visitor'", ""},
	}
	for _, c := range cases {
		r := fx.iq(t, "get", testRoom, adminQuery(c.item))
		var nicks []string
		for _, it := range r.Child(stanza.NSMUCAdmin, "query").ChildrenNamed(stanza.NSMUCAdmin, "item") {
			nicks = append(nicks, it.Attr("nick"))
			if !strings.HasSuffix(it.Attr("jid"), "%localhost@irc.example") {
				t.Errorf("%s: item without the user's JID: %s", c.item, it)
			}
		}
		if got := strings.Join(nicks, " "); got != c.want || r.Attr("type") != "result" {
			t.Errorf("%s: got %q, want %q (%s)", c.item, got, c.want, r)
		}
	}
	wantCondition(t, fx.iq(t, "get", testRoom, adminQuery("affiliation='none'")), "bad-request")
	wantCondition(t, fx.iq(t, "get", testRoom, "<query xmlns='"+stanza.NSMUCAdmin+"'/>"), "bad-request")
	wantCondition(t, fx.iq(t, "get", "#other%localhost@irc.example", adminQuery("role='participant'")), "not-acceptable")
}

func TestBanList(t *testing.T) {
	fx := joined(t, "nick @op")
	fx.handle(t, "<iq xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+testRoom+"' type='get' id='b1'>"+adminQuery("affiliation='outcast'")+"</iq>")
	fx.handle(t, "<iq xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+testRoom+"' type='get' id='b2'>"+adminQuery("affiliation='outcast'")+"</iq>")
	fx.f.expect(t, "MODE #c +b")
	fx.f.send(t, ":srv 367 nick #c *!*@bad.example op 1700000000", ":srv 367 nick #C troll!*@* op 1700000001", ":srv 368 nick #c :End of ban list")
	for _, id := range []string{"b1", "b2"} { // one MODE answers both
		r := fx.h.Expect(t, id, func(e *xmlel.Element) bool { return e.Attr("id") == id })
		if got := strings.Join(listedNicks(t, r), " "); got != "*!*@bad.example troll!*@*" {
			t.Errorf("%s: ban list %q (%s)", id, got, r)
		}
		if it := r.Child(stanza.NSMUCAdmin, "query").Child(stanza.NSMUCAdmin, "item"); it.Attr("affiliation") != "outcast" || !strings.Contains(it.ChildText("", "reason"), "op") {
			t.Errorf("%s: item %s", id, it)
		}
	}

	// An error numeric ends the request.
	fx.handle(t, "<iq xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+testRoom+"' type='get' id='b3'>"+adminQuery("affiliation='outcast'")+"</iq>")
	fx.f.expect(t, "MODE #c +b")
	fx.f.send(t, ":srv 482 nick #c :You're not channel operator")
	wantCondition(t, fx.h.Expect(t, "b3", func(e *xmlel.Element) bool { return e.Attr("id") == "b3" }), "forbidden")

	// A server that never answers: a timeout error.
	fx.h.Run(func(context.Context) { fx.b.banTimeout = 10 * time.Millisecond })
	fx.handle(t, "<iq xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+testRoom+"' type='get' id='b4'>"+adminQuery("affiliation='outcast'")+"</iq>")
	fx.f.expect(t, "MODE #c +b")
	wantCondition(t, fx.h.Expect(t, "b4", func(e *xmlel.Element) bool { return e.Attr("id") == "b4" }), "remote-server-timeout")
	fx.f.send(t, ":srv 368 nick #c :End of ban list", ":op!u@h PRIVMSG #c :sync") // late: ignored
	fx.h.Expect(t, "a message after the late end", func(e *xmlel.Element) bool { return e.ChildText("", "body") == "sync" })
	fx.h.Run(func(context.Context) { fx.b.banTimeout = time.Minute })

	// The connection is lost while waiting.
	fx.handle(t, "<iq xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+testRoom+"' type='get' id='b5'>"+adminQuery("affiliation='outcast'")+"</iq>")
	fx.f.expect(t, "MODE #c +b")
	fx.f.drop()
	wantCondition(t, fx.h.Expect(t, "b5", func(e *xmlel.Element) bool { return e.Attr("id") == "b5" }), "recipient-unavailable")
	// Not connected (reconnecting): refused at once.
	wantCondition(t, fx.iq(t, "get", testRoom, adminQuery("affiliation='outcast'")), "recipient-unavailable")
}
