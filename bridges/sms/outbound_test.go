package sms

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/sms/smstest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
	"passerelle/store/storetest"
)

const wantWait = 10 * time.Second

func storeMessage(id, sid, extra string) store.MessageID {
	return store.MessageID{Domain: testDomain, JID: userJID, XMPPID: id, ForeignID: sid, Peer: peer, Extra: extra}
}

func errorFor(id string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool { return e.Attr("id") == id && e.Attr("type") == "error" }
}

func TestOutboundRefusals(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	cases := []struct {
		name, to, typ, want string
		u                   *bridges.User
		extra               *xmlel.Element
		body                string
	}{
		{name: "malformed number", to: "12@" + testDomain, want: "jid-malformed", u: user(), body: "x"},
		{name: "not E.164", to: "5551234567@" + testDomain, want: "jid-malformed", u: user(), body: "x"},
		{name: "to the domain", to: testDomain, want: "service-unavailable", u: user(), body: "x"},
		{name: "groupchat", to: peer + "@" + testDomain, typ: "groupchat", want: "not-acceptable", u: user(), body: "x"},
		{name: "unregistered", to: peer + "@" + testDomain, want: "registration-required", u: &bridges.User{JID: userJID, Full: userFull}, body: "x"},
		{name: "too long", to: peer + "@" + testDomain, want: "not-acceptable", u: user(), body: strings.Repeat("y", maxParts*maxTextChars+1)},
		{name: "media not http", to: peer + "@" + testDomain, want: "not-acceptable", u: user(),
			extra: xmlel.New(stanza.NSOOB, "x").Add(xmlel.New(stanza.NSOOB, "url").WithText("file:///etc/passwd"))},
	}
	for i, c := range cases {
		id := fmt.Sprint("r", i)
		typ := c.typ
		if typ == "" {
			typ = "chat"
		}
		st := stanza.Message(userFull, c.to, typ, id, c.body).Add(c.extra)
		tb.b.Handle(ctx, c.u, st)
		e := tb.h.WaitSent(t, c.name+" error", errorFor(id))
		if got := stanza.ErrorOf(e).Condition; got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	// Nothing to text: chat states, receipts, errors are not answered.
	for _, st := range []*xmlel.Element{
		stanza.Message(userFull, peer+"@"+testDomain, "chat", "n1", "").Add(xmlel.New("http://jabber.org/protocol/chatstates", "composing")),
		stanza.Message(userFull, peer+"@"+testDomain, "error", "n2", "bounced"),
	} {
		tb.b.Handle(ctx, user(), st)
	}
	if n, _ := tb.h.St.CountJobs(ctx, testDomain); n != 0 || len(tb.p.Requests()) != 0 {
		t.Errorf("%d jobs, %d requests for refused messages", n, len(tb.p.Requests()))
	}
	if n := len(tb.h.Sent()); n != len(cases) {
		t.Errorf("%d stanzas sent, want %d errors", n, len(cases))
	}
	// Answered at once, to a resource that is online: no notice.
	if n := len(tb.h.Messages()); n != 0 {
		t.Errorf("%d messages through the outbox for refusals at submission", n)
	}
}

func TestOutboundSent(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	// An attachment: its URL, also in the body, goes as MediaUrl only.
	st := stanza.Message(userFull, peer+"@"+testDomain, "chat", "a1", "https://up.test/cat.jpg").
		Add(xmlel.New(stanza.NSOOB, "x").Add(xmlel.New(stanza.NSOOB, "url").WithText("https://up.test/cat.jpg")))
	tb.b.Handle(ctx, user(), st)
	r := tb.p.WaitRequest(t, wantWait, "the attachment", func(r smstest.Request) bool { return r.Form.Get("MediaUrl") != "" })
	if r.Body() != "" || r.Form.Get("MediaUrl") != "https://up.test/cat.jpg" || r.From() != ownNumber || r.To() != peer {
		t.Errorf("attachment request: %v", r.Form)
	}
	// A long message becomes several texts, in order.
	long := strings.Repeat("abcdefghi ", 350)
	tb.b.Handle(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "l1", long))
	tb.p.WaitRequest(t, wantWait, "the last part", func(r smstest.Request) bool {
		return strings.HasSuffix(r.Body(), "i ") && r.SID != "" && len(tb.p.Requests()) >= 4
	})
	var got string
	for _, r := range tb.p.Requests()[1:] {
		got += r.Body()
	}
	if got != long || len(tb.p.Requests()) != 4 {
		t.Errorf("%d requests; parts make up the message: %v", len(tb.p.Requests()), got == long)
	}
	// A short code.
	tb.b.Handle(ctx, user(), stanza.Message(userFull, "72345@"+testDomain, "chat", "s1", "STOP"))
	tb.p.WaitRequest(t, wantWait, "text to a short code", func(r smstest.Request) bool { return r.To() == "72345" && r.Body() == "STOP" })
	waitNoJobs(t, tb)
}

