// Package harness runs real servers (Prosody, ejabberd, ngircd) and the
// passerelle binary for end-to-end tests, and provides a minimal XMPP c2s
// client to drive them.
//
// Everything listens on 127.0.0.1 on random free ports, each server gets its
// own t.TempDir(), and every process is started in its own process group
// which is killed in t.Cleanup (also when the test fails or panics). A
// watchdog process additionally kills the group if the test binary dies
// without running its cleanups (go test -timeout, SIGKILL, Ctrl-C).
// Readiness is detected by polling ports with a deadline, never by fixed
// sleeps. When a test fails, the last lines of each server's log and the
// gateway's output are t.Log-ged.
//
// Typical use:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		harness.Cleanup() // removes the binary built by BuildBinary
//		os.Exit(code)
//	}
//
//	func TestEcho(t *testing.T) {
//		srv := harness.StartProsody(t, harness.ServerOptions{Components: []string{"irc.localhost"}})
//		pw := srv.AddUser(t, "alice@localhost")
//		c := harness.Dial(t, srv.C2SAddr(), "alice@localhost", pw, "test")
//		...
//	}
//
// Things worth knowing (measured with Prosody 0.12.3, ejabberd 23.01,
// ngircd 26.1, Go 1.26):
//
//   - Prosody is ready in ~0.15 s and stops in <0.6 s; ejabberd is ready in
//     ~1.5-2.5 s, stops in ~1.1 s, and each AddUser (ejabberdctl starts an
//     Erlang VM) takes 0.4-1.5 s; ngircd is ready in ~25 ms.
//   - ejabberd routes a client's stanzas asynchronously: after Send, do a
//     round trip (c.IQ ping to the server) before relying on the stanza
//     having been routed, e.g. stored offline before the recipient logs in.
//   - ejabberd's Erlang helpers (erl_child_setup, port programs) call
//     setsid, so they leave the process group: cleanups also kill the
//     leader's descendants, deepest first, so none is left as a zombie.
//   - As root ngircd switches to "nobody" and cannot write the temporary
//     directory: it runs without PID file; its log is its console output.
//     Command penalties are disabled (MaxPenaltyTime = 0): with them a JOIN
//     right after registration waits about a second.
//   - The testing package runs the cleanups of a panicking test before it
//     marks the test failed; the harness detects the panic and dumps the
//     logs anyway.
package harness

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 60 * time.Second

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// has not been returned before by this process.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("harness: no free port: %v", err)
	}
	return p
}

func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portsMu.Lock()
		seen := portsUsed[port]
		portsUsed[port] = true
		portsMu.Unlock()
		if !seen {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no unused port after 100 attempts")
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Esc escapes s for use in XML character data or in an attribute value
// (either quote style). Client.Send does NOT escape its arguments: callers
// wrap untrusted or arbitrary values with Esc.
func Esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&apos;")
		case '\r':
			b.WriteString("&#xD;")
		case '\n':
			b.WriteString("&#xA;")
		case '\t':
			b.WriteString("&#x9;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// requireBinary skips the test when name is not in PATH, or fails it when
// the environment variable CI is non-empty (CI must not silently skip).
func requireBinary(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("harness: %s is not installed (CI is set, so this is an error): %v", name, err)
				return
			}
			t.Skipf("harness: %s is not installed: %v", name, err)
			return
		}
	}
}

// requireFile skips the test when path, installed by package pkg, is
// missing (fails it when $CI is set).
func requireFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("harness: %s is not installed (CI is set, so this is an error): %v", pkg, err)
			return
		}
		t.Skipf("harness: %s is not installed: %v", pkg, err)
	}
}

// failed reports whether the test failed, for cleanups: also true when the
// cleanup runs because the test panicked (the testing package runs the
// cleanups of a panicking test before it marks it failed).
func failed(t testing.TB) bool {
	if t.Failed() {
		return true
	}
	buf := make([]byte, 64<<10)
	buf = buf[:runtime.Stack(buf, false)]
	return bytes.Contains(buf, []byte("\npanic("))
}

// tailLines returns the last n lines of b.
func tailLines(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return ""
	}
	idx := len(b)
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(b[:idx], '\n')
		if j < 0 {
			return string(b)
		}
		idx = j
	}
	return string(b[idx+1:])
}

// fileTail returns the last n lines of a file ("" when it does not exist).
// Only the last 1 MiB is read.
func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 1 << 20
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	k, _ := f.ReadAt(buf, off)
	return tailLines(buf[:k], n)
}

// serverEnv is the environment for server processes: nothing inherited but
// PATH, so a developer's settings cannot leak in.
func serverEnv(home string, extra ...string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	} else if !strings.Contains(path, "/usr/sbin") {
		path += ":/usr/sbin:/sbin"
	}
	env := []string{"PATH=" + path, "HOME=" + home, "LANG=C.UTF-8", "TMPDIR=" + home}
	return append(env, extra...)
}

// waitReady polls until every address accepts TCP connections and probe (if
// not nil) succeeds, the process exits, or the deadline passes.
func waitReady(p *proc, addrs []string, timeout time.Duration, probe func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited during startup (%s)", p.name, p.exitStatus())
		}
		last = nil
		for _, a := range addrs {
			c, err := net.DialTimeout("tcp", a, 500*time.Millisecond)
			if err != nil {
				last = err
				break
			}
			c.Close()
		}
		if last == nil && probe != nil {
			last = probe()
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v", p.name, timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
