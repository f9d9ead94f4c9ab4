package emailtest

import (
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
)

// FlushingSession is a memory-server session (imapmemserver) whose IDLE
// reports changes within 20 ms, including those made just before it
// began, as real servers do. The memory server alone holds back a change
// made between a command and IDLE until the next change, leaving a
// watcher waiting for its next renewal.
type FlushingSession struct{ imapserver.Session }

func (s FlushingSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if err := s.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
	}
}
