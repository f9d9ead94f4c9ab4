package pgtest

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

type fakeTB struct {
	testing.TB
	skipped, fatal bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any) { f.fatal = true }

// Without PostgreSQL a test is skipped, and fails under CI.
func TestNotInstalled(t *testing.T) {
	t.Setenv("PATH", "")
	old := installed
	installed = "/nonexistent/*/bin/initdb"
	defer func() { installed = old }()
	if _, err := Start(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Start = %v, want ErrNotInstalled", err)
	}
	t.Setenv("CI", "")
	f := &fakeTB{}
	New(f)
	if !f.skipped || f.fatal {
		t.Errorf("without CI: skipped=%v fatal=%v, want a skip", f.skipped, f.fatal)
	}
	t.Setenv("CI", "true")
	f = &fakeTB{}
	New(f)
	if f.skipped || !f.fatal {
		t.Errorf("with CI: skipped=%v fatal=%v, want a failure", f.skipped, f.fatal)
	}
}

// A database per test, empty, dropped at its end; a name not of the
// cluster is refused.
func TestDB(t *testing.T) {
	c := New(t)
	var url string
	t.Run("a test", func(t *testing.T) {
		url = c.DB(t)
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(`CREATE TABLE t (x INTEGER)`); err != nil {
			t.Fatal(err)
		}
	})
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(); err == nil {
		t.Errorf("the database of a finished test is still there: %s", url)
	}
	if err := c.DropDB(context.Background(), "postgres; DROP"); err == nil {
		t.Error("dropped a database by a name it did not make")
	}
	// Pid is the server's: its postmaster, a postgres process.
	pid, err := c.Pid()
	if err != nil {
		t.Fatal(err)
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || !strings.HasPrefix(string(comm), "postgres") {
		t.Errorf("Pid %d: %q %v, want the postmaster", pid, comm, err)
	}
	if _, err := (&Cluster{dir: t.TempDir()}).Pid(); err == nil { // no postmaster.pid
		t.Error("Pid without a postmaster.pid reported no error")
	}
}

// A cluster whose port is taken by another cluster before its server
// binds it does not take the other's server for its own: it starts on
// another port, and its URLs reach its own server.
func TestPortTaken(t *testing.T) {
	first := New(t)
	tries := 0
	pickPort = func() (int, error) {
		tries++
		if tries == 1 {
			return first.port, nil
		}
		return freePort()
	}
	defer func() { pickPort = freePort }()
	second := New(t)
	if tries < 2 || second.port == first.port {
		t.Fatalf("the second cluster serves on port %d (the first's is %d) after %d tries", second.port, first.port, tries)
	}
	for _, c := range []*Cluster{first, second} {
		db, err := sql.Open("pgx", c.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var dir string
		if err := db.QueryRow(`SHOW data_directory`).Scan(&dir); err != nil {
			t.Fatal(err)
		}
		if dir != c.data() {
			t.Errorf("the cluster in %s reaches the server of %s", c.data(), dir)
		}
		if err := c.admin.QueryRow(`SHOW data_directory`).Scan(&dir); err != nil {
			t.Fatal(err)
		}
		if dir != c.data() {
			t.Errorf("the cluster in %s administers the server of %s", c.data(), dir)
		}
	}
}

// helperEnv makes the test binary the helper of TestServerDiesWithTest.
const helperEnv = "PGTEST_KILLED_HELPER"

// A test binary killed with SIGKILL leaves no server running, and the
// next cluster started removes the directory it left.
func TestServerDiesWithTest(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		// The helper: a cluster, its postmaster and directory told, then
		// nothing until the kill.
		c, err := Start()
		if err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(1)
		}
		pid, err := c.Pid()
		if err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("cluster %d %s\n", pid, c.dir)
		select {}
	}
	if runtime.GOOS != "linux" {
		t.Skip("a server dies with its test process on Linux only")
	}
	if _, err := binDir(); err != nil {
		New(t) // skips t, or fails it under CI
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithTest$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the helper said %q: %v", line, err)
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(line, "cluster %d %s", &pid, &dir); err != nil {
		t.Fatalf("the helper said %q: %v", line, err)
	}
	if !running(pid) {
		t.Fatalf("the helper's postmaster %d is not running", pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(time.Minute)
	for running(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the postmaster %d of a killed test process still runs a minute later", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the killed helper's directory: %v", err)
	}
	New(t)
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the next cluster started left the killed helper's directory %s: %v", dir, err)
	}
}

// running reports whether process pid runs (a zombie does not).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(b)
	rest := s[strings.LastIndexByte(s, ')')+1:]
	f := strings.Fields(rest)
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
