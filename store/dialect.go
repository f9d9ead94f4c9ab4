package store

// The SQL that differs between SQLite and PostgreSQL, and nothing else:
// the schema's version, its migrations, how a unique key refuses a row,
// and case-insensitive equality. Placeholders are rewritten by the
// PostgreSQL connections (postgres.go).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"
)

// schemaDir is where the engine's migrations are: SQLite's in schema/,
// PostgreSQL's, the same versions in its dialect, in schema/postgres/.
func (s *Store) schemaDir() string {
	if s.pg {
		return "schema/postgres"
	}
	return "schema"
}

// migrationLock is the key of the advisory lock that lets one PostgreSQL
// client at a time migrate (several instances may start together).
const migrationLock = 0x70617373 // "pass"

// lockSchema makes tx the only migration running: SQLite's immediate
// transactions already are.
func (s *Store) lockSchema(ctx context.Context, tx *sql.Tx) error {
	if !s.pg {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, migrationLock); err != nil {
		return fmt.Errorf("failed to lock the schema: %w", err)
	}
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`)
	return err
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion reads the version: SQLite's PRAGMA user_version, the one
// row of PostgreSQL's schema_version (none yet: 0).
func (s *Store) schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	if !s.pg {
		err := q.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
		return v, err
	}
	err := q.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

func (s *Store) setSchemaVersion(ctx context.Context, tx *sql.Tx, v int) error {
	if !s.pg {
		// PRAGMA takes no bound parameters; v is an integer we computed.
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v))
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, v)
	return err
}

// isUniqueViolation reports whether err is a row refused by a primary or
// unique key.
func isUniqueViolation(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrConstraint
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// equalFoldASCII is a condition that column equals a bound value, ASCII
// letters in any case.
func (s *Store) equalFoldASCII(column string) string {
	if s.pg {
		// Under the C collation lower() folds ASCII letters only, like
		// SQLite's NOCASE, whatever the database's own collation.
		return "lower(" + column + ` COLLATE "C") = lower(? COLLATE "C")`
	}
	return column + " = ? COLLATE NOCASE"
}

// pgDeliverOnce writes a delivery with a key in one statement, its links
// and stanzas only when the key is new ($1 domain, $2 key, $3 created,
// $4 the stanzas in order, $5 their owner, $6…$12 the links' columns), and returns
// whether it was: the statements of a group on PostgreSQL are sent before
// any result comes back (see sendGroup), so the key's check cannot be a
// statement of its own whose result decides the next ones.
const pgDeliverOnce = `WITH k AS (
	INSERT INTO deliveries (domain, key, created) VALUES ($1, $2, $3)
	ON CONFLICT (domain, key) DO NOTHING RETURNING 1
), l AS (
	INSERT INTO message_ids (domain, jid, xmpp_id, foreign_id, peer, thread, extra, created)
	SELECT u.*, $3 FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) AS u, k
	ON CONFLICT (domain, jid, xmpp_id) DO UPDATE SET foreign_id = excluded.foreign_id,
		peer = excluded.peer, thread = excluded.thread, extra = excluded.extra
), o AS (
	INSERT INTO outbox (domain, stanza, created, owner)
	SELECT $1, u.stanza, $3, $5 FROM unnest($4::text[]) WITH ORDINALITY AS u(stanza, n), k ORDER BY u.n
)
SELECT count(*) > 0 FROM k`

// rebound is rebind(query), computed once per query (the group's
// statements, queued for PostgreSQL without going through pgConn).
func rebound(query string) string {
	if q, ok := reboundQueries.Load(query); ok {
		return q.(string)
	}
	q := rebind(query)
	reboundQueries.Store(query, q)
	return q
}

var reboundQueries sync.Map

// pgInsertOutbox inserts a group's stanzas, in order, in one statement
// ($1 their domains, $2 the stanzas, $3 their times, $4 their owner).
const pgInsertOutbox = `INSERT INTO outbox (domain, stanza, created, owner)
	SELECT u.domain, u.stanza, u.created, $4 FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS u(domain, stanza, created, n)
	ORDER BY u.n`
