package storetest

// Faults: a store broken the way a full disk or a damaged file would
// break it, for tests of what the code above the store does then.

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"passerelle/store"
)

// Operations a store can be made to refuse.
const (
	Insert = "INSERT"
	Update = "UPDATE"
	Delete = "DELETE"
)

// content is the text of a row that Refuse matches, by table.
var content = map[string]string{
	"jobs":   "CAST(%s.payload AS TEXT)",
	"outbox": "%s.stanza",
}

var triggers atomic.Int64

// Refuse makes st refuse op (Insert, Update or Delete) on the rows of
// table whose content (a job's payload, an outbox stanza) contains
// containing, or on every row when containing is "", until lift is called
// or the test ends.
func Refuse(t testing.TB, st *store.Store, op, table, containing string) (lift func()) {
	t.Helper()
	if op != Insert && op != Update && op != Delete {
		t.Fatalf("storetest: cannot refuse %q", op)
	}
	name := fmt.Sprintf("storetest_refuse_%d", triggers.Add(1))
	when := ""
	if containing != "" {
		col, ok := content[table]
		if !ok {
			t.Fatalf("storetest: no content known for the rows of %s", table)
		}
		row := "NEW"
		if op == Delete {
			row = "OLD"
		}
		// A trigger takes no bound parameters: containing is quoted.
		when = fmt.Sprintf("WHEN instr("+col+", '%s') > 0", row, strings.ReplaceAll(containing, "'", "''"))
	}
	if _, err := st.DB().Exec(fmt.Sprintf(`CREATE TRIGGER %s BEFORE %s ON %s %s BEGIN SELECT RAISE(ABORT, 'refused'); END`,
		name, op, table, when)); err != nil {
		t.Fatalf("storetest: cannot make the store refuse %s on %s: %v", op, table, err)
	}
	lifted := false
	lift = func() {
		t.Helper()
		if lifted {
			return
		}
		lifted = true
		if _, err := st.DB().Exec(`DROP TRIGGER ` + name); err != nil {
			t.Fatalf("storetest: cannot lift the refusal of %s on %s: %v", op, table, err)
		}
	}
	t.Cleanup(func() {
		if !lifted {
			lifted = true
			st.DB().Exec(`DROP TRIGGER ` + name) // the store may be closed already
		}
	})
	return lift
}

// Drop removes table from st, as a damaged file would lose it: every
// statement reading or writing it fails from then on.
func Drop(t testing.TB, st *store.Store, table string) {
	t.Helper()
	if _, err := st.DB().Exec(`DROP TABLE ` + table); err != nil {
		t.Fatalf("storetest: cannot drop %s: %v", table, err)
	}
}

// SpoilJob makes the job id unreadable: its creation time is no longer a
// time.
func SpoilJob(t testing.TB, st *store.Store, id int64) {
	t.Helper()
	if _, err := st.DB().Exec(`UPDATE jobs SET created = 'yesterday' WHERE id = ?`, id); err != nil {
		t.Fatalf("storetest: cannot spoil job %d: %v", id, err)
	}
}

// Lock holds a PostgreSQL lock on table that makes every other statement
// reading or writing it wait, as a database that stopped answering does,
// until release is called or the test ends.
func Lock(t testing.TB, st *store.Store, table string) (release func()) {
	t.Helper()
	if !st.Shared() {
		t.Fatalf("storetest: Lock is for PostgreSQL")
	}
	tx, err := st.DB().Begin()
	if err != nil {
		t.Fatalf("storetest: cannot begin: %v", err)
	}
	if _, err := tx.Exec(`LOCK TABLE ` + table + ` IN ACCESS EXCLUSIVE MODE`); err != nil {
		tx.Rollback()
		t.Fatalf("storetest: cannot lock %s: %v", table, err)
	}
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback() }) }
	t.Cleanup(release)
	return release
}

// CutListeners cuts the connections that listen for stanzas relayed
// between instances (store.Listen) on st's PostgreSQL database, every
// instance's, as a failure of the network or of the server would.
func CutListeners(t testing.TB, st *store.Store) {
	t.Helper()
	if _, err := st.DB().Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %'`); err != nil {
		t.Fatalf("storetest: cannot cut the listeners: %v", err)
	}
}
