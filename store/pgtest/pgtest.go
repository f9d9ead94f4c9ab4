// Package pgtest runs a private PostgreSQL cluster for tests: initdb in a
// temporary directory, a server on a free loopback port with its socket in
// that directory, stopped (by its data directory, with pg_ctl) at the end.
// Each test gets a database of its own in it (DB), dropped when it ends.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

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
	dbs      atomic.Int64
}

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
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("failed to make the cluster's directory: %w", err)
	}
	c := &Cluster{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		// The server refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs the system user postgres: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("failed to give the cluster's directory to postgres: %w", err)
		}
		c.asUser = "postgres"
	}
	if out, err := c.run("initdb", "-D", c.data(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("failed to initdb: %w\n%s", err, out)
	}
	// A free port can be taken by someone else before the server binds it:
	// try a few.
	for try := 0; ; try++ {
		c.port, err = freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(dir, "log"), "-w",
			"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", c.port, dir), "start")
		if err == nil {
			break
		}
		if try == 3 {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("failed to start postgres: %w\n%s\n%s", err, out, log)
		}
	}
	c.admin, err = sql.Open("pgx", c.URL("postgres"))
	if err == nil {
		err = c.admin.Ping()
	}
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("failed to connect to postgres: %w", err)
	}
	return c, nil
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
	path := filepath.Join(c.bin, prog)
	var cmd *exec.Cmd
	if c.asUser != "" {
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			runuser = "/usr/sbin/runuser" // util-linux, outside a user's PATH
		}
		cmd = exec.Command(runuser, append([]string{"-u", c.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

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
	if c.admin != nil {
		c.admin.Close()
	}
	out, err := c.run("pg_ctl", "-D", c.data(), "-m", "fast", "-w", "stop")
	if err != nil {
		return fmt.Errorf("failed to stop postgres: %w\n%s", err, out)
	}
	return os.RemoveAll(c.dir)
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
