// Package storetest opens stores for tests and reaches their database
// through the store's own handle (Store.DB): to write rows as older
// versions did, to look at rows no API returns, or to break the database
// on purpose.
package storetest

import (
	"encoding/binary"
	"os"
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

// Commits returns how many transactions have been committed to s's
// SQLite database since it was opened (by any connection): the counter
// of its write-ahead log's index, iChange, which SQLite increments at
// each commit (https://www.sqlite.org/walformat.html, 2.2.1: a 32-bit
// integer in native byte order at offset 8 of the wal-index header).
// Read without SQLite's locks: call it while no commit is under way.
func (s *Store) Commits(t testing.TB) uint32 {
	t.Helper()
	if s.Shared() {
		t.Fatal("storetest: Commits is for SQLite")
	}
	var path string
	if err := s.DB().QueryRow(`SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&path); err != nil {
		t.Fatalf("storetest: the database's file: %v", err)
	}
	f, err := os.Open(path + "-shm")
	if err != nil {
		t.Fatalf("storetest: the wal-index: %v", err)
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.ReadAt(b[:], 8); err != nil {
		t.Fatalf("storetest: the wal-index: %v", err)
	}
	return binary.NativeEndian.Uint32(b[:])
}
