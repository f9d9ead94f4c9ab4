package main

import (
	"os"
	"runtime"
	"strconv"
)

// The gateway shares its machine with the servers every stanza goes
// through: the XMPP server routes each one it delivers (Prosody, one
// thread, used as much CPU as the gateway in BenchmarkIRCGateway) and
// the IRC server relays each line to every bridged user's connection.
// Unless GOMAXPROCS says otherwise, the gateway's goroutines run on half
// the processors the Go runtime would give them (at least one), so that
// a burst of work for hundreds of users does not keep those servers
// waiting for a processor: on two cores the latencies' tails were
// shorter, and the CPU per delivered stanza no higher (README,
// "Processors"). The number is worked out once, at start: a container
// given more or fewer processors later keeps it (setting it stops the
// runtime's own updates), until the gateway restarts.

// setProcs sets the processors the gateway's goroutines run on, and
// returns their number.
func setProcs() int {
	n := procs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0))
	if n != runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(n)
	}
	return n
}

// procs returns the processors to use when the runtime would use n and
// the GOMAXPROCS variable is env: n when the variable holds a number the
// runtime took (above 0), half of n otherwise.
func procs(env string, n int) int {
	if v, err := strconv.Atoi(env); err == nil && v > 0 {
		return n
	}
	return max(1, n/2)
}
