// Package storetest opens stores for tests, with a handle of their own
// on the database: to write rows as older versions did, to look at rows
// no API returns, or to break the database on purpose.
package storetest

import (
	"database/sql"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"passerelle/store"
)

// Store is a store in a temporary directory, closed at the end of the
// test, with the raw handle.
type Store struct {
	*store.Store
	raw *sql.DB
}

// Open opens a new store for t.
func Open(t testing.TB) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?_busy_timeout=5000")
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close(); st.Close() })
	return &Store{Store: st, raw: raw}
}

// Exec runs a statement on the database, failing t on error.
func (s *Store) Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	if _, err := s.raw.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// Column returns the values of a query's one column, sorted and joined by
// spaces.
func (s *Store) Column(t testing.TB, query string, args ...any) string {
	t.Helper()
	rows, err := s.raw.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
