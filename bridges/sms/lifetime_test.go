package sms

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/bridges/sms/smstest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
	"passerelle/store/storetest"
)

// idleBridge is a bridge on a fake host and a fake provider at apiURL,
// without its worker: tests hand it queued jobs one at a time.
func idleBridge(t *testing.T, apiURL string) (*Bridge, *bridgetest.Host) {
	h := newFakeHost(t)
	b := New(Options{Numbers: []string{ownNumber}, Region: "US", APIURL: apiURL, AccountSID: testSID, AuthToken: testToken})
	b.host = h
	return b, h
}

// queueText queues a user's message to peer and returns its one job.
func queueText(t *testing.T, b *Bridge, h *bridgetest.Host, id, body string) store.Job {
	t.Helper()
	ctx := context.Background()
	b.handleMessage(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", id, body))
	jobs, err := h.St.DueJobs(ctx, testDomain, time.Now().Add(time.Hour), 10)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("%d jobs queued (%v)", len(jobs), err)
	}
	return jobs[0]
}

// failureReport waits for the report that the text id failed: an error of
// condition cond to the sending resource and a notice to the user's bare
// JID, both through the outbox, whose texts contain want. It returns the
// notice.
func failureReport(t *testing.T, h *bridgetest.Host, id, cond string, want ...string) *xmlel.Element {
	t.Helper()
	errMsg := h.WaitMessage(t, "error for "+id, errorFor(id))
	e := stanza.ErrorOf(errMsg)
	note := h.WaitMessage(t, "notice for "+id, func(m *xmlel.Element) bool {
		return m.Attr("type") == "chat" && m.Attr("to") == userJID && strings.HasPrefix(m.ChildText("", "body"), e.Text)
	})
	contact := peer + "@" + testDomain
	if e.Condition != cond || e.Type != "cancel" || errMsg.Attr("to") != userFull || errMsg.Attr("from") != contact {
		t.Errorf("error: %s", errMsg)
	}
	body := note.ChildText("", "body")
	if note.Attr("from") != contact || note.Attr("id") == id {
		t.Errorf("notice: %s", note)
	}
	for _, w := range want {
		if !strings.Contains(e.Text, w) && !strings.Contains(body, w) {
			t.Errorf("neither %q nor %q says %q", e.Text, body, w)
		}
	}
	if n := len(h.Sent()); n != 0 {
		t.Errorf("%d transient stanzas for a late failure", n)
	}
	return note
}

func jobGone(t *testing.T, h *bridgetest.Host, id int64) {
	t.Helper()
	if j, err := h.St.GetJob(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("job still queued: %+v %v", j, err)
	}
}

