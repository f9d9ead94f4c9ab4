package store

import (
	"context"
	"fmt"
	"strings"
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
	refuseStanza(t, s, "<bad/>")
	if err := s.EnqueueStanzas(ctx, "d", []string{"<c/>", "<bad/>"}); err == nil {
		t.Fatal("a failed batch reported success")
	}
	if n, _ := s.CountStanzas(ctx, "d"); n != 2 {
		t.Fatalf("outbox holds %d stanzas after a failed batch, want 2", n)
	}
}

// StanzasSentThrough removes a domain's stanzas up to an id, all of them
// or, when one fails, none, and no other domain's.
func TestStanzasSentThroughAllOrNone(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	batch := make([]string, 1200)
	for i := range batch {
		batch[i] = fmt.Sprintf("<m n='%d'/>", i)
		if err := s.EnqueueStanzas(ctx, "other", []string{"<o/>"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.EnqueueStanzas(ctx, "d", batch); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueStanzas(ctx, "other", []string{"<o/>"}); err != nil {
		t.Fatal(err)
	}
	items, err := s.PendingStanzas(ctx, "d", len(batch))
	if err != nil || len(items) != len(batch) {
		t.Fatalf("pending: %d, %v", len(items), err)
	}
	last := items[len(items)-2].ID
	// The last one to remove cannot be: none is.
	sqliteOnly(t) // a trigger in SQLite's dialect
	if _, err := s.DB().ExecContext(ctx, fmt.Sprintf(`CREATE TRIGGER refuse BEFORE DELETE ON outbox WHEN OLD.id = %d
		BEGIN SELECT RAISE(ABORT, 'refused'); END`, last)); err != nil {
		t.Fatal(err)
	}
	if err := s.StanzasSentThrough(ctx, "d", last); err == nil {
		t.Fatal("a failed removal reported success")
	}
	if n, _ := s.CountStanzas(ctx, "d"); n != len(batch) {
		t.Fatalf("outbox holds %d stanzas after a failed removal, want %d", n, len(batch))
	}
	if _, err := s.DB().ExecContext(ctx, `DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	if err := s.StanzasSentThrough(ctx, "d", last); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.PendingStanzas(ctx, "d", 10); len(left) != 1 || left[0].ID != items[len(items)-1].ID {
		t.Fatalf("outbox holds %+v after the removal, want the last stanza", left)
	}
	if n, _ := s.CountStanzas(ctx, "other"); n != len(batch)+1 {
		t.Fatalf("the other domain holds %d stanzas, want %d", n, len(batch)+1)
	}
}

// CheckWrite fails while the database refuses writes, and works again after.
func TestCheckWrite(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if err := s.CheckWrite(ctx); err != nil {
		t.Fatal(err)
	}
	sqliteOnly(t) // a trigger in SQLite's dialect
	if _, err := s.DB().ExecContext(ctx, `CREATE TRIGGER refuse BEFORE UPDATE ON health
		BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckWrite(ctx); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("CheckWrite with writes refused: %v", err)
	}
	if _, err := s.DB().ExecContext(ctx, `DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckWrite(ctx); err != nil {
		t.Fatal(err)
	}
}
