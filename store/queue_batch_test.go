package store

import (
	"context"
	"testing"
)

// EnqueueStanzas stores all the stanzas or, when one fails, none.
func TestEnqueueStanzasAllOrNone(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if err := s.EnqueueStanzas(ctx, "d", []string{"<a/>", "<b/>"}); err != nil {
		t.Fatal(err)
	}
	items, _ := s.PendingStanzas(ctx, "d", 10)
	if len(items) != 2 || items[0].Stanza != "<a/>" || items[1].Stanza != "<b/>" {
		t.Fatalf("pending = %+v", items)
	}
	// The second insert of the next batch fails.
	if _, err := s.DB().ExecContext(ctx, `CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.stanza = '<bad/>'
		BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueStanzas(ctx, "d", []string{"<c/>", "<bad/>"}); err == nil {
		t.Fatal("a failed batch reported success")
	}
	if n, _ := s.CountStanzas(ctx, "d"); n != 2 {
		t.Fatalf("outbox holds %d stanzas after a failed batch, want 2", n)
	}
}
