package storetest

import (
	"context"
	"testing"
)

// Commits counts the transactions committed: one a write, however many
// rows it holds, none for a write that failed.
func TestCommits(t *testing.T) {
	ctx := context.Background()
	st := Open(t)
	Refuse(t, st.Store, Insert, "outbox", "<bad/>") // a commit of its own
	before := st.Commits(t)
	if err := st.EnqueueStanzas(ctx, "d", []string{"<a/>", "<b/>", "<c/>"}); err != nil {
		t.Fatal(err)
	}
	if n := st.Commits(t) - before; n != 1 {
		t.Fatalf("three stanzas queued at once: %d commits, want 1", n)
	}
	if err := st.EnqueueStanzas(ctx, "d", []string{"<bad/>"}); err == nil {
		t.Fatal("a refused stanza was queued")
	}
	if err := st.EnqueueStanzas(ctx, "d", []string{"<d/>"}); err != nil {
		t.Fatal(err)
	}
	if n := st.Commits(t) - before; n != 2 {
		t.Fatalf("then a refused write and one more: %d commits in all, want 2", n)
	}
}
