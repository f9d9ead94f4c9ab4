//go:build !linux

package pgtest

import (
	"errors"
	"os"
	"syscall"
)

// dirPrefix starts the names of the clusters' directories in the
// temporary directory.
const dirPrefix = "pgtest-"

// serverAttr: the server's programs run as the current user; a server
// does not die with the test process here.
func (c *Cluster) serverAttr() (*syscall.SysProcAttr, error) {
	if c.asUser != "" {
		return nil, errors.New("running the server as another user is supported on Linux only")
	}
	return nil, nil
}

// lockDir: directories are not locked here (sweep removes none).
func lockDir(string) (*os.File, error) { return nil, nil }

// sweep: a cluster's directory left by a killed test stays here.
func sweep() {}
