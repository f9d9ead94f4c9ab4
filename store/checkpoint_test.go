package store

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"testing"
	"time"
)

// openFileTest opens a store on an SQLite file (the checkpointer's
// engine) and the file's wal-index, to read the log's length.
func openFileTest(t *testing.T) (*Store, *os.File) {
	t.Helper()
	if cluster != nil {
		t.Skip("SQLite's write-ahead log")
	}
	s := openTest(t)
	if s.ckpt == nil {
		t.Fatal("no checkpointer on a database file")
	}
	shm, err := os.Open(s.ckpt.shmPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shm.Close() })
	return s, shm
}

func frames(t *testing.T, shm *os.File) int {
	t.Helper()
	n, ok := walFrames(shm)
	if !ok {
		t.Fatal("cannot read the wal-index header")
	}
	return n
}

// deliverPages commits a group that adds a few pages to the log.
func deliverPages(t *testing.T, s *Store) {
	t.Helper()
	big := strings.Repeat("x", 3000)
	if _, err := s.Deliver(context.Background(), "d", Delivery{Stanzas: []string{big, big, big, big}}); err != nil {
		t.Fatal(err)
	}
}

// growUntilCheckpoint commits until the log holds pages, then waits
// until the checkpointer has run runs checkpoints.
func growUntilCheckpoint(t *testing.T, s *Store, shm *os.File, pages int, runs int64, deadline time.Time) {
	t.Helper()
	for frames(t, shm) < pages {
		deliverPages(t, s)
	}
	for s.ckpt.runs.Load() < runs {
		if time.Now().After(deadline) {
			t.Fatalf("%d checkpoints with %d pages in the log, want %d", s.ckpt.runs.Load(), frames(t, shm), runs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The commits leave the log to the checkpointer up to walBackstopPages:
// every connection of the store has that limit, not SQLite's 1000.
func TestCheckpointNotInCommits(t *testing.T) {
	s, _ := openFileTest(t)
	ctx := context.Background()
	// Both connections: one held by a transaction while the other answers.
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for name, q := range map[string]interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}{"transaction": tx, "pool": s.db} {
		var n int
		if err := q.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != walBackstopPages {
			t.Errorf("%s: wal_autocheckpoint %d, want %d", name, n, walBackstopPages)
		}
	}
}

// Below walCheckpointPages the log is not checkpointed, so it grows as it
// did with SQLite's own checkpoints (a full disk is met by a commit that
// lengthens it: TestStoreFailure); from there on the checkpointer copies
// it, and the next commit starts it over.
func TestCheckpointerAtTheLogsLength(t *testing.T) {
	s, shm := openFileTest(t)
	for range 20 {
		deliverPages(t, s)
	}
	if n := frames(t, shm); n >= walCheckpointPages || n < 20 {
		t.Fatalf("%d pages in the log after 20 commits", n)
	}
	time.Sleep(100 * time.Millisecond) // a checkpointer woken by those commits has had time
	if n := s.ckpt.runs.Load(); n != 0 {
		t.Fatalf("%d checkpoints with the log under %d pages", n, walCheckpointPages)
	}
	deadline := time.Now().Add(30 * time.Second)
	growUntilCheckpoint(t, s, shm, walCheckpointPages, 1, deadline)
	before := frames(t, shm)
	// A checkpoint under way when the runs were counted: wait for it to
	// finish, then the next commit starts the log over.
	for {
		deliverPages(t, s)
		if n := frames(t, shm); n < before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log was not started over: %d pages (%d checkpoints, %d failed)", frames(t, shm), s.ckpt.runs.Load(), s.ckpt.failed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.ckpt.failed.Load(); n != 0 {
		t.Errorf("%d checkpoints failed", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("closed twice: %v", err)
	}
}

// A log that a reader keeps from being started over is checkpointed again
// only once it has grown by a quarter of walCheckpointPages, not after
// every commit (each checkpoint syncs the log and the database file).
func TestCheckpointerPacedWhileALogIsRead(t *testing.T) {
	s, shm := openFileTest(t)
	ctx := context.Background()
	for frames(t, shm) < walCheckpointPages/2 {
		deliverPages(t, s)
	}
	// A reader on the log as it is: no checkpoint copies past it, so the
	// log is not started over while it reads.
	other, err := sql.Open("sqlite3", dsn(s.ckpt.shmPath[:len(s.ckpt.shmPath)-len("-shm")]))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	reader, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if _, err := reader.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := reader.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	defer reader.ExecContext(ctx, `ROLLBACK`)

	deadline := time.Now().Add(30 * time.Second)
	growUntilCheckpoint(t, s, shm, walCheckpointPages, 1, deadline)
	start := frames(t, shm)
	for frames(t, shm) < start+walCheckpointPages/8 {
		deliverPages(t, s)
		time.Sleep(20 * time.Millisecond) // a checkpointer woken by it has had time
	}
	if n := s.ckpt.runs.Load(); n != 1 {
		t.Errorf("%d checkpoints while the log grew from %d to %d pages", n, start, frames(t, shm))
	}
	growUntilCheckpoint(t, s, shm, start+walCheckpointPages/2, 2, deadline)
}
