package main

// BenchmarkIRCGateway measures what a user of the IRC bridge pays, against
// biboumi driven identically in the same run: a real Prosody, a real
// ngircd, the gateway process, N users in one channel and a raw IRC client
// ("peer") in that channel. The users are not XMPP clients: they are users
// of a second XEP-0114 component on the same Prosody (loadDomain, allowed
// with PASSERELLE_ALLOW; biboumi serves anyone), all carried by one stream
// of the benchmark, so that the gateway, not the test's clients, is the
// bottleneck. Only the gateway process's own counters are measured
// (/proc/<pid>/stat and /proc/<pid>/status). Each user points the gateway
// at ngircd with the ad-hoc "configure" command on localhost@irc.localhost
// (plain port, throttling off: the phases measure CPU, not the flood
// limit), then joins #bench%localhost. Both gateways log at info level and
// keep their default channel archive. Prosody logs warnings only.
//
//	go test -run '^$' -bench BenchmarkIRCGateway -benchtime=1x -timeout 30m ./cmd/passerelle/
//
// PASSERELLE_BENCH_USERS=50,200 sets the numbers of users (default
// 50,200,500); for each, passerelle runs and then biboumi, so that the two
// see the same load of the machine. PASSERELLE_BENCH_NAGLE=off sets
// TCP_NODELAY on Prosody's connections (Prosody's default leaves Nagle's
// algorithm on). PASSERELLE_BENCH_BASE=<binary> runs that build of
// passerelle too ("base", before the others at each N), to compare a change
// with the code before it in the same run. PASSERELLE_BENCH_PERF=<dir>
// records the gateway's fan-out phase with perf(1) into
// <dir>/<gateway>-<N>-fanout.data (perf report -i … --no-children).
// PASSERELLE_BENCH_TRACE=<dir> records passerelle's execution trace
// during the XMPP→IRC latency phase into <dir>/<gateway>-<N>-x2i-latency.trace.
// PASSERELLE_BENCH_GATEWAY_ENV="GOMAXPROCS=2 GOGC=50" adds those
// variables (space-separated NAME=value) to passerelle's and base's
// environment; a base built without procs.go (the halving of GOMAXPROCS)
// runs on all the processors unless this sets GOMAXPROCS.
// PASSERELLE_BENCH_ROUNDS=50 sets the rounds of the latency phase (default
// benchRounds, 200: a p99 of fewer than 200 rounds is their slowest).
// PASSERELLE_TEST_DB=postgres runs passerelle (and base) on PostgreSQL, a
// private cluster started for the run (store/pgtest), as it runs the
// end-to-end tests; the server's CPU is then reported as well.
// Phases, after the joins:
//
//	idle      benchIdle with the users joined and no traffic
//	fan-out   the peer sends M lines at once (M = max(40, 10000/N)); the
//	          phase ends when each user got each line
//	x2i       M messages at once, spread over the users; the phase ends
//	          when the peer got each and each user got each (its own room
//	          echo and the others' copies)
//	latency   R lines from the peer one at a time, each waiting for its N
//	          deliveries; then R messages from the users
//	          one at a time, each waiting for the peer's copy and the N
//	          room copies
//
// Metrics:
//
//	idle-%core            gateway CPU while idle, in % of one core
//	fanout-µs/stanza      gateway CPU / (N × M) delivered stanzas, raw
//	fanout-net-µs/stanza  the same after subtracting the idle CPU of the
//	                      phase's duration
//	fanout-msgs/s         N × M / the phase's duration
//	x2i-µs/stanza         gateway CPU / (M messages + N × M room copies),
//	                      raw; x2i-net-µs/stanza net of idle
//	i2x-p50-ms, i2x-p99-ms  from the peer's write of a line to each user's
//	                      copy (latency phase)
//	x2i-p50-ms, x2i-p99-ms  from a user's message to the peer's copy
//	echo-p50-ms, echo-p99-ms  from a user's message to its own room echo
//	rss-KB/user           (VmRSS after the joins − VmRSS before them) / N,
//	                      both read once the gateway has been quiet for
//	                      benchSettle. It includes what the first users
//	                      cost once for all: the executable's code and data
//	                      paged in on first use, caches filled up to their
//	                      size, the heap's first growth. At N=50 that is
//	                      much of the figure, hence the next two.
//	rss-anon-KB/user      the same of RssAnon (VmRSS less the file-backed
//	                      pages: the code paged in)
//	rss-next-KB/user      (VmRSS after the joins − VmRSS after the first
//	                      benchJoinBatch users joined) / (N − benchJoinBatch):
//	                      what each user after the first ones costs
//	rss-KB                VmRSS after the joins; rss-file-KB its
//	                      file-backed part
//	fanout-db-µs/stanza, x2i-db-µs/stanza  on PostgreSQL, the server's CPU
//	                      (all its processes, dbCPUSeconds) per stanza of
//	                      the phase, beside the gateway's

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

