package store

// PostgreSQL: the store's queries are written once, with SQLite's "?"
// placeholders; the PostgreSQL connections rewrite them to "$1", "$2"…
// and pass booleans as the integers SQLite stores, so that every query
// the two engines share goes through one code path. The few that differ
// are in dialect.go.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// isPostgres reports whether a PASSERELLE_DB value names a PostgreSQL
// database rather than an SQLite file.
func isPostgres(path string) bool {
	return strings.HasPrefix(path, "postgres://") || strings.HasPrefix(path, "postgresql://")
}

// Redact hides the password of a database URL in messages.
func Redact(path string) string {
	if !isPostgres(path) {
		return path
	}
	u, err := url.Parse(path)
	if err != nil {
		return "postgres://…"
	}
	return u.Redacted()
}

// pgMaxConns bounds the connections an instance opens to PostgreSQL.
const pgMaxConns = 8

// pgDial, when set (by a test), opens the connections to PostgreSQL.
var pgDial pgconn.DialFunc

func openPostgres(path string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(path)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the database URL: %w", err)
	}
	if pgDial != nil {
		cfg.DialFunc = pgDial
	}
	db := sql.OpenDB(pgConnector{stdlib.GetConnector(*cfg)})
	db.SetMaxOpenConns(pgMaxConns)
	db.SetMaxIdleConns(pgMaxConns)
	return db, nil
}

// pgConnector opens pgConns.
type pgConnector struct{ driver.Connector }

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return pgConn{conn.(*stdlib.Conn)}, nil
}

// pgConn is a pgx connection that takes the store's SQLite-style queries.
type pgConn struct{ *stdlib.Conn }

func (c pgConn) Prepare(query string) (driver.Stmt, error) {
	return c.Conn.Prepare(rebind(query))
}

func (c pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, rebind(query))
}

func (c pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if len(args) > 0 {
		query = rebind(query)
	}
	return c.Conn.ExecContext(ctx, query, args)
}

func (c pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if len(args) > 0 {
		query = rebind(query)
	}
	return c.Conn.QueryContext(ctx, query, args)
}

// CheckNamedValue passes a bool as SQLite stores it, an integer 0 or 1
// (the flags' columns are integers in both schemas).
func (c pgConn) CheckNamedValue(v *driver.NamedValue) error {
	if b, ok := v.Value.(bool); ok {
		v.Value = int64(0)
		if b {
			v.Value = int64(1)
		}
	}
	return nil
}

// rebind numbers the "?" placeholders of query outside quoted strings
// and identifiers: "$1", "$2"…
func rebind(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(query); i++ {
		ch := query[i]
		switch {
		case quote != 0:
			if ch == quote {
				quote = 0
			}
		case ch == '\'' || ch == '"':
			quote = ch
		case ch == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}
