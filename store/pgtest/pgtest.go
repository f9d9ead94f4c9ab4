// Package pgtest runs a private PostgreSQL cluster for tests: initdb in a
// temporary directory, a server on a free loopback port with its socket in
// that directory, stopped at the end. The server (its postmaster) is a
// child of the test process that dies with it (on Linux): a test binary
// killed by go test's timeout or SIGKILL leaves no server behind, and the
// next Start removes the directory it left. Each test gets a database of
// its own in it (DB), dropped when it ends.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
)

// ErrNotInstalled is returned by Start when PostgreSQL's server programs
// are not installed (Debian: package postgresql).
var ErrNotInstalled = errors.New("postgresql is not installed (initdb not found)")

// Cluster is a running private server.
type Cluster struct {
	dir, bin string
	port     int
	admin    *sql.DB
	asUser   string // the system user the server runs as; empty: the current one
	uid, gid int    // asUser's
	dbs      atomic.Int64

	// The postmaster, and done, closed when it has exited (waitErr then
	// holds how).
	proc    *os.Process
	done    chan struct{}
	waitErr error
	// lock is held while the cluster runs: a directory whose lock is free
	// was left by a process that died (sweep).
	lock *os.File
}

// readyWait bounds how long Start waits for a started server to accept
// connections, and Stop for it to exit.
const readyWait = time.Minute

// installed is where Debian installs initdb, one directory per major
// version.
var installed = "/usr/lib/postgresql/*/bin/initdb"

// binDir returns the newest /usr/lib/postgresql/*/bin holding initdb.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob(installed)
	if len(dirs) == 0 {
		return "", ErrNotInstalled
	}
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return vi < vj
	})
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

// Start initialises and starts a cluster. Stop it with Stop.
func Start() (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	sweep()
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("failed to make the cluster's directory: %w", err)
	}
	c := &Cluster{dir: dir, bin: bin}
	if c.lock, err = lockDir(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if os.Geteuid() == 0 {
		// The server refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			c.remove()
			return nil, fmt.Errorf("running as root needs the system user postgres: %w", err)
		}
		c.uid, _ = strconv.Atoi(u.Uid)
		c.gid, _ = strconv.Atoi(u.Gid)
		if err := os.Chown(dir, c.uid, c.gid); err != nil {
			c.remove()
			return nil, fmt.Errorf("failed to give the cluster's directory to postgres: %w", err)
		}
		c.asUser = "postgres"
	}
	if out, err := c.run("initdb", "-D", c.data(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"); err != nil {
		c.remove()
		return nil, fmt.Errorf("failed to initdb: %w\n%s", err, out)
	}
	// A free port can be taken by someone else before the server binds it
	// (another test's cluster, say): our postmaster then exits, and the
	// next try takes another port.
	for try := 0; ; try++ {
		c.port, err = pickPort()
		if err != nil {
			c.remove()
			return nil, err
		}
		if err = c.serve(); err == nil {
			return c, nil
		}
		if try == 3 {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			c.remove()
			return nil, fmt.Errorf("failed to start postgres: %w\n%s", err, log)
		}
	}
}

