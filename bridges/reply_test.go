package bridges

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// outboxHost records what is committed through SendMessage, or fails it.
type outboxHost struct {
	fail     error
	messages []*xmlel.Element
	keys     map[string]bool // committed by Deliver
}

func (h *outboxHost) Domain() string { return "gw.example.test" }
func (h *outboxHost) Send(st *xmlel.Element) error {
	return errors.New("transient send in a failure report")
}
func (h *outboxHost) RetryMaxDelay() time.Duration                    { return time.Minute }
func (h *outboxHost) Ready()                                          {}
func (h *outboxHost) Allowed(user string) bool                        { return true }
func (h *outboxHost) Store() *store.Store                             { return nil }
func (h *outboxHost) Log() *slog.Logger                               { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func (h *outboxHost) Post(string, func(context.Context)) error        { return nil }
func (h *outboxHost) Contact(context.Context, string, string, string) {}
func (h *outboxHost) IQ(context.Context, *xmlel.Element) (*xmlel.Element, error) {
	return nil, ErrDisconnected
}
func (h *outboxHost) Registration(context.Context, string) (*Registration, error) {
	return nil, store.ErrNotFound
}
func (h *outboxHost) Registered(context.Context) ([]string, error)            { return nil, nil }
func (h *outboxHost) Setting(context.Context, string, string) (string, error) { return "", nil }
func (h *outboxHost) SendMessage(ctx context.Context, sts ...*xmlel.Element) error {
	if h.fail != nil {
		return h.fail
	}
	h.messages = append(h.messages, sts...)
	return nil
}

func (h *outboxHost) Deliver(ctx context.Context, key string, links []store.MessageID, sts ...*xmlel.Element) (bool, error) {
	if h.fail != nil {
		return false, h.fail
	}
	if h.keys[key] {
		return false, nil
	}
	if h.keys == nil {
		h.keys = map[string]bool{}
	}
	h.keys[key] = true
	h.messages = append(h.messages, sts...)
	return true, nil
}

func TestReportFailure(t *testing.T) {
	ctx := context.Background()
	const contact, full, bare = "+15551234567@gw.example.test", "alice@example.test/phone", "alice@example.test"
	h := &outboxHost{}
	e := stanza.Errorf("remote-server-timeout", "The text to +15551234567 could not be sent.")
	e.Type = "cancel"
	if err := ReportFailure(ctx, h, contact, full, "m1", e, "The text to +15551234567 could not be sent.\nYour message: “hi”"); err != nil {
		t.Fatal(err)
	}
	if len(h.messages) != 2 {
		t.Fatalf("%d messages committed, want the error and the notice: %v", len(h.messages), h.messages)
	}
	errMsg, note := h.messages[0], h.messages[1]
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
	h.messages = nil
	if err := ReportFailure(ctx, h, contact, bare, "", stanza.Errorf("recipient-unavailable", "Not delivered."), ""); err != nil {
		t.Fatal(err)
	}
	if len(h.messages) != 2 || h.messages[1].ChildText("", "body") != "Not delivered." || h.messages[1].Attr("to") != bare {
		t.Errorf("messages %v", h.messages)
	}

	// The outbox refusing the batch: the error is returned, nothing is sent.
	h.messages, h.fail = nil, errors.New("database is locked")
	if err := ReportFailure(ctx, h, contact, full, "m2", e, ""); err == nil || len(h.messages) != 0 {
		t.Errorf("err %v, %d messages", err, len(h.messages))
	}
}

// ReportFailureOnce commits the report under its key: a report under a key
// committed before sends nothing, another key is another report, and a
// report the outbox refused is made by the next try.
func TestReportFailureOnce(t *testing.T) {
	ctx := context.Background()
	const contact, full = "+15551234567@gw.example.test", "alice@example.test/phone"
	h := &outboxHost{fail: errors.New("database is locked")}
	e := stanza.Errorf("recipient-unavailable", "Not delivered.")
	if ok, err := ReportFailureOnce(ctx, h, "SM1 undelivered", contact, full, "m1", e, ""); ok || err == nil {
		t.Fatalf("refused by the outbox: %v %v", ok, err)
	}
	h.fail = nil
	for i, want := range []bool{true, false} {
		if ok, err := ReportFailureOnce(ctx, h, "SM1 undelivered", contact, full, "m1", e, ""); ok != want || err != nil {
			t.Fatalf("report %d: %v %v, want %v", i+1, ok, err, want)
		}
	}
	if ok, err := ReportFailureOnce(ctx, h, "SM1 failed", contact, full, "m1", e, ""); !ok || err != nil {
		t.Fatalf("another status: %v %v", ok, err)
	}
	if len(h.messages) != 4 || h.messages[0].Attr("type") != "error" || h.messages[1].ChildText("", "body") != "Not delivered." {
		t.Fatalf("messages %v, want an error and a notice per key", h.messages)
	}
}
