package pgtest

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// dirPrefix starts the names of the clusters' directories in the
// temporary directory.
const dirPrefix = "pgtest-"

// serverAttr runs the server's programs as c.asUser, and has them killed
// when the test process dies.
func (c *Cluster) serverAttr() (*syscall.SysProcAttr, error) {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if c.asUser != "" {
		a.Credential = &syscall.Credential{Uid: uint32(c.uid), Gid: uint32(c.gid)}
	}
	return a, nil
}

// lockDir takes the lock of a cluster's directory, held until the file
// returned is closed (or the process dies).
func lockDir(dir string) (*os.File, error) {
	// Locked before it has its name: sweep never sees it free.
	f, err := os.CreateTemp(dir, "lock-")
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			err = os.Rename(f.Name(), filepath.Join(dir, "lock"))
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("failed to lock the cluster's directory: %w", err)
	}
	return f, nil
}

// sweep removes the directories of clusters whose process died without
// stopping them (their servers died with it): their lock is free.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		f, err := os.Open(filepath.Join(dir, "lock"))
		if err != nil {
			// Not (yet) locked, or not a cluster of this package.
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(dir)
		}
		f.Close()
	}
}
