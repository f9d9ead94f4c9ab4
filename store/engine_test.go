package store

// The store's tests run on both engines: TestMain runs them all on SQLite,
// then again on PostgreSQL in a private cluster (store/pgtest), each test
// with a database of its own. Without PostgreSQL installed the second run
// is skipped, and fails when $CI is set.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/store/pgtest"
)

// cluster is the PostgreSQL server of the second run (nil: SQLite).
var cluster *pgtest.Cluster

func engine() string {
	if cluster != nil {
		return "postgres"
	}
	return "sqlite"
}

func TestMain(m *testing.M) {
	if code := m.Run(); code != 0 {
		os.Exit(code)
	}
	c, err := pgtest.Start()
	if errors.Is(err, pgtest.ErrNotInstalled) && os.Getenv("CI") == "" {
		fmt.Printf("store: %v: the tests ran on SQLite only\n", err)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "store: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("store: the same tests on PostgreSQL")
	cluster = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "store: %v\n", err)
		code = max(code, 1)
	}
	os.Exit(code)
}

// testDB names a new database of the engine under test, removed (or
// dropped) when t ends: a file path, or a postgres:// URL.
func testDB(t testing.TB) string {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine: %s", engine())
		}
	})
	if cluster != nil {
		return cluster.DB(t)
	}
	return filepath.Join(t.TempDir(), "p.db")
}

// sqliteOnly skips t on PostgreSQL: it tests what only SQLite has (a
// file, its connection pool, a schema older than PostgreSQL's support).
func sqliteOnly(t testing.TB) {
	t.Helper()
	if cluster != nil {
		t.Skip("SQLite only")
	}
}

func TestPostgresMigrationsMatch(t *testing.T) {
	sq, err := migrations("schema")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := migrations("schema/postgres")
	if err != nil {
		t.Fatal(err)
	}
	if len(pg) != len(sq) {
		t.Fatalf("%d migrations for PostgreSQL, %d for SQLite: each needs both dialects", len(pg), len(sq))
	}
	for i := range sq {
		if pg[i].name != sq[i].name {
			t.Errorf("migration %d: %s for PostgreSQL, %s for SQLite", i+1, pg[i].name, sq[i].name)
		}
	}
}

func TestRebind(t *testing.T) {
	for in, want := range map[string]string{
		`SELECT 1`: `SELECT 1`,
		`SELECT a FROM t WHERE b = ? AND c IN (?, ?)`:          `SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)`,
		`SELECT '?', "a?" FROM t WHERE x LIKE '%?%' AND y = ?`: `SELECT '?', "a?" FROM t WHERE x LIKE '%?%' AND y = $1`,
		`SELECT 'it''s?' WHERE a = ?`:                          `SELECT 'it''s?' WHERE a = $1`,
	} {
		if got := rebind(in); got != want {
			t.Errorf("rebind(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsPostgres(t *testing.T) {
	for path, want := range map[string]bool{
		"passerelle.db":                   false,
		":memory:":                        false,
		"postgres://u:p@db/passerelle":    true,
		"postgresql://db/passerelle":      true,
		"/var/lib/postgres://odd/file.db": false,
	} {
		if got := isPostgres(path); got != want {
			t.Errorf("isPostgres(%q) = %v", path, got)
		}
	}
	if got := Redact("postgres://u:secret@db/p"); got != "postgres://u:xxxxx@db/p" {
		t.Errorf("redact = %q", got)
	}
}

// A PostgreSQL URL that cannot be parsed, or a server that does not answer,
// fails Open with a message that keeps the password out.
func TestOpenPostgresFailures(t *testing.T) {
	for _, url := range []string{
		"postgres://u:secret@127.0.0.1:1/x?connect_timeout=5&sslmode=disable",
		"postgres://u:secret@127.0.0.1:99999999/x",
	} {
		s, err := Open(url)
		if err == nil {
			s.Close()
			t.Errorf("Open(%s) succeeded", url)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%s): the error shows the password: %v", url, err)
		}
	}
}

// On PostgreSQL two instances sharing the database (two stores here)
// never get the same due job while it is claimed, and get it again once
// its claim expired. On SQLite (one process) a job is due until recorded.
func TestClaimJobs(t *testing.T) {
	ctx := context.Background()
	url := testDB(t)
	a, err := Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	const n = 20
	for i := range n {
		if _, err := a.EnqueueJob(ctx, "d", "u@x", "mail", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if cluster == nil {
		for range 2 {
			if due, err := a.DueJobs(ctx, "d", now, n); err != nil || len(due) != n {
				t.Fatalf("SQLite: %d due, %v, want %d each time", len(due), err, n)
			}
		}
		return
	}
	b, err := Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var mu sync.Mutex
	got := map[int64]string{}
	var wg sync.WaitGroup
	for name, s := range map[string]*Store{"a": a, "b": b} {
		wg.Go(func() {
			for range n + 1 { // without claims, jobs would stay due
				due, err := s.DueJobs(ctx, "d", now, 10)
				if err != nil {
					t.Error(err)
					return
				}
				if len(due) == 0 {
					return
				}
				mu.Lock()
				for _, j := range due {
					if other, ok := got[j.ID]; ok {
						t.Errorf("job %d claimed by %s and %s", j.ID, other, name)
					}
					got[j.ID] = name
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(got) != n {
		t.Errorf("%d jobs claimed, want %d", len(got), n)
	}
	// a dies with its claims; b finishes one of its own (or, when a
	// claimed them all, one of a's it was handed over).
	var mine int64
	for id, who := range got {
		if mine == 0 || who == "b" {
			mine = id
		}
		if who == "b" {
			break
		}
	}
	if err := b.DeleteJob(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if due, err := b.DueJobs(ctx, "d", now.Add(JobLease-time.Second), n); err != nil || len(due) != 0 {
		t.Fatalf("before the claims expire: %+v, %v", due, err)
	}
	expired := map[int64]bool{}
	for range n {
		due, err := b.DueJobs(ctx, "d", now.Add(JobLease+time.Second), n)
		if err != nil {
			t.Fatal(err)
		}
		if len(due) == 0 {
			break
		}
		expired[due[0].ID] = true
	}
	if len(expired) != n-1 || expired[mine] {
		t.Errorf("%d jobs taken over after the claims expired, want %d (not the finished %d)", len(expired), n-1, mine)
	}
	// A claimed job comes back with the next try it had before the claim,
	// so that a runner stopped before running it puts it back as it was,
	// due again at once for the next start.
	id, err := a.EnqueueJob(ctx, "other", "u@x", "mail", []byte{0})
	if err != nil {
		t.Fatal(err)
	}
	now = time.Now()
	due, err := a.DueJobs(ctx, "other", now, 1)
	if err != nil || len(due) != 1 || due[0].ID != id || due[0].NextTry.After(now) {
		t.Fatalf("claimed %+v, %v: want job %d with its next try before the claim", due, err, id)
	}
	if err := a.DelayJob(ctx, id, due[0].NextTry); err != nil {
		t.Fatal(err)
	}
	if again, err := b.DueJobs(ctx, "other", now, 1); err != nil || len(again) != 1 || again[0].ID != id {
		t.Errorf("after the claim was put back: %+v, %v", again, err)
	}
}
