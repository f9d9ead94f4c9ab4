package bridges

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"passerelle/store"
	"passerelle/store/storetest"
)

func TestRetryDelay(t *testing.T) {
	max := time.Minute
	prev := time.Duration(0)
	for n := range 10 {
		d := RetryDelay(n, max)
		want := min(FirstRetry<<n, max)
		if d > want || d < want*4/5 {
			t.Errorf("RetryDelay(%d) = %v, want %v less at most 20%%", n, d, want)
		}
		if d < prev*4/5 {
			t.Errorf("RetryDelay(%d) = %v shrank from %v", n, d, prev)
		}
		prev = d
	}
	if d := RetryDelay(1<<30, max); d > max {
		t.Errorf("RetryDelay(huge) = %v, above the cap", d)
	}
	if d := RetryDelay(0, time.Second); d > time.Second {
		t.Errorf("a cap below the first retry is not honoured: %v", d)
	}
}

// A job the store will not remove stays finished until its removal works.
func TestFinishedJobs(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	id, err := st.EnqueueJob(ctx, "d", "u@example.org", "k", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	var f FinishedJobs
	if f.Has(id) {
		t.Fatal("finished before anything")
	}
	lift := storetest.Refuse(t, st, storetest.Delete, "jobs", "")
	if err := f.Remove(ctx, st, id); err == nil || !f.Has(id) {
		t.Fatalf("refused removal: %v, finished %v", err, f.Has(id))
	}
	lift()
	if err := f.Remove(ctx, st, id); err != nil || f.Has(id) {
		t.Fatalf("removal: %v, finished %v", err, f.Has(id))
	}
	if _, err := st.GetJob(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("job still queued: %v", err)
	}
}