func TestOutboundRetries(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	tb.p.Respond(500, 429, 503)
	tb.b.Handle(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "t1", "again"))
	tb.p.WaitRequest(t, wantWait, "the accepted text", func(r smstest.Request) bool { return r.SID != "" })
	var statuses []int
	for _, r := range tb.p.Requests() {
		statuses = append(statuses, r.Status)
	}
	if fmt.Sprint(statuses) != "[500 429 503 201]" {
		t.Errorf("answers %v", statuses)
	}
	waitNoJobs(t, tb)
	m, err := tb.h.St.MessageByForeignID(ctx, testDomain, tb.p.Requests()[3].SID)
	if err != nil || m.XMPPID != "t1" || m.Peer != peer {
		t.Errorf("message id map: %+v %v", m, err)
	}

	// 400: an error stanza with the provider's text, and no retry.
	tb.p.Respond(400)
	tb.b.Handle(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "t2", "refused"))
	e := tb.h.WaitMessage(t, "error for t2", errorFor("t2"))
	se := stanza.ErrorOf(e)
	if se.Condition != "not-acceptable" || !strings.Contains(se.Text, "is not a valid phone number") || !strings.Contains(se.Text, "21211") ||
		e.Attr("to") != userFull || e.Attr("from") != peer+"@"+testDomain {
		t.Errorf("error: %s", e)
	}
	// The refusal may come late (after retries): a notice also goes to the
	// bare JID.
	failureReport(t, tb.h, "t2", "not-acceptable", "Your message: “refused”")
	waitNoJobs(t, tb)
	if n := len(tb.p.Requests()); n != 5 {
		t.Errorf("%d requests, want 5", n)
	}
}

func waitNoJobs(t *testing.T, tb *testBridge) {
	t.Helper()
	deadline := time.Now().Add(wantWait)
	for {
		n, err := tb.h.St.CountJobs(context.Background(), testDomain)
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs still queued (%v)", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOutboundOddJobs(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	// An unreadable job is logged and removed, not retried forever.
	if _, err := tb.h.St.EnqueueJob(ctx, testDomain, userJID, jobKind, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	tb.b.jobs.Wake()
	waitNoJobs(t, tb)

	// A refusal that cannot be reported yet stays queued until it can be.
	tb.h.SetFail(fmt.Errorf("outbox unavailable"))
	tb.p.Respond(400, 400, 400, 400, 400, 400, 400, 400, 400, 400)
	tb.b.Handle(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "q1", "refused twice"))
	tb.p.WaitRequest(t, wantWait, "the first try", func(r smstest.Request) bool { return r.Body() == "refused twice" })
	tb.h.SetFail(nil)
	e := tb.h.WaitMessage(t, "error for q1", errorFor("q1"))
	if stanza.ErrorOf(e).Condition != "not-acceptable" {
		t.Errorf("error: %s", e)
	}
	waitNoJobs(t, tb)
}

func TestMultipartStatus(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	long := strings.Repeat("x", maxTextChars+10)
	st := stanza.Message(userFull, peer+"@"+testDomain, "chat", "mp", long).Add(xmlel.New(stanza.NSReceipts, "request"))
	tb.b.Handle(ctx, user(), st)
	tb.p.WaitRequest(t, wantWait, "two parts", func(smstest.Request) bool { return len(tb.p.Requests()) == 2 && tb.p.Requests()[1].SID != "" })
	waitNoJobs(t, tb)
	first, second := tb.p.Requests()[0], tb.p.Requests()[1]
	// The first part delivered: no receipt yet; the last: the receipt.
	tb.status(t, first.SID, "delivered", "")
	tb.status(t, second.SID, "failed", "30007")
	e := tb.h.WaitMessage(t, "error for mp", errorFor("mp"))
	if txt := stanza.ErrorOf(e).Text; !strings.Contains(txt, "Part 2 of 2") {
		t.Errorf("error text %q", txt)
	}
	// A delivery report comes late: a notice also goes to the bare JID.
	failureReport(t, tb.h, "mp", "recipient-unavailable", "Part 2 of 2 of the text to "+peer+" was not delivered", "30007")
	for _, m := range tb.h.Messages() {
		if m.Child(stanza.NSReceipts, "received") != nil {
			t.Errorf("receipt for a partly delivered message: %s", m)
		}
	}
}

// threeParts is a body that becomes three texts: a…, b…, c.
var threeParts = strings.Repeat("a", maxTextChars) + strings.Repeat("b", maxTextChars) + "c"

// bodiesSent lists the first letter of each text the provider accepted, in
// the order it received them.
func bodiesSent(p *smstest.Provider) string {
	var s string
	for _, r := range p.Requests() {
		if r.SID != "" {
			s += r.Body()[:1]
		}
	}
	return s
}

func TestMultipartInOrder(t *testing.T) {
	tb := newTestBridge(t)
	// The first part fails twice for a while; the others wait for it.
	tb.p.Respond(503, 500)
	tb.b.Handle(context.Background(), user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "ord", threeParts))
	waitNoJobs(t, tb)
	if got := bodiesSent(tb.p); got != "abc" {
		t.Errorf("parts sent in the order %q", got)
	}
	if n := len(tb.p.Requests()); n != 5 {
		t.Errorf("%d requests, want 5", n)
	}
	for _, m := range tb.h.Messages() {
		if m.Attr("type") == "error" {
			t.Errorf("error for a text sent after retries: %s", m)
		}
	}
}

