package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/mattn/go-sqlite3"
)

// Checkpoints of SQLite's write-ahead log. By default SQLite copies the
// log into the database file, and syncs both, inside the commit after
// which the log holds 1000 pages or more: that commit, and every write
// queued behind it for the next group (see inGroup), waits for the disk.
// In the IRC benchmark at 500 users such commits took 12 to 76 ms, every
// 100 to 200 ms, where the others took 1 to 5.
//
// Here the same checkpoint, at the same size of the log, runs on a
// connection of its own beside the writes (a PASSIVE checkpoint neither
// waits for nor blocks readers and writers): after a group's commit the
// checkpointer reads the log's length (walFrames) and, from
// walCheckpointPages on, checkpoints it. The log grows and is started over
// as it did inside the commits, so a full disk is met as before: a commit
// that must lengthen the log fails (CheckWrite, /healthz). A log checkpointed
// more often, after every few commits, is started over so often that its
// file never has to grow, and a full disk went unnoticed while it lasted.
//
// The commits still checkpoint from walBackstopPages on, should the
// checkpointer fall behind.
const (
	walCheckpointPages = 1000 // SQLite's default wal_autocheckpoint
	walBackstopPages   = 4 * walCheckpointPages
)

// sqliteDriver is the "sqlite3" driver with the backstop above set on each
// of its connections.
const sqliteDriver = "passerelle-sqlite3"

func init() {
	sql.Register(sqliteDriver, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		_, err := c.Exec(fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", walBackstopPages), nil)
		return err
	}})
}

// checkpointer checkpoints the write-ahead log beside the writes.
//
// The log's length that starts a checkpoint (next) is c.pages once the log
// was started over; after a checkpoint, until the log is started over, a
// quarter more than what that one found. The commit that follows a
// checkpoint starts the log over only if the checkpoint copied all of it
// (the commits go on beside it) and no reader is using it (the pump's and
// the bridges' reads go on too): otherwise each commit woke another
// checkpoint, two syncs, up to 7 in a row in the IRC benchmark at 500
// users.
type checkpointer struct {
	db       *sql.DB  // one connection, its own
	shmPath  string   // the wal-index, where walFrames reads the log's length
	shm      *os.File // nil: not readable (the commits' backstop checkpoints)
	pages    int      // the log's length that starts a checkpoint
	next     atomic.Int64
	restarts atomic.Int64 // the log was started over, as committed saw
	last     int          // the log's length at the previous commit (committed's own)
	wake     chan struct{}
	quit     chan struct{}
	stop     sync.Once
	done     chan struct{}
	runs     atomic.Int64 // checkpoints run
	failed   atomic.Int64 // of which failed
}

func newCheckpointer(path string) (*checkpointer, error) {
	db, err := sql.Open(sqliteDriver, dsn(path))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	// Connected now rather than at the first checkpoint, so that the
	// connection's memory is the process's from its start, not a cost
	// of whatever comes first. A connection that fails here is tried
	// again by the first checkpoint (which fails and is counted; the
	// commits' backstop checkpoints meanwhile).
	_ = db.PingContext(context.Background())
	c := &checkpointer{db: db, shmPath: path + "-shm", pages: walCheckpointPages,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	c.next.Store(int64(c.pages))
	// The wal-index exists once a connection has opened the database in
	// WAL mode: the store's, which migrated it.
	c.shm, _ = os.Open(c.shmPath)
	go c.run()
	return c, nil
}

// committed is called after each commit (one at a time: see inGroup). It
// reads the log's length there, a read of 4 bytes, and wakes the
// checkpointer only from next on.
func (c *checkpointer) committed() {
	if c == nil {
		return
	}
	n, ok := walFrames(c.shm)
	if !ok {
		return
	}
	if n < c.last {
		c.restarts.Add(1)
		c.next.Store(int64(c.pages))
	}
	c.last = n
	if int64(n) < c.next.Load() {
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
	if c.shm != nil {
		c.shm.Close()
	}
	return c.db.Close()
}

func (c *checkpointer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
		case <-c.quit:
			return
		}
		// A wake that came while the last checkpoint ran may be
		// stale: that one moved next.
		if n, ok := walFrames(c.shm); ok && int64(n) < c.next.Load() {
			continue
		}
		restarts := c.restarts.Load()
		c.runs.Add(1)
		logPages, err := checkpoint(c.db)
		if err != nil {
			// The log is not started over: the commits lengthen it,
			// and wake this again.
			c.failed.Add(1)
			continue
		}
		if c.restarts.Load() == restarts {
			c.next.Store(int64(logPages + c.pages/4))
		}
	}
}

// walFrames reads the number of pages in the write-ahead log from its
// wal-index header (https://www.sqlite.org/walformat.html, 2.2.1:
// mxFrame, a 32-bit integer in native byte order at offset 16). It is
// read without SQLite's locks, to decide when to checkpoint: a value
// being rewritten at that moment only moves that decision by a commit.
// ok is false when the wal-index cannot be read.
func walFrames(shm *os.File) (n int, ok bool) {
	if shm == nil {
		return 0, false
	}
	var b [4]byte
	if _, err := shm.ReadAt(b[:], 16); err != nil {
		return 0, false
	}
	return int(binary.NativeEndian.Uint32(b[:])), true
}

// checkpoint copies what it can of the log without waiting for anyone,
// and returns the log's length.
func checkpoint(db *sql.DB) (logPages int, err error) {
	// The answer is a row: busy (1 when another checkpoint held this one
	// off), the log's pages, the pages copied.
	var busy, copied int
	if err := db.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logPages, &copied); err != nil {
		return 0, fmt.Errorf("failed to checkpoint the write-ahead log: %w", err)
	}
	return logPages, nil
}
