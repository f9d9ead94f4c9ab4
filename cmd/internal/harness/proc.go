package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// proc is a child process running in its own process group. When the
// group leader exits, whatever is left in the group is SIGKILLed before the
// leader is reaped (a zombie leader keeps the group id reserved, so the kill
// cannot hit an unrelated group).
//
// A watchdog (/bin/sh reading a pipe whose write end only this process
// holds) SIGKILLs the group if the test process dies without running its
// cleanups (go test -timeout, SIGKILL, Ctrl-C).
type proc struct {
	name string
	cmd  *exec.Cmd
	pid  int

	mu     sync.Mutex // guards reaped and the signalling of pid/-pid
	reaped bool

	done    chan struct{} // closed once the whole group is gone and the leader reaped
	waitErr error

	stopWatchdog func()
}

// startProc starts cmd as the leader of a new process group.
func startProc(name string, cmd *exec.Cmd) (*proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pgid = 0
	if cmd.WaitDelay == 0 {
		// A process that escaped the group (setsid) and holds our output
		// pipe must not block Wait forever.
		cmd.WaitDelay = 5 * time.Second
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	p.stopWatchdog = startWatchdog(p.pid)
	go p.reap()
	return p, nil
}

// startWatchdog starts a shell that SIGKILLs process group pgid as soon as
// its standard input, a pipe whose write end only this process holds,
// closes: when the test process dies. The returned function stops it.
func startWatchdog(pgid int) (stop func()) {
	r, w, err := os.Pipe()
	if err != nil {
		return func() {} // best effort: the normal cleanup still works
	}
	wd := exec.Command("/bin/sh", "-c", `read x; kill -9 -"$1" 2>/dev/null`, "harness-watchdog", strconv.Itoa(pgid))
	wd.Stdin = r
	wd.Env = []string{"PATH=/usr/bin:/bin"}
	wd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = wd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return func() {}
	}
	return func() {
		_ = wd.Process.Signal(syscall.SIGKILL)
		_ = wd.Wait()
		w.Close()
	}
}

func (p *proc) reap() {
	_ = waitNoReap(p.pid)
	p.mu.Lock()
	_ = syscall.Kill(-p.pid, syscall.SIGKILL) // leftovers of the group
	p.mu.Unlock()
	waitGroupGone(p.pid, 10*time.Second)
	p.stopWatchdog()
	p.mu.Lock()
	p.waitErr = p.cmd.Wait()
	p.reaped = true
	p.mu.Unlock()
	close(p.done)
}

// exited reports whether the process has exited (and been fully cleaned up).
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the leader's exit code (-1 when killed by a signal). Only
// meaningful after done is closed.
func (p *proc) exitCode() int {
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) exitStatus() string {
	if p.cmd.ProcessState == nil {
		return "not exited"
	}
	return p.cmd.ProcessState.String()
}

// signal sends sig to the group leader.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		_ = syscall.Kill(p.pid, sig)
	}
}

// signalGroup sends sig to the whole process group.
func (p *proc) signalGroup(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		_ = syscall.Kill(-p.pid, sig)
	}
}

// signalComm sends sig to the members of the group whose command name is
// comm; it reports whether there was one.
func (p *proc) signalComm(comm string, sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return false
	}
	found := false
	for _, m := range groupMembers(p.pid) {
		if m.comm == comm && m.state != "Z" {
			_ = syscall.Kill(m.pid, sig)
			found = true
		}
	}
	return found
}