const (
	benchIRCServer = "localhost"
	benchChannel   = "#bench"
	loadDomain     = "load.localhost"
	benchWait      = 120 * time.Second
	benchSettle    = 2 * time.Second
	benchIdle      = 5 * time.Second
	benchRounds    = 200 // latency rounds: of 200, the p99 is the second slowest (of 50 it was the slowest)
	benchJoinBatch = 10  // users join at most this many at once: ngircd's listen backlog is 10 (50 at once had connections reset)
	benchWorkers   = 16  // configure commands under way at once
)

// benchUsers are the numbers of users: 50, 200 and 500, or the
// comma-separated list in $PASSERELLE_BENCH_USERS.
func benchUsers(b *testing.B) []int {
	v := os.Getenv("PASSERELLE_BENCH_USERS")
	if v == "" {
		return []int{50, 200, 500}
	}
	var ns []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("PASSERELLE_BENCH_USERS=%q: want positive numbers, comma-separated", v)
		}
		ns = append(ns, n)
	}
	return ns
}

// benchRoundsOf is the number of latency rounds: benchRounds, or
// $PASSERELLE_BENCH_ROUNDS.
func benchRoundsOf(b *testing.B) int {
	v := os.Getenv("PASSERELLE_BENCH_ROUNDS")
	if v == "" {
		return benchRounds
	}
	r, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || r < 1 {
		b.Fatalf("PASSERELLE_BENCH_ROUNDS=%q: want a positive number", v)
	}
	return r
}

func BenchmarkIRCGateway(b *testing.B) {
	gateways := []string{"passerelle", "biboumi"}
	if os.Getenv("PASSERELLE_BENCH_BASE") != "" {
		gateways = []string{"base", "passerelle", "biboumi"}
	}
	for _, n := range benchUsers(b) {
		for _, gw := range gateways {
			b.Run(fmt.Sprintf("users=%d/%s", n, gw), func(b *testing.B) { benchIRCGateway(b, gw, n) })
		}
	}
}

// tally counts the copies of the numbered messages of one phase ("<prefix>
// <k>") as they arrive and keeps their latencies from the time message k
// was sent.
type tally struct {
	mu     sync.Mutex
	prefix string
	sent   []time.Time
	want   int
	got    int
	last   time.Time
	lat    []time.Duration
	done   chan struct{}
}

func newTally(prefix string, messages, want int) *tally {
	return &tally{prefix: prefix + " ", sent: make([]time.Time, messages), want: want, done: make(chan struct{})}
}

// expect adds want copies to wait for.
func (t *tally) expect(want int) {
	t.mu.Lock()
	t.want += want
	t.done = make(chan struct{})
	t.mu.Unlock()
}

func (t *tally) markSent(k int) {
	t.mu.Lock()
	t.sent[k] = time.Now()
	t.mu.Unlock()
}

