package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"
)

// Checkpoints of SQLite's write-ahead log. By default SQLite copies the
// log into the database file (and syncs that file) inside the commit that
// makes the log exceed 1000 pages: that commit, and every write queued
// behind it in the group (see inGroup), waits for the disk. A profile of
// the IRC benchmark at 500 users showed such commits taking 20 to 60 ms
// where the others took under 3. Here the commits leave the log alone
// until it holds walAutoCheckpoint pages (a backstop if the checkpoints
// below fall behind), and a connection of its own copies the log while
// the writes go on (a PASSIVE checkpoint neither waits for nor blocks
// readers and writers), after a commit, at most once per checkpointEvery.
const (
	walAutoCheckpoint = 10000 // pages (40 MB of 4 KB pages)
	checkpointEvery   = 250 * time.Millisecond
)

// sqliteDriver is the "sqlite3" driver with the checkpoint limit above
// set on each of its connections.
const sqliteDriver = "passerelle-sqlite3"

func init() {
	sql.Register(sqliteDriver, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		_, err := c.Exec(fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", walAutoCheckpoint), nil)
		return err
	}})
}

// checkpointer copies the write-ahead log into the database file beside
// the writes.
type checkpointer struct {
	db     *sql.DB // one connection, its own
	wake   chan struct{}
	quit   chan struct{}
	stop   sync.Once
	done   chan struct{}
	runs   atomic.Int64 // checkpoints run
	failed atomic.Int64 // of which failed
}

func newCheckpointer(db *sql.DB) *checkpointer {
	db.SetMaxOpenConns(1)
	c := &checkpointer{db: db, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// committed tells the checkpointer that the log grew.
func (c *checkpointer) committed() {
	if c == nil {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// close stops the checkpointer and closes its connection.
func (c *checkpointer) close() error {
	if c == nil {
		return nil
	}
	c.stop.Do(func() { close(c.quit) })
	<-c.done
	return c.db.Close()
}

func (c *checkpointer) run() {
	defer close(c.done)
	var last time.Time
	for {
		select {
		case <-c.wake:
		case <-c.quit:
			return
		}
		if wait := time.Until(last.Add(checkpointEvery)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.quit:
				t.Stop()
				return
			}
		}
		last = time.Now()
		c.runs.Add(1)
		if err := checkpoint(c.db); err != nil {
			// The next commit wakes it again, and walAutoCheckpoint
			// caps the log meanwhile: nothing is lost or held back.
			c.failed.Add(1)
		}
	}
}

// checkpoint copies what it can of the log without waiting for anyone.
func checkpoint(db *sql.DB) error {
	// The answer is a row: busy (1 when another checkpoint held this one
	// off), the log's pages, the pages copied.
	var busy, logPages, copied int
	if err := db.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logPages, &copied); err != nil {
		return fmt.Errorf("failed to checkpoint the write-ahead log: %w", err)
	}
	return nil
}
