package component

import (
	"context"
	"time"

	"passerelle/bridges"
	"passerelle/component/xmlel"
	"passerelle/store"
)

const (
	// outboxBatch is the most stanzas the pump sends before it asks the
	// server to confirm them.
	outboxBatch = 100
	// outboxWindow is the most batches the pump has sent and the server
	// has not confirmed yet.
	outboxWindow = 4
	// outboxConfirmWait is how long the pump waits for a confirmation
	// while the stream stays up.
	outboxConfirmWait = 30 * time.Second
	// routeWaitStep is how often a pump with no route looks again.
	routeWaitStep = 200 * time.Millisecond
	// storeRetryMax caps the pump's backoff on a failing store (less when
	// PASSERELLE_RETRY_MAX_DELAY is less): once the store works again,
	// the stanzas waiting behind it go out within that time.
	storeRetryMax = time.Minute
	// storeWarnEvery is how many failures in a row make one more warning
	// (the first failure is an error; the others are counted in metrics).
	storeWarnEvery = 10
)

// outboxState is what the pump knows that the store may not: the stanzas
// the server confirmed but the store would not remove yet, and how long to
// leave a failing store alone. It outlives a stream, so that no stream of
// this process sends those stanzas again, and belongs to the one pump
// running at a time (serve waits for its pump to return).
type outboxState struct {
	sent     []int64 // confirmed, still in the store
	failures int     // store failures in a row
	retryAt  time.Time
}

// flight is a batch written to the stream whose confirmation has not come
// yet.
type flight struct {
	ids     []int64
	answer  <-chan *xmlel.Element
	forget  func()
	written time.Time
	// routed: the confirmation was sent from a route localpart (route.go),
	// which comes back to this component; otherwise it is a ping to the
	// domain, which a balancing server may answer elsewhere.
	routed bool
	// flushed, when not 0, is the last commit numbered by Flushed that
	// the outbox held when the batch was read, or when a read after it
	// found nothing more (flush.go): the batch's confirmation shows the
	// server has those commits.
	flushed uint64
}