// seen records a copy of the message whose text is text (false: not one of
// this phase's).
func (t *tally) seen(text string, at time.Time) bool {
	rest, ok := strings.CutPrefix(text, t.prefix)
	if !ok {
		return false
	}
	k, err := strconv.Atoi(rest)
	if err != nil || k < 0 || k >= len(t.sent) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.got++
	t.last = at
	t.lat = append(t.lat, at.Sub(t.sent[k]))
	if t.got == t.want {
		close(t.done)
	}
	return true
}

func (t *tally) wait(b *testing.B, desc string) {
	b.Helper()
	t.mu.Lock()
	done := t.done
	t.mu.Unlock()
	select {
	case <-done:
	case <-time.After(benchWait):
		t.mu.Lock()
		defer t.mu.Unlock()
		b.Fatalf("%s: %d of %d copies arrived", desc, t.got, t.want)
	}
}

// percentile is the p-th percentile of t's latencies in milliseconds.
func (t *tally) percentile(p float64) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lat) == 0 {
		return 0
	}
	l := slices.Clone(t.lat)
	slices.Sort(l)
	i := min(len(l)-1, int(float64(len(l))*p/100))
	return float64(l[i].Microseconds()) / 1000
}

func benchIRCGateway(b *testing.B, gateway string, n int) {
	b.StopTimer()
	rounds := benchRoundsOf(b)
	srv := harness.StartProsody(b, harness.ServerOptions{Domain: "localhost", Components: []string{ircDomain, loadDomain}, LogLevel: "warn", NoNagle: os.Getenv("PASSERELLE_BENCH_NAGLE") == "off"})
	ngircd := harness.StartNgircd(b)
	_, ircPort, _ := net.SplitHostPort(ngircd.Addr)

	var pid int
	var form, httpAddr string
	switch gateway {
	case "passerelle", "base":
		env := map[string]string{
			"PASSERELLE_XMPP_ADDR":         srv.ComponentAddr(),
			"PASSERELLE_XMPP_SECRET":       srv.Secret(),
			"PASSERELLE_DB":                testDB(b),
			"PASSERELLE_IRC_DOMAIN":        ircDomain,
			"PASSERELLE_IRC_ALLOW_PRIVATE": "true",
			"PASSERELLE_ALLOW":             "localhost," + loadDomain,
			"PASSERELLE_STORE_KEY":         "bench-store-key",
			"PASSERELLE_LOG_LEVEL":         "info",
			"PASSERELLE_HTTP_LISTEN":       fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b)),
		}
		httpAddr = env["PASSERELLE_HTTP_LISTEN"]
		for _, kv := range strings.Fields(os.Getenv("PASSERELLE_BENCH_GATEWAY_ENV")) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		bin := os.Getenv("PASSERELLE_BENCH_BASE")
		if gateway == "passerelle" {
			bin = harness.BuildBinary(b)
		}
		gw := harness.StartGateway(b, bin, env)
		gw.WaitOutput(b, wait, `msg="connected to the XMPP server" component=`+ircDomain)
		pid = gw.Pid()
		form = submitForm("", "ports", ircPort, "tls_ports", "", "throttle_limit", "1000")
	case "biboumi":
		bb := harness.StartBiboumi(b, srv, ircDomain, "log_level=1")
		pid = bb.Pid()
		form = "<x xmlns='jabber:x:data' type='submit'>" +
			"<field var='ports'><value>" + ircPort + "</value></field>" +
			"<field var='tls_ports'/>" +
			"<field var='throttle_limit'><value>-1</value></field></x>"
	default:
		b.Fatalf("unknown gateway %q", gateway)
	}
	load := dialLoad(b, srv.ComponentAddr(), loadDomain, srv.Secret())
	room := benchChannel + "%" + benchIRCServer + "@" + ircDomain
	user := func(i int) string { return fmt.Sprintf("u%d@%s/r", i, loadDomain) }
	userIndex := func(jid string) int {
		i, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSuffix(jid, "@"+loadDomain+"/r"), "u"))
		if err != nil {
			return -1
		}
		return i
	}

	peer := dialIRCLoad(b, ngircd.Addr, "peer")
	joined := make(chan struct{}, 1)
	var ircJoins int
	peer.handle(func(l string, _ time.Time) {
		if strings.Contains(l, " 366 ") {
			joined <- struct{}{}
		}
	})
	peer.send(b, "JOIN %s", benchChannel)
	select {
	case <-joined:
	case <-time.After(benchWait):
		b.Fatal("peer: no JOIN")
	}

	settled := func() procMem {
		time.Sleep(benchSettle)
		return procMemKB(b, pid)
	}
	before := settled()

	// Configure: benchWorkers users at a time.
	todo := make(chan int)
	var wg sync.WaitGroup
	for range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range todo {
				benchConfigure(b, load, user(i), form)
			}
		}()
	}
	for i := range n {
		todo <- i
	}
	close(todo)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}

	// Join, benchJoinBatch at a time: each user's self-presence, then
	// the peer's view of its JOIN.
	var mu sync.Mutex
	selfJoined := map[int]bool{}
	batchDone := make(chan struct{}, 1)
	var batchWant int
	load.handle(func(e *xmlel.Element, _ time.Time) {
		if e.Local != "presence" || e.Attr("type") != "" || !statusCodes(e)["110"] {
			return
		}
		i := userIndex(e.Attr("to"))
		mu.Lock()
		defer mu.Unlock()
		if i >= 0 && !selfJoined[i] && e.Attr("from") == fmt.Sprintf("%s/u%d", room, i) {
			selfJoined[i] = true
			if len(selfJoined) == batchWant {
				batchDone <- struct{}{}
			}
		}
	})
	peerJoined := make(chan struct{}, 1)
	peer.handle(func(l string, _ time.Time) {
		if strings.HasPrefix(l, ":u") && strings.Contains(l, " JOIN ") {
			mu.Lock()
			ircJoins++
			if ircJoins == batchWant {
				peerJoined <- struct{}{}
			}
			mu.Unlock()
		}
	})
	t0 := time.Now()
	var warm procMem // after the first batch of joins
	warmUsers := min(n, benchJoinBatch)
	for first := 0; first < n; first += benchJoinBatch {
		if first == warmUsers {
			warmed := time.Now()
			warm = settled()
			t0 = t0.Add(time.Since(warmed)) // not a join's time
		}
		last := min(n, first+benchJoinBatch)
		mu.Lock()
		batchWant = last
		mu.Unlock()
		for i := first; i < last; i++ {
			load.send(b, "<presence from='%s' to='%s/u%d'>%s</presence>", user(i), harness.Esc(room), i, mucX())
		}
		for _, ch := range []chan struct{}{batchDone, peerJoined} {
			select {
			case <-ch:
			case <-time.After(benchWait):
				mu.Lock()
				b.Fatalf("joins: %d users got their self-presence, the peer saw %d JOINs, of %d", len(selfJoined), ircJoins, batchWant)
			}
		}
	}
	joinMS := float64(time.Since(t0).Microseconds()) / 1000
	after := settled()
	load.handle(func(*xmlel.Element, time.Time) {})
	peer.handle(func(string, time.Time) {})

	// Idle.
	cpu0, t0 := procCPUSeconds(b, pid), time.Now()
	time.Sleep(benchIdle)
	idle := (procCPUSeconds(b, pid) - cpu0) / time.Since(t0).Seconds() // CPU s per s

	groupchat := func(t *tally) func(e *xmlel.Element, at time.Time) {
		return func(e *xmlel.Element, at time.Time) {
			if e.Local == "message" && e.Attr("type") == "groupchat" {
				t.seen(e.ChildText("", "body"), at)
			}
		}
	}
	privmsg := func(t *tally) func(l string, at time.Time) {
		suffix := " PRIVMSG " + benchChannel + " :"
		return func(l string, at time.Time) {
			if i := strings.Index(l, suffix); i >= 0 {
				t.seen(l[i+len(suffix):], at)
			}
		}
	}
	// run measures a phase: the gateway's CPU seconds, raw and net of
	// idle, and the phase's duration up to the last copy of the tallies;
	// on PostgreSQL the server's CPU seconds go to dbCPU.
	var dbCPU float64
	run := func(desc string, start func(), ts ...*tally) (cpu, net, secs float64) {
		cpu0, db0, t0 := procCPUSeconds(b, pid), dbCPUSeconds(b), time.Now()
		start()
		for _, t := range ts {
			t.wait(b, desc)
		}
		cpu = procCPUSeconds(b, pid) - cpu0
		dbCPU += dbCPUSeconds(b) - db0
		for _, t := range ts {
			t.mu.Lock()
			secs = max(secs, t.last.Sub(t0).Seconds())
			t.mu.Unlock()
		}
		return cpu, cpu - idle*time.Since(t0).Seconds(), secs
	}

	m := max(40, 10000/n)
	var fanCPU, fanNet, fanSecs, x2iCPU, x2iNet, fanDB, x2iDB float64
	var i2xLat, x2iLat, echoLat []*tally
	b.StartTimer()
	for it := range b.N {
		// IRC→XMPP fan-out.
		fan := newTally(fmt.Sprintf("i2x%d", it), m, n*m)
		load.handle(groupchat(fan))
		stopPerf := benchPerf(b, pid, fmt.Sprintf("%s-%d-fanout.data", gateway, n))
		cpu, net, secs := run("fan-out", func() {
			for k := range m {
				fan.markSent(k)
				peer.send(b, "PRIVMSG %s :i2x%d %d", benchChannel, it, k)
			}
		}, fan)
		stopPerf()
		fanCPU, fanNet, fanSecs = fanCPU+cpu, fanNet+net, fanSecs+secs
		fanDB, dbCPU = dbCPU, 0

		// XMPP→IRC.
		toIRC, copies := newTally(fmt.Sprintf("x2i%d", it), m, m), newTally(fmt.Sprintf("x2i%d", it), m, n*m)
		load.handle(groupchat(copies))
		peer.handle(privmsg(toIRC))
		cpu, net, _ = run("x2i", func() {
			for k := range m {
				toIRC.markSent(k)
				copies.markSent(k)
				load.send(b, "<message type='groupchat' from='%s' to='%s' id='x2i-%d-%d'><body>x2i%d %d</body></message>",
					user(k%n), harness.Esc(room), it, k, it, k)
			}
		}, toIRC, copies)
		x2iCPU, x2iNet = x2iCPU+cpu, x2iNet+net
		x2iDB, dbCPU = dbCPU, 0

		// Latency, one message at a time.
		i2x := newTally(fmt.Sprintf("il%d", it), rounds, 0)
		load.handle(groupchat(i2x))
		for k := range rounds {
			i2x.expect(n)
			i2x.markSent(k)
			peer.send(b, "PRIVMSG %s :il%d %d", benchChannel, it, k)
			i2x.wait(b, "i2x latency")
		}
		stopTrace := benchTrace(b, httpAddr, fmt.Sprintf("%s-%d-x2i-latency.trace", gateway, n))
		x2i, echo, others := newTally(fmt.Sprintf("xl%d", it), rounds, 0), newTally(fmt.Sprintf("xl%d", it), rounds, 0), newTally(fmt.Sprintf("xl%d", it), rounds, 0)
		peer.handle(privmsg(x2i))
		var sender int
		var smu sync.Mutex
		load.handle(func(e *xmlel.Element, at time.Time) {
			if e.Local != "message" || e.Attr("type") != "groupchat" {
				return
			}
			smu.Lock()
			s := sender
			smu.Unlock()
			if userIndex(e.Attr("to")) == s {
				echo.seen(e.ChildText("", "body"), at)
			} else {
				others.seen(e.ChildText("", "body"), at)
			}
		})
		for k := range rounds {
			smu.Lock()
			sender = k % n
			smu.Unlock()
			x2i.expect(1)
			echo.expect(1)
			others.expect(n - 1)
			x2i.markSent(k)
			echo.markSent(k)
			others.markSent(k)
			load.send(b, "<message type='groupchat' from='%s' to='%s' id='xl-%d-%d'><body>xl%d %d</body></message>",
				user(k%n), harness.Esc(room), it, k, it, k)
			x2i.wait(b, "x2i latency")
			echo.wait(b, "echo latency")
			if n > 1 {
				others.wait(b, "x2i copies")
			}
		}
		stopTrace()
		i2xLat, x2iLat, echoLat = append(i2xLat, i2x), append(x2iLat, x2i), append(echoLat, echo)
	}
	b.StopTimer()
	stanzas := float64(b.N * n * m)
	b.ReportMetric(joinMS, "join-ms")
	b.ReportMetric(idle*100, "idle-%core")
	b.ReportMetric(fanCPU*1e6/stanzas, "fanout-µs/stanza")
	b.ReportMetric(fanNet*1e6/stanzas, "fanout-net-µs/stanza")
	b.ReportMetric(stanzas/fanSecs, "fanout-msgs/s")
	b.ReportMetric(x2iCPU*1e6/(stanzas+float64(b.N*m)), "x2i-µs/stanza")
	b.ReportMetric(x2iNet*1e6/(stanzas+float64(b.N*m)), "x2i-net-µs/stanza")
	if testCluster != nil && gateway != "biboumi" {
		b.ReportMetric(fanDB*1e6/stanzas, "fanout-db-µs/stanza")
		b.ReportMetric(x2iDB*1e6/(stanzas+float64(b.N*m)), "x2i-db-µs/stanza")
	}
	last := len(i2xLat) - 1
	b.ReportMetric(i2xLat[last].percentile(50), "i2x-p50-ms")
	b.ReportMetric(i2xLat[last].percentile(99), "i2x-p99-ms")
	b.ReportMetric(x2iLat[last].percentile(50), "x2i-p50-ms")
	b.ReportMetric(x2iLat[last].percentile(99), "x2i-p99-ms")
	b.ReportMetric(echoLat[last].percentile(50), "echo-p50-ms")
	b.ReportMetric(echoLat[last].percentile(99), "echo-p99-ms")
	b.ReportMetric(float64(after.rss-before.rss)/float64(n), "rss-KB/user")
	b.ReportMetric(float64(after.anon-before.anon)/float64(n), "rss-anon-KB/user")
	if n > warmUsers {
		b.ReportMetric(float64(after.rss-warm.rss)/float64(n-warmUsers), "rss-next-KB/user")
	}
	b.ReportMetric(float64(after.rss), "rss-KB")
	b.ReportMetric(float64(after.rss-after.anon), "rss-file-KB")
}