func TestMultipartRefused(t *testing.T) {
	tb := newTestBridge(t)
	ctx := context.Background()
	errors := func(id string) int {
		n := 0
		for _, m := range tb.h.Messages() {
			if errorFor(id)(m) {
				n++
			}
		}
		return n
	}
	// The first part refused: the others are not sent, and one report
	// says so.
	tb.p.Respond(400)
	tb.b.Handle(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "none", threeParts))
	failureReport(t, tb.h, "none", "not-acceptable", "(part 1 of 3) was refused", "None of its 3 parts was sent.", "Your message: “aaa")
	waitNoJobs(t, tb)
	if n := len(tb.p.Requests()); n != 1 {
		t.Errorf("%d requests after a refused first part, want 1", n)
	}
	if n := errors("none"); n != 1 {
		t.Errorf("%d errors for one refused message", n)
	}
	// The second part refused: the first went out, the third does not.
	tb.p.Respond(201, 400)
	tb.b.Handle(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "one", threeParts))
	failureReport(t, tb.h, "one", "not-acceptable", "(part 2 of 3) was refused", "Of its 3 parts, only the first was sent.", "Your message: “bbb")
	waitNoJobs(t, tb)
	if got := bodiesSent(tb.p); got != "a" {
		t.Errorf("texts sent: %q", got)
	}
	if n := errors("one"); n != 1 {
		t.Errorf("%d errors for one refused message", n)
	}
	// The last part refused after the first two went out.
	tb.p.Respond(201, 201, 400)
	tb.b.Handle(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "two", threeParts))
	failureReport(t, tb.h, "two", "not-acceptable", "(part 3 of 3) was refused", "only the first 2 were sent.")
	waitNoJobs(t, tb)
	if got := bodiesSent(tb.p); got != "aab" {
		t.Errorf("texts sent: %q", got)
	}
}

// A message that cannot be queued is refused whole: no part of it waits.
func TestOutboundNotQueued(t *testing.T) {
	tb := newTestBridge(t)
	storetest.Refuse(t, tb.h.St.Store, storetest.Insert, "jobs", `"part":3`)
	tb.b.Handle(context.Background(), user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", "nq", threeParts))
	e := tb.h.WaitSent(t, "error for nq", errorFor("nq"))
	if se := stanza.ErrorOf(e); se.Condition != "internal-server-error" || se.Text != "The gateway cannot queue the text." {
		t.Errorf("error: %s", e)
	}
	if n, err := tb.h.St.CountJobs(context.Background(), testDomain); err != nil || n != 0 {
		t.Errorf("%d jobs queued (%v)", n, err)
	}
	if n := len(tb.p.Requests()); n != 0 {
		t.Errorf("%d texts sent", n)
	}
}
