package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

type fakeTB struct {
	testing.TB
	skipped, fatal bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any) { f.fatal = true }

// Without PostgreSQL a test is skipped, and fails under CI.
func TestNotInstalled(t *testing.T) {
	t.Setenv("PATH", "")
	old := installed
	installed = "/nonexistent/*/bin/initdb"
	defer func() { installed = old }()
	if _, err := Start(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Start = %v, want ErrNotInstalled", err)
	}
	t.Setenv("CI", "")
	f := &fakeTB{}
	New(f)
	if !f.skipped || f.fatal {
		t.Errorf("without CI: skipped=%v fatal=%v, want a skip", f.skipped, f.fatal)
	}
	t.Setenv("CI", "true")
	f = &fakeTB{}
	New(f)
	if f.skipped || !f.fatal {
		t.Errorf("with CI: skipped=%v fatal=%v, want a failure", f.skipped, f.fatal)
	}
}

// A database per test, empty, dropped at its end; a name not of the
// cluster is refused.
func TestDB(t *testing.T) {
	c := New(t)
	var url string
	t.Run("a test", func(t *testing.T) {
		url = c.DB(t)
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(`CREATE TABLE t (x INTEGER)`); err != nil {
			t.Fatal(err)
		}
	})
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(); err == nil {
		t.Errorf("the database of a finished test is still there: %s", url)
	}
	if err := c.DropDB(context.Background(), "postgres; DROP"); err == nil {
		t.Error("dropped a database by a name it did not make")
	}
	// Pid is the server's: its postmaster, a postgres process.
	pid, err := c.Pid()
	if err != nil {
		t.Fatal(err)
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || !strings.HasPrefix(string(comm), "postgres") {
		t.Errorf("Pid %d: %q %v, want the postmaster", pid, comm, err)
	}
	if _, err := (&Cluster{dir: t.TempDir()}).Pid(); err == nil { // no postmaster.pid
		t.Error("Pid without a postmaster.pid reported no error")
	}
}
