package bridges_test

import (
	"context"
	"errors"
	"testing"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/component/stanza"
)

func TestReportFailure(t *testing.T) {
	ctx := context.Background()
	const contact, full, bare = "+15551234567@gw.example.test", "alice@example.test/phone", "alice@example.test"
	h := bridgetest.New(t, "gw.example.test")
	e := stanza.Errorf("remote-server-timeout", "The text to +15551234567 could not be sent.")
	e.Type = "cancel"
	if err := bridges.ReportFailure(ctx, h, contact, full, "m1", e, "The text to +15551234567 could not be sent.\nYour message: “hi”"); err != nil {
		t.Fatal(err)
	}
	messages := h.Messages()
	if len(messages) != 2 || len(h.Sent()) != 0 {
		t.Fatalf("%d messages committed, %d sent, want the error and the notice committed: %v", len(messages), len(h.Sent()), messages)
	}
	errMsg, note := messages[0], messages[1]
	if errMsg.Attr("type") != "error" || errMsg.Attr("to") != full || errMsg.Attr("from") != contact || errMsg.Attr("id") != "m1" {
		t.Errorf("error stanza: %s", errMsg)
	}
	if got := stanza.ErrorOf(errMsg); got == nil || got.Condition != "remote-server-timeout" || got.Type != "cancel" || got.Text != e.Text {
		t.Errorf("error: %+v", got)
	}
	if note.Attr("type") != "chat" || note.Attr("to") != bare || note.Attr("from") != contact || note.Attr("id") == "" || note.Attr("id") == "m1" {
		t.Errorf("notice stanza: %s", note)
	}
	if body := note.ChildText("", "body"); body != "The text to +15551234567 could not be sent.\nYour message: “hi”" {
		t.Errorf("notice body %q", body)
	}
	if note.Child(stanza.NSHints, "store") == nil || note.Child("", "error") != nil {
		t.Errorf("notice: %s", note)
	}

	// Without a notice of its own, the notice is the error's text.
	if err := bridges.ReportFailure(ctx, h, contact, bare, "", stanza.Errorf("recipient-unavailable", "Not delivered."), ""); err != nil {
		t.Fatal(err)
	}
	if messages := h.Messages()[2:]; len(messages) != 2 || messages[1].ChildText("", "body") != "Not delivered." || messages[1].Attr("to") != bare {
		t.Errorf("messages %v", messages)
	}

	// The outbox refusing the batch: the error is returned, nothing is sent.
	h.SetFail(errors.New("database is locked"))
	if err := bridges.ReportFailure(ctx, h, contact, full, "m2", e, ""); err == nil || len(h.Messages()) != 4 {
		t.Errorf("err %v, %d messages, want the 4 before", err, len(h.Messages()))
	}
}

// ReportFailureOnce commits the report under its key: a report under a key
// committed before sends nothing, another key is another report, and a
// report the outbox refused is made by the next try.
func TestReportFailureOnce(t *testing.T) {
	ctx := context.Background()
	const contact, full = "+15551234567@gw.example.test", "alice@example.test/phone"
	h := bridgetest.New(t, "gw.example.test")
	h.SetFail(errors.New("database is locked"))
	e := stanza.Errorf("recipient-unavailable", "Not delivered.")
	if ok, err := bridges.ReportFailureOnce(ctx, h, "SM1 undelivered", contact, full, "m1", e, ""); ok || err == nil {
		t.Fatalf("refused by the outbox: %v %v", ok, err)
	}
	h.SetFail(nil)
	for i, want := range []bool{true, false} {
		if ok, err := bridges.ReportFailureOnce(ctx, h, "SM1 undelivered", contact, full, "m1", e, ""); ok != want || err != nil {
			t.Fatalf("report %d: %v %v, want %v", i+1, ok, err, want)
		}
	}
	if ok, err := bridges.ReportFailureOnce(ctx, h, "SM1 failed", contact, full, "m1", e, ""); !ok || err != nil {
		t.Fatalf("another status: %v %v", ok, err)
	}
	if messages := h.Messages(); len(messages) != 4 || messages[0].Attr("type") != "error" || messages[1].ChildText("", "body") != "Not delivered." {
		t.Fatalf("messages %v, want an error and a notice per key", messages)
	}
}
