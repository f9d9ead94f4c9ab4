// Package storetest opens stores for tests and reaches their database
// through the store's own handle (Store.DB): to write rows as older
// versions did, to look at rows no API returns, or to break the database
// on purpose.
package storetest

import (
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"passerelle/store"
)

// Store is a store in a temporary directory, closed at the end of the
// test.
type Store struct {
	*store.Store
}

// Open opens a new store for t.
func Open(t testing.TB) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &Store{Store: st}
}

// Exec runs a statement on the database, failing t on error.
func (s *Store) Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	if _, err := s.DB().Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// Column returns the values of a query's one column, sorted and joined by
// spaces.
func (s *Store) Column(t testing.TB, query string, args ...any) string {
	t.Helper()
	rows, err := s.DB().Query(query, args...)
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