// benchPerf starts perf(1) recording pid's call graphs into
// $PASSERELLE_BENCH_PERF/name, and returns the function that stops it
// (nothing happens when the variable is not set).
func benchPerf(b *testing.B, pid int, name string) (stop func()) {
	dir := os.Getenv("PASSERELLE_BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-q", "-g", "-F", "499", "-p", strconv.Itoa(pid), "-o", filepath.Join(dir, name))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("perf: %v", err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	time.Sleep(500 * time.Millisecond) // perf attaches to the process's threads
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}

// benchTrace records an execution trace of passerelle (its
// /debug/pprof/trace on addr, "" for biboumi) into
// $PASSERELLE_BENCH_TRACE/name for 10 seconds, and returns the
// function that waits for the trace (nothing happens when the variable is
// not set). go tool trace -pprof=sched (or sync, net) turns it into a
// profile of where goroutines waited.
func benchTrace(b *testing.B, addr, name string) (stop func()) {
	dir := os.Getenv("PASSERELLE_BENCH_TRACE")
	if dir == "" || addr == "" {
		return func() {}
	}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		resp, err := http.Get("http://" + addr + "/debug/pprof/trace?seconds=10")
		if err != nil {
			b.Errorf("trace: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			b.Errorf("trace: %v", err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			b.Errorf("trace: %v", err)
		}
	}()
	time.Sleep(200 * time.Millisecond) // the trace starts
	return func() {
		b.Logf("trace %s: the phase took %v of the 10 s recorded", name, time.Since(start))
		<-done
	}
}

// benchConfigure runs, as the user jid, the ad-hoc "configure" command of
// the IRC server benchIRCServer with the given data form. It runs on
// several goroutines at once: it reports a failure with Errorf.
func benchConfigure(b testing.TB, load *loadComponent, jid, form string) {
	to := benchIRCServer + "@" + ircDomain
	r, err := load.iq(jid, "set", to, "<command xmlns='http://jabber.org/protocol/commands' node='configure' action='execute'/>")
	if err != nil || r.Attr("type") != "result" {
		b.Errorf("configure, first step: %v %v", r, err)
		return
	}
	sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
	r, err = load.iq(jid, "set", to, "<command xmlns='http://jabber.org/protocol/commands' node='configure' sessionid='"+
		harness.Esc(sid)+"' action='complete'>"+form+"</command>")
	if err != nil || r.Attr("type") != "result" {
		b.Errorf("configure: %v %v", r, err)
	}
}

// procCPUSeconds is utime+stime of pid (/proc/<pid>/stat fields 14 and 15,
// in clock ticks of 1/100 s: USER_HZ is 100 in Linux's ABI).
func procCPUSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	st, err := readProcStat(pid)
	if err != nil {
		b.Fatal(err)
	}
	return st.cpu
}

