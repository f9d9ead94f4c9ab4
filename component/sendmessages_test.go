package component

import (
	"context"
	"testing"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// SendMessages commits a batch to the outbox and sends every message, from
// the component's domain when no sender is set.
func TestSendMessages(t *testing.T) {
	srv := newFakeServer(t, "s")
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)
	batch := []*xmlel.Element{
		stanza.Message("", "u@example.org", "chat", "b1", "first"),
		stanza.Message("x@test.example.org", "v@example.org", "chat", "b2", "second"),
	}
	if err := c.SendMessage(context.Background(), batch...); err != nil {
		t.Fatal(err)
	}
	got := fc.expect(t, "the first message", func(e *xmlel.Element) bool { return e.Attr("id") == "b1" })
	if got.Attr("from") != "test.example.org" || got.ChildText("", "body") != "first" {
		t.Fatalf("first = %s", got)
	}
	got = fc.expect(t, "the second message", func(e *xmlel.Element) bool { return e.Attr("id") == "b2" })
	if got.Attr("from") != "x@test.example.org" || got.Attr("to") != "v@example.org" {
		t.Fatalf("second = %s", got)
	}
}
