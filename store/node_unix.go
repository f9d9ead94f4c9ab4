//go:build unix

package store

import (
	"errors"
	"syscall"
)

// processGone reports whether no process pid exists in this process's
// namespace (one that exists under another user is there).
func processGone(pid int) bool {
	return pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