func TestTextLifetime(t *testing.T) {
	ctx := context.Background()
	p := smstest.Start(t, testSID, testToken)
	b, h := idleBridge(t, p.URL())
	j := queueText(t, b, h, "old1", "see you at the station")

	// Failing for 23 hours: retried, nothing reported.
	p.Respond(503)
	j.Created = time.Now().Add(-bridges.MaxQueueAge + time.Hour)
	runQueued(ctx, b, j)
	got, err := h.St.GetJob(ctx, j.ID)
	if err != nil || got.Attempts != 1 || !strings.Contains(got.LastError, "503") {
		t.Fatalf("job after a temporary failure: %+v %v", got, err)
	}
	if n := len(h.Messages()) + len(h.Sent()); n != 0 {
		t.Fatalf("%d stanzas for a temporary failure", n)
	}

	// Still failing past 24 hours: final, reported, removed.
	p.Respond(503)
	j = *got
	j.Created = time.Now().Add(-bridges.MaxQueueAge - time.Minute)
	runQueued(ctx, b, j)
	note := failureReport(t, h, "old1", "remote-server-timeout",
		"The text to "+peer, "could not be sent for 24 hours", "503", "Internal Server Error", "Your message: “see you at the station”")
	if note.Child("urn:xmpp:hints", "store") == nil {
		t.Errorf("notice without a store hint: %s", note)
	}
	jobGone(t, h, j.ID)
	if n := len(p.Requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestTextLifetimeUnreachableProvider(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	ctx := context.Background()
	b, h := idleBridge(t, dead)
	long := strings.Repeat("word ", 40)
	j := queueText(t, b, h, "old2", long)
	j.Created = time.Now().Add(-bridges.MaxQueueAge - time.Minute)

	// The report cannot be committed: the job stays for a later try.
	h.SetFail(errors.New("outbox unavailable"))
	runQueued(ctx, b, j)
	got, err := h.St.GetJob(ctx, j.ID)
	if err != nil || got.Attempts != 1 {
		t.Fatalf("job after an unreported failure: %+v %v", got, err)
	}
	if n := len(h.Messages()); n != 0 {
		t.Fatalf("%d messages while the outbox fails", n)
	}
	h.SetFail(nil)
	j = *got
	j.Created = time.Now().Add(-bridges.MaxQueueAge - time.Minute)
	runQueued(ctx, b, j)
	note := failureReport(t, h, "old2", "remote-server-timeout", "could not be sent for 24 hours", "failed to reach the SMS provider")
	if body := note.ChildText("", "body"); !strings.HasSuffix(body, "\nYour message: “"+excerpt(long, nil)+"”") || !strings.HasSuffix(body, " word…”") {
		t.Errorf("the notice should quote the start of the text: %q", body)
	}
	jobGone(t, h, j.ID)
}

func TestTextRefusedFromQueue(t *testing.T) {
	ctx := context.Background()
	p := smstest.Start(t, testSID, testToken)
	b, h := idleBridge(t, p.URL())
	j := queueText(t, b, h, "bad1", "hello")
	// A refusal is final however young the text.
	p.Respond(400)
	runQueued(ctx, b, j)
	failureReport(t, h, "bad1", "not-acceptable",
		"The text to "+peer+" was refused by the SMS provider", "is not a valid phone number", "21211", "Your message: “hello”")
	jobGone(t, h, j.ID)
}

func TestExcerpt(t *testing.T) {
	for _, c := range []struct {
		body  string
		media []string
		want  string
	}{
		{"  hello\n\tthere ", nil, "hello there"},
		{"", []string{"https://up.test/a.jpg", "https://up.test/b.jpg"}, "https://up.test/a.jpg"},
		{"caption", []string{"https://up.test/a.jpg"}, "caption"},
		{strings.Repeat("é", 100), nil, strings.Repeat("é", 79) + "…"},
	} {
		if got := excerpt(c.body, c.media); got != c.want {
			t.Errorf("excerpt(%q, %v) = %q, want %q", c.body, c.media, got, c.want)
		}
	}
}

// queueParts queues a user's message to peer that becomes parts texts and
// returns their jobs.
func queueParts(t *testing.T, b *Bridge, h *bridgetest.Host, id, body string, parts int) []store.Job {
	t.Helper()
	ctx := context.Background()
	b.handleMessage(ctx, user(), stanza.Message(userFull, peer+"@"+testDomain, "chat", id, body))
	jobs, err := h.St.DueJobs(ctx, testDomain, time.Now().Add(time.Hour), 20)
	if err != nil || len(jobs) != parts {
		t.Fatalf("%d jobs queued (%v), want %d", len(jobs), err, parts)
	}
	return jobs
}

// A part failing for 24 hours takes the later ones with it, in one report.
func TestMultipartExpired(t *testing.T) {
	ctx := context.Background()
	p := smstest.Start(t, testSID, testToken)
	b, h := idleBridge(t, p.URL())
	jobs := queueParts(t, b, h, "old3", threeParts, 3)
	p.Respond(503)
	jobs[0].Created = time.Now().Add(-bridges.MaxQueueAge - time.Minute)
	if !runQueued(ctx, b, jobs[0]) {
		t.Error("send did not say it removed the later parts")
	}
	failureReport(t, h, "old3", "remote-server-timeout", "(part 1 of 3) could not be sent for 24 hours", "None of its 3 parts was sent.")
	for _, j := range jobs {
		jobGone(t, h, j.ID)
	}
	if n := len(p.Requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// A later part whose earlier ones cannot be looked up is not sent: it is
// tried again later. On shutdown it stays as it was.
func TestMultipartQueueUnreadable(t *testing.T) {
	ctx := context.Background()
	p := smstest.Start(t, testSID, testToken)
	b, h := idleBridge(t, p.URL())
	jobs := queueParts(t, b, h, "q3", threeParts, 3)
	// A row the store cannot read back.
	storetest.SpoilJob(t, h.St.Store, jobs[0].ID)
	if runQueued(ctx, b, jobs[1]) {
		t.Error("send removed jobs")
	}
	if n := len(p.Requests()); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
	got, err := h.St.GetJob(ctx, jobs[1].ID)
	if err != nil || got.Attempts != 1 || !got.NextTry.After(jobs[1].NextTry) || got.LastError == "" {
		t.Errorf("part 2 after an unreadable queue: %+v %v", got, err)
	}
	stop, cancel := context.WithCancel(ctx)
	cancel()
	runQueued(stop, b, *got)
	if again, err := h.St.GetJob(ctx, jobs[1].ID); err != nil || again.Attempts != 1 || len(p.Requests()) != 0 {
		t.Errorf("part 2 after a send on shutdown: %+v %v, %d requests", again, err, len(p.Requests()))
	}
}

// When the report of a refused part cannot be queued, nothing is dropped:
// the part is tried again later, and the report then covers the rest.
func TestMultipartReportFails(t *testing.T) {
	ctx := context.Background()
	p := smstest.Start(t, testSID, testToken)
	b, h := idleBridge(t, p.URL())
	jobs := queueParts(t, b, h, "rf3", threeParts, 3)
	h.SetFail(errors.New("disk full"))
	p.Respond(400)
	if runQueued(ctx, b, jobs[0]) {
		t.Error("send removed jobs without reporting")
	}
	for _, j := range jobs {
		if _, err := h.St.GetJob(ctx, j.ID); err != nil {
			t.Fatalf("part %d gone after a failed report: %v", j.ID, err)
		}
	}
	h.SetFail(nil)
	p.Respond(400)
	again, err := h.St.GetJob(ctx, jobs[0].ID)
	if err != nil || again.Attempts != 1 {
		t.Fatalf("part 1 after a failed report: %+v %v", again, err)
	}
	runQueued(ctx, b, *again)
	failureReport(t, h, "rf3", "not-acceptable", "(part 1 of 3) was refused", "None of its 3 parts was sent.")
	for _, j := range jobs {
		jobGone(t, h, j.ID)
	}
}

// A later part that cannot be put behind an earlier one still waits for
// it: it is not sent.
func TestMultipartDelayFails(t *testing.T) {
	ctx := context.Background()
	p := smstest.Start(t, testSID, testToken)
	b, h := idleBridge(t, p.URL())
	jobs := queueParts(t, b, h, "d3", threeParts, 3)
	if err := h.St.RetryJob(ctx, jobs[0].ID, time.Now().Add(time.Hour), "503"); err != nil {
		t.Fatal(err)
	}
	storetest.Refuse(t, h.St.Store, storetest.Update, "jobs", "")
	runQueued(ctx, b, jobs[1])
	if n := len(p.Requests()); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
	if got, err := h.St.GetJob(ctx, jobs[1].ID); err != nil || !got.NextTry.Equal(jobs[1].NextTry) {
		t.Errorf("part 2 after a failed delay: %+v %v", got, err)
	}
}
