package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// GatewayPackage is the package BuildBinary builds.
const GatewayPackage = "passerelle/cmd/passerelle"

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
	buildOut  []byte
)

// buildDir is where BuildBinary puts the binary; Cleanup removes it.
func buildDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("passerelle-e2e-%d", os.Getpid()))
}

// BuildBinary returns the path of the passerelle binary: $PASSERELLE_BIN
// when set, otherwise the result of `go build -o <dir>/passerelle
// passerelle/cmd/passerelle` (with -race when PASSERELLE_E2E_RACE=1), done
// once per test process. The directory is
// $TMPDIR/passerelle-e2e-<pid>: TestMain should call Cleanup after m.Run to
// remove it.
func BuildBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if bin := os.Getenv("PASSERELLE_BIN"); bin != "" {
			buildPath, buildErr = filepath.Abs(bin)
			if buildErr == nil {
				_, buildErr = os.Stat(buildPath)
			}
			return
		}
		t0 := time.Now()
		buildPath, buildOut, buildErr = goBuild(GatewayPackage, "passerelle", os.Getenv("PASSERELLE_E2E_RACE") == "1")
		if buildErr == nil {
			t.Logf("harness: built %s in %v", GatewayPackage, time.Since(t0).Round(time.Millisecond))
		}
	})
	if buildErr != nil {
		t.Fatalf("harness: building %s: %v\n%s", GatewayPackage, buildErr, buildOut)
	}
	return buildPath
}

// goBuild builds pkg (an import path or a ./relative directory) into
// buildDir()/name.
func goBuild(pkg, name string, race bool) (path string, out []byte, err error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if _, e := os.Stat("/usr/local/go/bin/go"); e == nil {
			goBin, err = "/usr/local/go/bin/go", nil
		} else {
			return "", nil, err
		}
	}
	dir := buildDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, name)
	args := []string{"build", "-o", path}
	if race {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	cmd := exec.Command(goBin, args...)
	out, err = runBounded(cmd, 10*time.Minute)
	return path, out, err
}

// Cleanup removes the directory BuildBinary built into. Call it from
// TestMain after m.Run.
func Cleanup() {
	_ = os.RemoveAll(buildDir())
}

// lockedBuffer is a bytes.Buffer safe for concurrent use, with a channel
// closed whenever it grows.
type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.b.Write(p)
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return n, err
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// wait returns the current contents and a channel closed on the next Write.
func (l *lockedBuffer) wait() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.b.String(), l.changed
}

// Gateway is a running passerelle binary (or any program under test).
type Gateway struct {
	Cmd *exec.Cmd
	Env []string // exactly the environment it was started with

	out  lockedBuffer // stdout and stderr, interleaved
	proc *proc
}

// StartGateway starts bin with exactly env (plus PATH and HOME from the
// test process unless env sets them) in its own process group, capturing
// stdout and stderr. It is SIGKILLed (with its whole group) in t.Cleanup,
// and its output is t.Log-ged when the test failed.
func StartGateway(t testing.TB, bin string, env map[string]string, args ...string) *Gateway {
	t.Helper()
	g := &Gateway{}
	full := map[string]string{"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME")}
	for k, v := range env {
		full[k] = v
	}
	for k, v := range full {
		g.Env = append(g.Env, k+"="+v)
	}
	sort.Strings(g.Env)
	g.Cmd = exec.Command(bin, args...)
	g.Cmd.Env = g.Env
	g.Cmd.Stdout, g.Cmd.Stderr = &g.out, &g.out
	p, err := startProc(filepath.Base(bin), g.Cmd)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	g.proc = p
	t.Cleanup(func() {
		g.proc.kill()
		if failed(t) {
			t.Logf("harness: %s output (%s):\n%s", p.name, p.exitStatus(), g.Output())
		}
	})
	return g
}

// Pid is the gateway's process id.
func (g *Gateway) Pid() int { return g.proc.pid }

// Signal sends sig to the gateway process (not to its children).
func (g *Gateway) Signal(sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		g.proc.signal(s)
		return
	}
	_ = g.Cmd.Process.Signal(sig)
}

// Exited reports whether the gateway has exited.
func (g *Gateway) Exited() bool { return g.proc.exited() }

// Wait waits up to timeout for the gateway to exit and returns its exit code
// (-1 when it was killed by a signal). It calls t.Fatal on timeout.
func (g *Gateway) Wait(t testing.TB, timeout time.Duration) (exitCode int) {
	t.Helper()
	select {
	case <-g.proc.done:
		return g.proc.exitCode()
	case <-time.After(timeout):
		t.Fatalf("harness: %s still running after %v\n--- output ---\n%s", g.proc.name, timeout, tailLines([]byte(g.Output()), 60))
		return 0
	}
}

// Output is everything the gateway wrote to stdout and stderr so far.
func (g *Gateway) Output() string { return g.out.String() }

// WaitOutput waits until the output contains substr; it calls t.Fatal when
// timeout passes or the gateway exits first.
func (g *Gateway) WaitOutput(t testing.TB, timeout time.Duration, substr string) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s, changed := g.out.wait()
		if strings.Contains(s, substr) {
			return
		}
		select {
		case <-changed:
		case <-g.proc.done:
			// All output has been copied once done is closed.
			if strings.Contains(g.Output(), substr) {
				return
			}
			t.Fatalf("harness: %s exited (%s) without writing %q\n--- output ---\n%s", g.proc.name, g.proc.exitStatus(), substr, tailLines([]byte(g.Output()), 60))
		case <-timer.C:
			if strings.Contains(g.Output(), substr) {
				return
			}
			t.Fatalf("harness: %s did not write %q within %v\n--- output ---\n%s", g.proc.name, substr, timeout, tailLines([]byte(g.Output()), 60))
		}
	}
}