// serve starts the postmaster on c.port and waits until it accepts
// connections. On error no server runs.
//
// Readiness is asked through the unix socket in the cluster's directory,
// never over TCP: while our postmaster has not yet failed to bind a port
// someone else holds, 127.0.0.1:port may be another cluster's server.
// Only our postmaster makes a socket in c.dir, and it does so after
// binding its TCP port.
func (c *Cluster) serve() error {
	log, err := os.OpenFile(filepath.Join(c.dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("failed to open the server's log: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), "-D", c.data(), "-p", strconv.Itoa(c.port), "-k", c.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = log, log
	if cmd.SysProcAttr, err = c.serverAttr(); err != nil {
		return err
	}
	started := make(chan error, 1)
	done := make(chan struct{})
	c.done = done
	go func() {
		// The parent-death signal goes when the thread that started
		// the child ends: this one stays until the child has exited.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.waitErr = cmd.Wait()
		close(done)
		// The thread ends with the goroutine (it stays locked).
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("failed to run postgres: %w", err)
	}
	c.proc = cmd.Process
	c.admin, err = sql.Open("pgx", c.socketURL("postgres"))
	if err != nil {
		c.kill()
		return fmt.Errorf("failed to connect to postgres: %w", err)
	}
	deadline := time.Now().Add(readyWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = c.admin.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-c.done:
			c.admin.Close()
			return fmt.Errorf("postgres exited: %v (connecting: %w)", c.waitErr, err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.admin.Close()
			c.kill()
			return fmt.Errorf("postgres does not accept connections after %v: %w", readyWait, err)
		}
	}
}

// kill ends the postmaster at once and waits for it.
func (c *Cluster) kill() {
	c.proc.Kill()
	<-c.done
}

// remove removes the cluster's directory and lets go of its lock.
func (c *Cluster) remove() error {
	err := os.RemoveAll(c.dir)
	c.lock.Close()
	return err
}

// New starts a cluster for t, stopped when t ends. It skips t when
// PostgreSQL is not installed, and fails it then when $CI is set.
func New(t testing.TB) *Cluster {
	t.Helper()
	c, err := Start()
	switch {
	case errors.Is(err, ErrNotInstalled) && os.Getenv("CI") != "":
		t.Fatalf("pgtest: %v (CI is set, so this is an error)", err)
		return nil
	case errors.Is(err, ErrNotInstalled):
		t.Skipf("pgtest: %v", err)
		return nil
	case err != nil:
		t.Fatalf("pgtest: %v", err)
		return nil
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, prog), args...)
	cmd.Dir = c.dir
	var err error
	if cmd.SysProcAttr, err = c.serverAttr(); err != nil {
		return nil, err
	}
	return cmd.CombinedOutput()
}

// pickPort is the port the next serve tries; tests replace it.
var pickPort = freePort

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("failed to find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL is the postgres:// URL of database db on the cluster.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// socketURL is the URL of database db through the server's unix socket
// in the cluster's directory: it reaches our server or none.
func (c *Cluster) socketURL(db string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", db, url.QueryEscape(c.dir), c.port)
}

// Pid is the process id of the server's postmaster (its first process,
// the parent of the others), from its postmaster.pid file.
func (c *Cluster) Pid() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.data(), "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("failed to read the server's pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %q: %w", line, err)
	}
	return pid, nil
}

// Stop stops the server (fast shutdown: sessions are closed) and removes
// its directory.
func (c *Cluster) Stop() error {
	c.admin.Close()
	var err error
	if e := c.proc.Signal(syscall.SIGINT); e != nil {
		err = fmt.Errorf("failed to stop postgres: %w", e)
	}
	select {
	case <-c.done:
		if c.waitErr != nil && err == nil {
			log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
			err = fmt.Errorf("postgres did not stop cleanly: %w\n%s", c.waitErr, log)
		}
	case <-time.After(readyWait):
		c.kill()
		err = fmt.Errorf("postgres did not stop within %v of a fast shutdown: killed", readyWait)
	}
	if e := c.remove(); e != nil && err == nil {
		err = e
	}
	return err
}

// CreateDB creates an empty database and returns its URL.
func (c *Cluster) CreateDB(ctx context.Context) (name, url string, err error) {
	name = fmt.Sprintf("t%d", c.dbs.Add(1))
	// Names take no bound parameters; name is ours.
	if _, err := c.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", "", fmt.Errorf("failed to create database %s: %w", name, err)
	}
	return name, c.URL(name), nil
}

// DropDB drops a database made by CreateDB, closing its sessions.
func (c *Cluster) DropDB(ctx context.Context, name string) error {
	if strings.ContainsFunc(name, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		return fmt.Errorf("not a database of this cluster: %q", name)
	}
	if _, err := c.admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("failed to drop database %s: %w", name, err)
	}
	return nil
}

// DB creates a database for t, dropped when t ends, and returns its URL.
func (c *Cluster) DB(t testing.TB) string {
	t.Helper()
	name, url, err := c.CreateDB(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DropDB(context.Background(), name); err != nil {
			t.Error(err)
		}
	})
	return url
}
