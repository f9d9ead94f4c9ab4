package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the garbage collector's target when GOGC is not
// set. The gateway's live heap is small (a few MB, plus about 10 KB per
// bridged user) and its work is mostly waiting on sockets, so collecting
// when the heap has grown by a quarter instead of doubled (Go's default,
// 100) costs little CPU and keeps the resident memory near the live heap.
// BenchmarkIRCGateway (cmd/passerelle) shows both. GOGC, when set, wins.
const defaultGCPercent = 25

// tuneGC applies defaultGCPercent unless GOGC is set.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}