// pump sends the persistent outbox over session s, oldest first, until the
// session ends. A batch leaves the outbox only once the server has shown it
// processed it: a stanza the component sends to its own domain after the
// batch, from a localpart that the server routes back to one of its
// connections (route.go), comes back only after everything written before
// it was routed.
// The pump does not wait for that answer before it sends the next batch:
// up to outboxWindow batches are under way at once, and each confirmation
// removes its batch (a round trip per batch would leave the stream idle,
// and the server's and the kernel's small-packet delays would add up to
// tens of milliseconds). A batch interrupted by a disconnection is sent
// again after reconnecting (at least once, never lost); so is every batch
// from one whose confirmation did not come back within confirmWait while
// the stream stayed up, once the route is probed again. A confirmed batch
// is never sent again by this process: while the store will not remove
// it, the pump sends nothing and retries the removal with backoff.
func (c *Component) pump(ctx context.Context, s *session, stop <-chan struct{}) {
	o := &c.outbox
	var inflight []flight
	c.flush.start()
	defer func() {
		for _, f := range inflight {
			f.forget()
		}
	}()
	// removing reports the removal under way of the first removingN
	// stanzas of o.sent (nil: none is). The pump keeps reading and
	// sending while the store works on it; confirmed stanzas wait for
	// the next removal. It does not return before the removal is done:
	// o.sent is only changed here, and a stop between a confirmation and
	// its removal still removes it.
	var removing <-chan error
	var removingN int
	defer func() {
		if removing != nil {
			c.removed(<-removing, removingN)
		}
		// What was confirmed while it ran is removed too before the
		// pump returns: the next stream, or a restart, would send it
		// again. After a failure it waits for the retry, as the loop
		// does (the next pump starts after it, below).
		if o.failures == 0 {
			c.removeSent(ctx)
		}
	}()
	// Run first of the deferred calls: the waiters need not wait for
	// the removals above.
	defer c.flush.stop()
	// after is the last id written to this stream, or confirmed on an
	// earlier one and still in the store (its removal failed): what the
	// server confirmed is never read again.
	var after int64
	if len(o.sent) > 0 {
		after = o.sent[len(o.sent)-1]
	}
	// drained: the last read found nothing, and only the end of a
	// removal woke the pump since (a removal queues nothing).
	drained := false
	// unrouted is when the pump last found no route (route.go).
	unrouted := time.Now()
	confirmWait := time.NewTimer(c.confirmWait)
	defer confirmWait.Stop()
	pendingAfter := c.store.PendingStanzasAfter
	if c.pendingAfter != nil {
		pendingAfter = c.pendingAfter
	}
	for {
		if wait := time.Until(o.retryAt); wait > 0 && !pause(ctx, stop, wait) {
			return
		}
		if removing != nil {
			if o.failures > 0 {
				// The store failed meanwhile: the removal under way
				// ends the way it does, within RecordContext's limit.
				c.removed(<-removing, removingN)
				removing = nil
				continue
			}
			select {
			case err := <-removing:
				removing = nil
				c.removed(err, removingN)
				continue
			default:
			}
		} else if o.failures > 0 {
			// After a failure the pump sends nothing until the store
			// has removed what was confirmed (or until it works again).
			if !c.removeSent(ctx) {
				continue
			}
		} else if len(o.sent) > 0 {
			removing, removingN = c.startRemoval(ctx), len(o.sent)
		}
		if len(inflight) == 0 && !c.slotted() && time.Since(unrouted) < c.confirmWait {
			// No connection of the component holds a slot yet (a
			// standby trying for one): no confirmation could come back.
			// The outbox waits for one, confirmWait at most.
			if !pause(ctx, stop, routeWaitStep) {
				return
			}
			continue
		}
		if len(inflight) < outboxWindow && !drained {
			snap := c.flush.snapshot()
			items, err := pendingAfter(ctx, c.opts.Domain, after, outboxBatch)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				c.storeFailed("cannot read the outbox; will retry", err, 0)
				continue
			}
			c.storeWorks(0)
			if len(items) > 0 {
				f, ok := c.write(s, stop, items)
				if !ok {
					return // the stream broke: the batch is sent again after reconnecting
				}
				if len(items) < outboxBatch {
					f.flushed = snap // the read reached the end
				}
				inflight = append(inflight, f)
				after = items[len(items)-1].ID
				continue
			}
			drained = true
			// Every commit before snap is in a batch under way or
			// confirmed.
			if len(inflight) == 0 {
				c.flush.through(snap)
			} else {
				inflight[len(inflight)-1].flushed = snap
			}
		}
		var wake <-chan struct{}
		if len(inflight) < outboxWindow {
			wake = c.outboxWake
		}
		if len(inflight) == 0 {
			select {
			case <-wake:
				drained = false
			case err := <-removing:
				removing = nil
				c.removed(err, removingN)
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
			continue
		}
		confirmWait.Reset(time.Until(inflight[0].written.Add(c.confirmWait)))
		select {
		case <-inflight[0].answer:
			// Any answer (even an error) proves the server got that far.
		case <-confirmWait.C:
			if inflight[0].routed {
				// The route changed (the connection holding its slot
				// closed) or the server lost the stanza: find a route
				// again, then send everything unconfirmed again (at
				// least once).
				n := 0
				for _, f := range inflight {
					n += len(f.ids)
					f.forget()
				}
				after = inflight[0].ids[0] - 1
				inflight = inflight[:0]
				drained = false
				c.log.Warn("an outbox confirmation did not come back; probing the route again, then sending the unconfirmed stanzas again", "waited", c.confirmWait, "stanzas", n)
				if c.probe(ctx, s) == "" && ctx.Err() == nil {
					c.standby()
					unrouted = time.Now()
				}
				continue
			}
			// No connection of this component holds a slot, and the
			// stream is still up after confirmWait: the server does not
			// route the component's stanzas back to it; what was written
			// has reached it.
			c.log.Warn("the server does not answer the outbox confirmation ping", "waited", c.confirmWait)
		case <-wake:
			drained = false
			continue
		case err := <-removing:
			removing = nil
			c.removed(err, removingN)
			continue
		case <-stop:
			return
		case <-ctx.Done():
			return
		}
		drained = false
		select {
		case <-stop:
			return // the stream broke: what is under way is sent again after reconnecting
		default:
		}
		f := inflight[0]
		f.forget()
		inflight = inflight[1:]
		o.sent = append(o.sent, f.ids...)
		c.m.OutboxConfirmed.Add(int64(len(f.ids)))
		if f.flushed > 0 {
			c.flush.through(f.flushed)
		}
	}
}