// kill SIGKILLs the group, and the descendants that left it, and waits
// until they are gone.
func (p *proc) kill() {
	p.mu.Lock()
	var desc []member
	if !p.reaped {
		desc = descendants(p.pid)
		killLeavesFirst(desc)
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	p.mu.Unlock()
	<-p.done
	waitGone(desc, 5*time.Second)
}

// killLeavesFirst SIGKILLs the processes deepest first, giving each level a
// moment to be reaped by its still-living parent: killed all at once, the
// orphans would be left to init, which (in some containers) reaps them only
// seconds later, so `ps` would still list them as <defunct>.
func killLeavesFirst(desc []member) {
	maxDepth := 0
	for _, d := range desc {
		maxDepth = max(maxDepth, d.depth)
	}
	for depth := maxDepth; depth >= 1; depth-- {
		var level []member
		for _, d := range desc {
			if d.depth == depth {
				level = append(level, d)
				_ = syscall.Kill(d.pid, syscall.SIGKILL)
			}
		}
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			left := false
			for _, d := range level {
				cur, _, err := readStat(fmt.Sprintf("/proc/%d/stat", d.pid))
				if err == nil && cur.comm == d.comm { // alive or not yet reaped
					left = true
					break
				}
			}
			if !left {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// terminate sends SIGTERM (to the member named comm, or to the leader when
// comm is empty or not found), waits up to grace for the exit, then
// SIGKILLs the group. It reports whether SIGKILL was needed. Descendants
// that left the process group (Erlang's erl_child_setup calls setsid) are
// given 5 s to exit on their own before they are killed.
func (p *proc) terminate(comm string, grace time.Duration) (killed bool) {
	p.mu.Lock()
	desc := descendants(p.pid)
	p.mu.Unlock()
	if comm == "" || !p.signalComm(comm, syscall.SIGTERM) {
		p.signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
		waitGone(desc, 5*time.Second)
		return false
	case <-time.After(grace):
	}
	p.kill()
	waitGone(desc, 5*time.Second)
	return true
}

// descendants lists the live descendants of pid (children, grandchildren,
// ...), wherever their process group or session.
func descendants(pid int) []member {
	children := map[int][]member{}
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range paths {
		m, _, err := readStat(path)
		if err != nil || m.state == "Z" {
			continue
		}
		children[m.ppid] = append(children[m.ppid], m)
	}
	var out []member
	queue := []member{{pid: pid}}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, c := range children[cur.pid] {
			c.depth = cur.depth + 1
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// waitGone waits until the processes are gone (or zombies), SIGKILLing
// those still there after timeout. A process is identified by pid and
// command name, so a recycled pid is left alone.
func waitGone(ms []member, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	killed := false
	for {
		var left []member
		for _, m := range ms {
			cur, _, err := readStat(fmt.Sprintf("/proc/%d/stat", m.pid))
			if err == nil && cur.comm == m.comm && cur.state != "Z" && cur.state != "X" {
				left = append(left, m)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if killed {
				return // unkillable (D state?): give up
			}
			for _, m := range left {
				_ = syscall.Kill(m.pid, syscall.SIGKILL)
			}
			killed, deadline = true, time.Now().Add(2*time.Second)
		}
		ms = left
		time.Sleep(10 * time.Millisecond)
	}
}

// waitNoReap blocks until the child pid has exited, without reaping it
// (waitid with WNOWAIT), so its pid, which is also the group id, stays
// reserved.
func waitNoReap(pid int) error {
	const (
		pPID    = 1
		wEXITED = 0x4
		wNOWAIT = 0x1000000
	)
	var info [128]byte // siginfo_t
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), wEXITED|wNOWAIT, 0, 0)
		switch e {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		default:
			return e
		}
	}
}

type member struct {
	pid   int
	ppid  int
	state string
	comm  string
	depth int // in descendants(): 1 for a child, 2 for a grandchild, ...
}

// groupMembers lists the processes (zombies included) whose process group is
// pgid, from /proc.
func groupMembers(pgid int) []member {
	var out []member
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range paths {
		m, pg, err := readStat(path)
		if err != nil || pg != pgid {
			continue
		}
		out = append(out, m)
	}
	return out
}

func readStat(path string) (m member, pgrp int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return m, 0, err
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return m, 0, errors.New("bad stat")
	}
	m.pid, _ = strconv.Atoi(strings.TrimSpace(s[:open]))
	m.comm = s[open+1 : closing]
	f := strings.Fields(s[closing+1:])
	if len(f) < 3 {
		return m, 0, errors.New("bad stat")
	}
	m.state = f[0]
	m.ppid, _ = strconv.Atoi(f[1])
	pgrp, _ = strconv.Atoi(f[2])
	return m, pgrp, nil
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	m, _, err := readStat(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && m.state != "Z" && m.state != "X"
}

// waitGroupGone polls until no live (non-zombie) process is left in the
// group, or the timeout expires.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		alive := false
		for _, m := range groupMembers(pgid) {
			if m.state != "Z" && m.state != "X" {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
}
