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
// reaches the end passes it on to its batch (flight.flushed).
type flushState struct {
	mu      sync.Mutex
	seq     uint64 // Flushed calls so far
	pumping bool   // a pump runs (on a stream that is up)
	waiters []flushWaiter
}

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
// has confirmed everything committed to the outbox before the call, or
// once the stream ends. Without a stream up, it is closed already. It
// wakes the pump, so that a pump with nothing left to read reads again
// and the wait ends even when the caller committed nothing.
func (c *Component) Flushed() <-chan struct{} {
	f := &c.flush
	f.mu.Lock()
	f.seq++
	if !f.pumping {
		f.mu.Unlock()
		return closedFlush
	}
	w := flushWaiter{seq: f.seq, done: make(chan struct{})}
	f.waiters = append(f.waiters, w)
	f.mu.Unlock()
	c.Queued()
	return w.done
}

// snapshot is the number of the last commit the pump's next read sees
// (the pump takes it before it reads).
func (f *flushState) snapshot() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq
}

// through releases the waiters of the commits numbered up to seq: the
// server has confirmed them.
func (f *flushState) through(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for n < len(f.waiters) && f.waiters[n].seq <= seq {
		close(f.waiters[n].done)
		n++
	}
	f.waiters = append(f.waiters[:0], f.waiters[n:]...)
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
	for _, w := range f.waiters {
		close(w.done)
	}
	f.waiters = nil
}
