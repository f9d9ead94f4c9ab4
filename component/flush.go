package component

import "sync"

// flushState tells a bridge when the XMPP server has taken what it
// committed to the outbox (Flushed): a bridge that is about to let the
// foreign side know of a message (an IRC line going out) can first let
// the server have the user's own copy of it. The pump's confirmations
// (outbox.go) are what show it: a read of the outbox that reached its end
// saw every commit made before the read started, and once the server has
// confirmed the batch that read gave (and so every batch before it), all
// of those commits are with the server.
//
// Commits are numbered by the Flushed calls that follow them: the pump
// takes the number reached before each read (snapshot), and a read that
// reaches the end passes it on to its batch (flight.flushed). The calls
// between two snapshots share one channel, so that what waits grows with
// the pump's reads, not with the calls (a pump that cannot read or gets
// no confirmation keeps its waiters until it stops).
type flushState struct {
	mu      sync.Mutex
	seq     uint64 // Flushed calls so far
	pumping bool   // a pump runs: between its start and its stop
	next    chan struct{}
	waiting []flushWaiter
}

// flushWaiter is the channel of the Flushed calls up to seq, a snapshot.
type flushWaiter struct {
	seq  uint64
	done chan struct{}
}

// closedFlush is what Flushed returns when nothing is worth waiting for.
var closedFlush = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// Flushed implements bridges.Host: the channel is closed once the server
// has confirmed everything committed to the outbox before the call (a
// batch whose confirmation did not come back counts as confirmed when the
// pump stops waiting for it), or once the pump stops; it is closed
// already while no pump runs (no stream, or the stream's route not known
// yet). It wakes the pump, so that a pump with nothing left to read reads
// again and the wait ends even when the caller committed nothing.
func (c *Component) Flushed() <-chan struct{} {
	f := &c.flush
	f.mu.Lock()
	f.seq++
	if !f.pumping {
		f.mu.Unlock()
		return closedFlush
	}
	if f.next == nil {
		f.next = make(chan struct{})
	}
	done := f.next
	f.mu.Unlock()
	c.Queued()
	return done
}

// snapshot is the number of the last commit the pump's next read sees
// (the pump takes it before it reads).
func (f *flushState) snapshot() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.next != nil {
		f.waiting = append(f.waiting, flushWaiter{seq: f.seq, done: f.next})
		f.next = nil
	}
	return f.seq
}

// through releases the Flushed calls numbered up to seq: the server has
// confirmed their commits.
func (f *flushState) through(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for n < len(f.waiting) && f.waiting[n].seq <= seq {
		close(f.waiting[n].done)
		n++
	}
	f.waiting = append(f.waiting[:0], f.waiting[n:]...)
}

// start and stop bracket a pump: while none runs, nobody waits (stop
// releases those who did).
func (f *flushState) start() {
	f.mu.Lock()
	f.pumping = true
	f.mu.Unlock()
}

func (f *flushState) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pumping = false
	for _, w := range f.waiting {
		close(w.done)
	}
	f.waiting = nil
	if f.next != nil {
		close(f.next)
		f.next = nil
	}
}
