package store

// The presence of an instance's process, as the other instances can see
// it at once. An instance's row (instance.go) says what it may hold, by
// a lease; it outlives a killed process by up to the lease. The process's
// sockets do not: the kernel closes them when it dies, wherever it runs,
// and the XMPP server frees the process's balancing slots then, as
// PostgreSQL ends its sessions. So each instance keeps a session of its
// own holding an advisory lock named after it (ShowPresence), and the
// others read which live rows have no such lock (AbsentInstances): a
// process gone a moment ago. It is a sign, not a lease: a frozen process
// keeps its session, and a live one may lose it with its connection to
// the database, so nothing held is taken on it; it only tells the others
// to look for the slots the process left (component/slots.go).

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync"
)

// presenceKey is the first key of the advisory locks of instances'
// presence, pg_advisory_lock(presenceKey, hashtext(instance)): ("pass").
const presenceKey = 0x70617373

// presence is the session holding this instance's presence lock.
type presence struct {
	mu   sync.Mutex
	conn *sql.Conn
	id   string // the instance the lock is named after
}

// ShowPresence takes this instance's presence lock on a connection of its
// own, unless that connection holds it and works; after a failure or a
// new name (RejoinInstances) it takes it again. Call it often (it is a
// ping): it is how a broken session is replaced. On SQLite it does
// nothing.
func (s *Store) ShowPresence(ctx context.Context) error {
	if !s.pg {
		return nil
	}
	p := &s.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	id := s.Instance()
	if p.conn != nil {
		if p.id == id && p.conn.PingContext(ctx) == nil {
			return nil
		}
		dropConn(p.conn)
		p.conn = nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("failed to open the instance's presence session: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(?, hashtext(?))`, presenceKey, id); err != nil {
		dropConn(conn)
		return fmt.Errorf("failed to show the instance's presence: %w", err)
	}
	p.conn, p.id = conn, id
	return nil
}

// HidePresence ends the presence session (at a stop; Close does it).
func (s *Store) HidePresence() {
	p := &s.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		dropConn(p.conn)
		p.conn = nil
	}
}

// dropConn closes conn's session rather than returning it to the pool,
// where it would keep its lock.
func dropConn(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

// Presences returns the instances other than this one whose row is here,
// each with whether its presence lock is held: false when its process is
// gone, or its session is (or it shows none: an older gateway). On
// SQLite there are none.
func (s *Store) Presences(ctx context.Context) (map[string]bool, error) {
	if !s.pg {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, EXISTS (
			SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
				AND l.classid = ?::bigint::oid AND l.objid = (hashtext(i.id)::bigint & 4294967295)::oid)
		FROM instances i WHERE id <> ?`, presenceKey, s.Instance())
	if err != nil {
		return nil, fmt.Errorf("failed to read the instances' presence: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		var present bool
		if err := rows.Scan(&id, &present); err != nil {
			return nil, fmt.Errorf("failed to read the instances' presence: %w", err)
		}
		out[id] = present
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the instances' presence: %w", err)
	}
	return out, nil
}
