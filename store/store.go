// Package store keeps Passerelle's state in SQLite: registrations, claimed
// foreign addresses, the identity and message-id maps, and the persistent
// queues (stanzas for the XMPP server, deliveries to foreign networks).
//
// It runs on PostgreSQL as well, given a postgres:// URL (dialect.go).
//
// The schema is embedded and versioned with PRAGMA user_version (PostgreSQL:
// a schema_version table); Open applies
// the missing migrations in one transaction and refuses a database written
// by a newer binary.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver
)

//go:embed schema/*.sql schema/postgres/*.sql
var schemaFS embed.FS

// ErrNewerSchema is returned by Open for a database migrated by a newer binary.
var ErrNewerSchema = errors.New("database schema is newer than this binary")

// Store is a handle on the database. It is safe for concurrent use.
type Store struct {
	db    *sql.DB
	pg    bool          // PostgreSQL rather than SQLite (see dialect.go)
	group groupCommit   // Deliver's queue
	ckpt  *checkpointer // SQLite, on a file
	// instance is this Store's name among the instances sharing the
	// database (instance.go); it owns the outbox rows it writes.
	instance atomic.Pointer[string]
	// presence is the connection showing that the instance's process
	// lives (presence.go).
	presence presence
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations(dir string) ([]migration, error) {
	entries, err := fs.ReadDir(schemaFS, dir)
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		n, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(n)
		if !ok || err != nil {
			return nil, fmt.Errorf("bad migration file name %q", e.Name())
		}
		b, err := fs.ReadFile(schemaFS, dir+"/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s out of sequence", m.name)
		}
	}
	return ms, nil
}

// LatestVersion is the schema version this binary writes.
func LatestVersion() int {
	ms, err := migrations("schema")
	if err != nil {
		panic(err) // the embedded files are part of the binary
	}
	return len(ms)
}

// Open opens (creating it if needed) the database at path and migrates it.
// path ":memory:" gives a private in-memory database (for tests); a
// postgres:// or postgresql:// URL names a PostgreSQL database, which
// must exist (its tables are created).
func Open(path string) (*Store, error) {
	return open(path, LatestVersion())
}

// maxConns bounds the connections to a database file (see open).
const maxConns = 2

func dsn(path string) string {
	q := url.Values{}
	q.Set("_busy_timeout", "5000")
	q.Set("_foreign_keys", "on")
	q.Set("_txlock", "immediate")
	if path == ":memory:" {
		return "file::memory:?" + q.Encode()
	}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "NORMAL")
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// open migrates up to version target (tests use it to build old schemas).
func open(path string, target int) (*Store, error) {
	if isPostgres(path) {
		db, err := openPostgres(path)
		if err != nil {
			return nil, fmt.Errorf("failed to open database %s: %w", Redact(path), err)
		}
		s := &Store{db: db, pg: true}
		s.instance.Store(ptr(newInstanceID()))
		if err := s.migrate(target); err != nil {
			db.Close()
			return nil, fmt.Errorf("database %s: %w", Redact(path), err)
		}
		return s, nil
	}
	db, err := sql.Open(sqliteDriver, dsn(path))
	if err != nil {
		return nil, fmt.Errorf("failed to open database %s: %w", path, err)
	}
	if path == ":memory:" {
		// Every connection to ":memory:" is a new database: use one.
		db.SetMaxOpenConns(1)
	} else {
		// SQLite runs one writer at a time, and the gateway's queries are
		// short: a second connection lets a read go on beside a write;
		// more would only multiply page caches, lookaside buffers and
		// parsed schemas (a burst of joins opened one per busy user).
		db.SetMaxOpenConns(maxConns)
		db.SetMaxIdleConns(maxConns)
	}
	s := &Store{db: db}
	s.instance.Store(ptr(newInstanceID()))
	if err := s.migrate(target); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	if path != ":memory:" {
		if s.ckpt, err = newCheckpointer(path); err != nil {
			db.Close()
			return nil, fmt.Errorf("failed to open database %s: %w", path, err)
		}
	}
	return s, nil
}

func (s *Store) migrate(target int) error {
	ms, err := migrations(s.schemaDir())
	if err != nil {
		return err
	}
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to begin migration: %w", err)
	}
	defer tx.Rollback()
	if err := s.lockSchema(ctx, tx); err != nil {
		return err
	}
	current, err := s.schemaVersion(ctx, tx)
	if err != nil {
		return fmt.Errorf("failed to read schema version: %w", err)
	}
	if current > len(ms) {
		return fmt.Errorf("%w (database version %d, binary knows %d)", ErrNewerSchema, current, len(ms))
	}
	for _, m := range ms[current:] {
		if m.version > target {
			break
		}
		if _, err := tx.Exec(m.sql); err != nil {
			return fmt.Errorf("failed to apply migration %s: %w", m.name, err)
		}
		current = m.version
	}
	if err := s.setSchemaVersion(ctx, tx, current); err != nil {
		return fmt.Errorf("failed to set schema version: %w", err)
	}
	return tx.Commit()
}

// Version returns the database's schema version.
func (s *Store) Version() (int, error) {
	return s.schemaVersion(context.Background(), s.db)
}

// Close closes the database.
func (s *Store) Close() error {
	s.HidePresence()
	// The checkpointer first: the last connection closed checkpoints the
	// log and removes it.
	err := s.ckpt.close()
	if cerr := s.db.Close(); cerr != nil {
		err = cerr
	}
	return err
}

// DB exposes the handle for bridge-specific tables added by migrations.
func (s *Store) DB() *sql.DB { return s.db }

// CheckWrite commits a one-row write (for /healthz): it fails while the
// database cannot commit (a full disk, a read-only file), where a read or a
// ping would still succeed.
func (s *Store) CheckWrite(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO health (id, checked) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET checked = excluded.checked`, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to write to the database: %w", err)
	}
	return nil
}

func now() int64 { return time.Now().Unix() }