// procStat is what the benchmarks read of /proc/<pid>/stat.
type procStat struct {
	ppid   int     // field 4
	cpu    float64 // utime+stime (fields 14 and 15), in seconds
	reaped float64 // cutime+cstime (16 and 17): the children it waited for
}

func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// f[0] is field 3 (state).
	var v [5]int64
	for i, k := range []int{1, 11, 12, 13, 14} {
		if v[i], err = strconv.ParseInt(f[k], 10, 64); err != nil {
			return procStat{}, fmt.Errorf("/proc/%d/stat: %q", pid, s)
		}
	}
	return procStat{ppid: int(v[0]), cpu: float64(v[1]+v[2]) / 100, reaped: float64(v[3]+v[4]) / 100}, nil
}

// dbCPUSeconds is the CPU time the PostgreSQL server of
// PASSERELLE_TEST_DB=postgres has used so far (0 without one): its
// postmaster's, its live processes' (the gateway's sessions, the
// background workers) and the exited ones' the postmaster waited for.
func dbCPUSeconds(b *testing.B) float64 {
	b.Helper()
	if testCluster == nil {
		return 0
	}
	pm, err := testCluster.Pid()
	if err != nil {
		b.Fatal(err)
	}
	st, err := readProcStat(pm)
	if err != nil {
		b.Fatal(err)
	}
	total := st.cpu + st.reaped
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if c, err := readProcStat(pid); err == nil && c.ppid == pm {
			total += c.cpu // a process gone meanwhile is in st.reaped next time
		}
	}
	return total
}

// procMem is a process's resident memory in kB: VmRSS, and its anonymous
// part RssAnon (VmRSS minus the file-backed pages, mostly the executable's
// code and data paged in on first use, and shared memory).
type procMem struct{ rss, anon int64 }

func procMemKB(b *testing.B, pid int) procMem {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	var m procMem
	found := 0
	for _, l := range strings.Split(string(data), "\n") {
		name, v, _ := strings.Cut(l, ":")
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.rss
		case "RssAnon":
			dst = &m.anon
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/status: %q", pid, l)
		}
		*dst = kb
		found++
	}
	if found != 2 {
		b.Fatalf("/proc/%d/status: no VmRSS or RssAnon", pid)
	}
	return m
}
