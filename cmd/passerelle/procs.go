package main

import (
	"os"
	"runtime"
	"strconv"
)

// The gateway shares its machine with the servers every stanza goes
// through: the XMPP server routes each one it delivers (Prosody, one
// thread, used 8.6 s of CPU against the gateway's 7.7 s over the XMPP→IRC
// latency phase of BenchmarkIRCGateway at 500 users, perf sched) and the
// IRC server relays each line to every bridged user's connection. Unless
// GOMAXPROCS says otherwise, the gateway's goroutines run on half the
// processors the Go runtime would give them (at least one), so that a
// burst of work for hundreds of users does not keep those servers
// waiting for a processor. Measured on two cores only: the latencies'
// tails were shorter and the CPU per delivered stanza no higher (README,
// "Processors"). The number is worked out once, at start, and setting it
// stops the runtime's own updates: a container given more or fewer
// processors later keeps it until the gateway restarts.

// setProcs sets the processors the gateway's goroutines run on, unless
// the GOMAXPROCS variable did.
func setProcs() {
	if n, set := procs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0)); set {
		runtime.GOMAXPROCS(n)
	}
}

// procs returns the processors to use when the runtime would use n and
// the GOMAXPROCS variable is env, and whether the gateway sets them: n
// when the variable holds a number the runtime took (as the runtime reads
// it: a 32-bit integer above 0), half of n (at least 1) otherwise.
func procs(env string, n int) (int, bool) {
	if v, err := strconv.ParseInt(env, 10, 32); err == nil && v > 0 {
		return n, false
	}
	return max(1, n/2), true
}
