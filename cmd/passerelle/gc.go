package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The garbage collector runs with Go's default target (GOGC=100: when the
// heap has doubled) unless GOGC or GOMEMLIMIT say otherwise. The target
// of 25 set here before cost 20 to 30 % more CPU per stanza in
// BenchmarkIRCGateway (cmd/passerelle; three runs of each at 200 and 500
// users) for 4 % less resident memory at 500 users (26 against 30 KiB per
// user): the release below brings the resident size down after each
// burst either way.

// Memory given back when the gateway goes quiet. A burst of work (users
// joining, a backlog delivered) grows the heap towards the collector's
// goal and leaves glibc (SQLite) with freed blocks; Go's own scavenger
// returns the free pages slowly, and glibc gives back only the top of an
// arena, keeping the freed blocks inside it. Once a second the
// gateway looks at how much it allocated: after a second that allocated
// more than idleAllocs, the first second that allocated less collects
// the garbage and returns all free memory (debug.FreeOSMemory, then
// malloc_trim). That is one collection per burst, never two in a row.
const (
	idleTick   = time.Second
	idleAllocs = 256 << 10 // bytes allocated in a tick that still count as quiet
)

// idleWatch decides when to give memory back, from the total allocated
// so far at each tick.
type idleWatch struct {
	last    uint64 // the total at the previous tick
	pending bool   // a busy tick came since the last release
}

// tick reports whether to give memory back now.
func (w *idleWatch) tick(total uint64) bool {
	busy := total-w.last > idleAllocs
	w.last = total
	switch {
	case busy:
		w.pending = true
	case w.pending:
		w.pending = false
		return true
	}
	return false
}

// releaseWhenIdle gives memory back after each burst of work, until ctx
// is done.
func releaseWhenIdle(ctx context.Context) {
	t := time.NewTicker(idleTick)
	defer t.Stop()
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	total := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	// Start-up (loading the phone number metadata, migrations, the first
	// connections) is the first burst.
	w := idleWatch{last: total(), pending: true}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w.tick(total()) {
			debug.FreeOSMemory()
			trimMalloc()
			w.last = total() // what the release allocated is not a burst
		}
	}
}
