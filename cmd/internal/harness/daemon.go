package harness

import (
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// daemon is one server process the harness starts, stops and restarts: at
// most one at a time, killed in the test's cleanup, with the end of its log
// shown when the test failed.
type daemon struct {
	name    string
	logTail func(lines int) string

	mu sync.Mutex
	p  *proc
}

// killAtCleanup registers the cleanup that logs and kills the process.
func (d *daemon) killAtCleanup(t testing.TB) {
	t.Cleanup(func() {
		if failed(t) {
			t.Logf("harness: last 60 lines of the %s log:\n%s", d.name, d.logTail(60))
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.p != nil {
			d.p.kill()
		}
	})
}

// start runs cmd in dir with the harness's environment, its output
// appended to consoleLog, and waits until addrs accept connections and
// probe (if any) succeeds.
func (d *daemon) start(t testing.TB, cmd *exec.Cmd, dir, consoleLog string, addrs []string, probe func() error) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.p != nil && !d.p.exited() {
		t.Fatalf("harness: %s is already running", d.name)
	}
	logf, err := os.OpenFile(consoleLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Dir, cmd.Env = dir, serverEnv(dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	p, err := startProc(d.name, cmd)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	d.p = p
	if err := waitReady(p, addrs, startTimeout, probe); err != nil {
		p.kill()
		t.Fatalf("harness: %v\n%s", err, d.logTail(30))
	}
	t.Logf("harness: %s ready in %v %v", d.name, time.Since(t0).Round(time.Millisecond), addrs)
}

// stop sends SIGTERM and waits for the process to exit (SIGKILL after
// stopGrace).
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.p == nil || d.p.exited() {
		return
	}
	t0 := time.Now()
	if d.p.terminate("", stopGrace) {
		t.Logf("harness: %s ignored SIGTERM for %v; killed it", d.name, stopGrace)
		return
	}
	t.Logf("harness: %s stopped in %v", d.name, time.Since(t0).Round(time.Millisecond))
}

// pid is the running process's id (0 before the first start).
func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.p == nil {
		return 0
	}
	return d.p.pid
}
