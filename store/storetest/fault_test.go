package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"passerelle/store"
)

func open(t *testing.T) *store.Store {
	st, err := store.Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// A refusal takes the rows it names, quotes and all, until it is lifted.
func TestRefuse(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	lift := Refuse(t, st, Insert, "outbox", `to='bob'`)
	if err := st.EnqueueStanzas(ctx, "d", []string{`<message to='alice'/>`}); err != nil {
		t.Fatalf("a row the refusal does not name: %v", err)
	}
	if err := st.EnqueueStanzas(ctx, "d", []string{`<message to='bob'/>`}); err == nil {
		t.Fatal("a refused row was written")
	}
	lift()
	lift()
	if err := st.EnqueueStanzas(ctx, "d", []string{`<message to='bob'/>`}); err != nil {
		t.Fatalf("after the lift: %v", err)
	}
	id, err := st.EnqueueJob(ctx, "d", "u", "k", []byte(`{"part":3}`))
	if err != nil {
		t.Fatal(err)
	}
	Refuse(t, st, Delete, "jobs", `"part":3`)
	if err := st.DeleteJob(ctx, id); err == nil {
		t.Fatal("a refused job was deleted")
	}
	SpoilJob(t, st, id)
	if _, err := st.GetJob(ctx, id); err == nil {
		t.Fatal("a spoiled job was read")
	}
	Drop(t, st, "outbox")
	if _, err := st.CountStanzas(ctx, "d"); err == nil {
		t.Fatal("a dropped table was read")
	}
}
