package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireBinary skips the test when one of names is not in PATH, or fails
// it when CI is set.
func RequireBinary(t testing.TB, names ...string) {
	t.Helper()
	requireBinary(t, names...)
}

// Script is a program (a shell script, say) run as the leader of its own
// process group, whose exit the test inspects: unlike the servers' processes,
// what it leaves in its group when it exits is only killed by Reap, so the
// test can see whether it cleaned up after itself. The leader is not reaped
// before Reap either, so its pid, the group's id, stays reserved.
//
// The group is SIGKILLed and reaped at the end of the test, and by a
// watchdog if the test process dies without running its cleanups.
type Script struct {
	cmd          *exec.Cmd
	pid          int
	stopWatchdog func()

	mu       sync.Mutex // guards reaped and the signalling of pid/-pid
	reaped   bool
	exitCode int
}

// Proc is a process seen in /proc.
type Proc struct {
	Pid     int
	Cmdline string // the arguments joined by spaces
}

// StartScript starts cmd as the leader of a new process group.
func StartScript(t testing.TB, cmd *exec.Cmd) *Script {
	t.Helper()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pgid = true, 0
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 5 * time.Second
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("harness: start %s: %v", cmd.Path, err)
	}
	s := &Script{cmd: cmd, pid: cmd.Process.Pid}
	s.stopWatchdog = startWatchdog(s.pid)
	t.Cleanup(func() {
		s.Reap()
		s.stopWatchdog()
	})
	return s
}

// Pid is the leader's pid, which is also the group's id.
func (s *Script) Pid() int { return s.pid }

// Signal sends sig to the leader only.
func (s *Script) Signal(sig syscall.Signal) { s.kill(s.pid, sig) }

// SignalGroup sends sig to the whole process group, as a terminal's
// Ctrl-C does.
func (s *Script) SignalGroup(sig syscall.Signal) { s.kill(-s.pid, sig) }

func (s *Script) kill(pid int, sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.reaped {
		_ = syscall.Kill(pid, sig)
	}
}

// Exited reports whether the leader has exited (reaped or not).
func (s *Script) Exited() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reaped || !procAlive(s.pid)
}

// Group lists the live processes of the group other than the leader.
func (s *Script) Group() []Proc {
	var out []Proc
	for _, m := range groupMembers(s.pid) {
		if m.pid != s.pid && m.state != "Z" && m.state != "X" {
			out = append(out, Proc{m.pid, cmdline(m.pid)})
		}
	}
	return out
}

// Children lists the leader's live children, in its group or not.
func (s *Script) Children() []Proc {
	var out []Proc
	for _, m := range descendants(s.pid) {
		if m.depth == 1 {
			out = append(out, Proc{m.pid, cmdline(m.pid)})
		}
	}
	return out
}

// Reap SIGKILLs what is left of the group, waits until it is gone, reaps
// the leader and returns its exit code (-1 when a signal killed it).
func (s *Script) Reap() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.reaped {
		_ = syscall.Kill(-s.pid, syscall.SIGKILL)
		waitGroupGone(s.pid, 10*time.Second)
		_ = s.cmd.Wait()
		s.reaped = true
		s.exitCode = s.cmd.ProcessState.ExitCode()
	}
	return s.exitCode
}

// ProcAlive reports whether pid exists and is not a zombie.
func ProcAlive(pid int) bool { return procAlive(pid) }

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
}