// pause waits d, and reports false when stop or ctx ended first.
func pause(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// write queues items on s, then the stanza that confirms them. It reports
// false if the stream broke first.
func (c *Component) write(s *session, stop <-chan struct{}, items []store.OutboxItem) (flight, bool) {
	f := flight{ids: make([]int64, len(items))}
	for i, it := range items {
		select {
		case s.queue <- []byte(it.Stanza):
		case <-stop:
			return f, false
		}
		f.ids[i] = it.ID
	}
	confirm, answer, forget, routed := c.selfCheck(s)
	f.answer, f.forget, f.routed = answer, forget, routed
	select {
	case s.queue <- confirm.Bytes():
	case <-stop:
		f.forget()
		return f, false
	}
	f.written = time.Now()
	return f, true
}

// removeSent removes the confirmed stanzas from the store and reports
// whether none is left there.
func (c *Component) removeSent(ctx context.Context) bool {
	o := &c.outbox
	if len(o.sent) == 0 {
		return true
	}
	return c.removed(c.removeThrough(ctx, o.sent[len(o.sent)-1]), len(o.sent))
}

// startRemoval starts removing the confirmed stanzas from the store and
// returns the channel that reports the result (see removed). Only the
// store works on the other goroutine: o is the pump's.
func (c *Component) startRemoval(ctx context.Context) <-chan error {
	last := c.outbox.sent[len(c.outbox.sent)-1]
	done := make(chan error, 1)
	go func() { done <- c.removeThrough(ctx, last) }()
	return done
}

// removeThrough removes the stanzas of the domain up to id last from the
// store.
func (c *Component) removeThrough(ctx context.Context, last int64) error {
	// Not cancelled with the stream: a stop between the confirmation and
	// the removal would send the batch again after the restart.
	rctx, cancel := bridges.RecordContext(ctx)
	defer cancel()
	// Ahead of the queued writes (store.First): a fan-out may have queued
	// hundreds, and what is confirmed but not removed would be sent again
	// after a crash (and, after a failure, the pump sends nothing until
	// this is done).
	rctx = store.First(rctx)
	sentThrough := c.store.StanzasSentThrough
	if c.sentThrough != nil {
		sentThrough = c.sentThrough
	}
	return sentThrough(rctx, c.opts.Domain, last)
}

// removed records the result of the removal of the first n stanzas of
// o.sent and reports whether it succeeded. o.sent is every stanza of the
// domain up to its last id that is still in the store: the pump sent them
// oldest first, and the server confirmed them in order.
func (c *Component) removed(err error, n int) bool {
	o := &c.outbox
	if err != nil {
		c.storeFailed("cannot remove sent stanzas from the outbox; they will not be sent again, and the outbox waits until they are removed", err, len(o.sent))
		return false
	}
	c.storeWorks(n)
	o.sent = append(o.sent[:0], o.sent[n:]...)
	return true
}

// storeFailed backs the pump off a store that failed; sent is the number
// of confirmed stanzas it holds. The first failure in a row is logged as
// an error, then every storeWarnEvery-th as a warning; all are counted.
func (c *Component) storeFailed(msg string, err error, sent int) {
	o := &c.outbox
	o.failures++
	c.m.OutboxStoreErrors.Add(1)
	delay := bridges.RetryBackoff(min(c.opts.RetryMaxDelay, storeRetryMax)).Delay(o.failures - 1)
	o.retryAt = time.Now().Add(delay)
	args := []any{"err", err, "failures", o.failures, "retry_in", delay.Round(time.Millisecond)}
	if sent > 0 {
		args = append(args, "sent", sent)
	}
	switch {
	case o.failures == 1:
		c.log.Error(msg, args...)
	case o.failures%storeWarnEvery == 0:
		c.log.Warn(msg, args...)
	default:
		c.log.Debug(msg, args...)
	}
}

// storeWorks ends a run of store failures (removed: the stanzas it has
// just removed).
func (c *Component) storeWorks(removed int) {
	o := &c.outbox
	if o.failures > 0 {
		c.log.Info("the outbox works again", "failures", o.failures, "removed", removed)
	}
	o.failures, o.retryAt = 0, time.Time{}
}
