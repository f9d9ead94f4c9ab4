package main

// Benchmarks of the IRC bridge against biboumi, both driven identically: a
// real Prosody, a real ngircd, the gateway process, N XMPP users in one
// channel and a raw IRC client in that channel. Only the gateway process's
// own counters are measured (/proc/<pid>/stat and /proc/<pid>/status), so
// the CPU of the test process, Prosody and ngircd is excluded. Each user
// points the gateway at ngircd with the ad-hoc "configure" command on
// localhost@irc.localhost (plain port only, throttling off: the message
// phases measure CPU, not the flood limit), then joins #bench%localhost.
// Both gateways log at info level and keep their default channel archive
// (each archives every channel message in SQLite, per user).
//
//	go test -run '^$' -bench BenchmarkIRCGateway -benchtime=1x ./cmd/passerelle/
//
// PASSERELLE_BENCH_USERS=10,50 sets the numbers of users (default 10,50,200).
//
// Metrics (per b.N iteration of the message phases; joins happen once):
//
//	join-ms              time from the first join until all N users got
//	                     their self-presence (the joins are sent at once,
//	                     in batches of benchJoinBatch users after one
//	                     another; ngircd's listen backlog is 10, so a
//	                     burst of simultaneous connections can wait for a
//	                     SYN retransmission, about 1 s, and 200 at once
//	                     had a connection reset)
//	rss-KB/user          (VmRSS right after the joins − VmRSS before the
//	                     users configured the network) / N; "before" is
//	                     read once the gateway has been quiet for 4 s
//	anon-KB/user         the same for RssAnon (without the file-backed pages,
//	                     i.e. the executable's code paged in on first use)
//	settled-KB/user      the same as rss-KB/user with VmRSS read 4 s
//	                     after the joins, once the gateway is quiet: what
//	                     the users cost while they stay rather than while
//	                     they arrive (Passerelle gives memory back after a
//	                     burst; see gc.go)
//	settled-anon-KB/user the same for RssAnon, the process's own memory:
//	                     the file-backed part of VmRSS (the executable's
//	                     pages, shared and clean) differs by megabytes
//	                     between two builds of nearly the same code, and
//	                     grows as code paths are first used
//	rss-KB               VmRSS right after the joins
//	slope-KB/user        what each further user costs once n are in: the
//	                     least-squares slope of settled VmRSS against the
//	                     number of users, after the first n and after each
//	                     of 4 more waves of 10 users (who configure and
//	                     join like the first n, one wave at a time, and
//	                     leave before the message phases). The one-time
//	                     costs of the first users (runtime and database
//	                     structures touched for the first time) stay out
//	                     of it.
//	slope-anon-KB/user   the same for RssAnon
//	cpu-µs/stanza        IRC→XMPP: gateway CPU / (N × M delivered stanzas)
//	cpu-µs/msg           XMPP→IRC: gateway CPU / M messages, measured until
//	                     the raw IRC client got all M and every user got
//	                     every message (own reflection and the N−1 copies
//	                     arriving over the other users' IRC connections)

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

const (
	benchIRCServer = "localhost"
	benchChannel   = "#bench"
	benchMessages  = 100 // M, per phase
	benchWait      = 60 * time.Second
	benchWave      = 10 // users per wave after the first n
	benchWaves     = 4
	benchSettle    = 4 * time.Second
	benchJoinBatch = 50 // the first n users join at most this many at once
)

// benchUsers are the numbers of users of the first phase: 10, 50 and 200
// (where the gateway's one-time costs weigh little), or the
// comma-separated list in $PASSERELLE_BENCH_USERS.
func benchUsers(b *testing.B) []int {
	v := os.Getenv("PASSERELLE_BENCH_USERS")
	if v == "" {
		return []int{10, 50, 200}
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

func BenchmarkIRCGateway(b *testing.B) {
	users := benchUsers(b)
	for _, gw := range []string{"passerelle", "biboumi"} {
		for _, n := range users {
			b.Run(fmt.Sprintf("%s/users=%d", gw, n), func(b *testing.B) { benchIRCGateway(b, gw, n) })
		}
	}
}

func benchIRCGateway(b *testing.B, gateway string, n int) {
	b.StopTimer()
	srv := harness.StartProsody(b, harness.ServerOptions{Domain: "localhost", Components: []string{ircDomain}})
	ngircd := harness.StartNgircd(b)
	_, ircPort, _ := net.SplitHostPort(ngircd.Addr)

	var pid int
	var configure func(b *testing.B, c *harness.Client)
	switch gateway {
	case "passerelle":
		env := map[string]string{
			"PASSERELLE_XMPP_ADDR":         srv.ComponentAddr(),
			"PASSERELLE_XMPP_SECRET":       srv.Secret(),
			"PASSERELLE_DB":                filepath.Join(b.TempDir(), "passerelle.db"),
			"PASSERELLE_IRC_DOMAIN":        ircDomain,
			"PASSERELLE_IRC_ALLOW_PRIVATE": "true",
			"PASSERELLE_STORE_KEY":         "bench-store-key",
			"PASSERELLE_LOG_LEVEL":         "info",
			"PASSERELLE_HTTP_LISTEN":       fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b)),
		}
		gw := harness.StartGateway(b, harness.BuildBinary(b), env)
		gw.WaitOutput(b, wait, `msg="connected to the XMPP server" component=`+ircDomain)
		pid = gw.Pid()
		configure = func(b *testing.B, c *harness.Client) {
			benchConfigure(b, c, submitForm("", "ports", ircPort, "tls_ports", "", "throttle_limit", "1000"))
		}
	case "biboumi":
		bb := harness.StartBiboumi(b, srv, ircDomain, "log_level=1")
		pid = bb.Pid()
		configure = func(b *testing.B, c *harness.Client) {
			benchConfigure(b, c, "<x xmlns='jabber:x:data' type='submit'>"+
				"<field var='ports'><value>"+ircPort+"</value></field>"+
				"<field var='tls_ports'/>"+
				"<field var='throttle_limit'><value>-1</value></field></x>")
		}
	default:
		b.Fatalf("unknown gateway %q", gateway)
	}

	room := benchChannel + "%" + benchIRCServer + "@" + ircDomain
	peer := dialIRC(b, ngircd.Addr, "peer")
	peer.send(b, "JOIN %s", benchChannel)
	peer.take(b, benchWait, " 366 ", func(l string) bool { return strings.Contains(l, " 366 ") })

	// The first n users join (benchJoinBatch at once) and then carry the
	// message phases.
	// benchWaves waves of benchWave more users join after them, one wave at
	// a time, to measure what each further user costs; they leave again
	// before the message phases.
	all := make([]*harness.Client, n+benchWaves*benchWave)
	for i := range all {
		jid := fmt.Sprintf("u%d@localhost", i)
		all[i] = harness.Dial(b, srv.C2SAddr(), jid, srv.AddUser(b, jid), "bench")
	}
	clients, extra := all[:n], all[n:]
	join := func(first int, cs []*harness.Client) (joinMS float64) {
		for _, c := range cs {
			configure(b, c)
		}
		t0 := time.Now()
		for i, c := range cs {
			c.Send(b, "<presence to='%s/u%d'>%s</presence>", harness.Esc(room), first+i, mucX())
		}
		for i, c := range cs {
			c.Expect(b, benchWait, "self-presence", func(e *xmlel.Element) bool {
				return harness.IsPresence(e) && e.Attr("from") == fmt.Sprintf("%s/u%d", room, first+i) &&
					e.Attr("type") == "" && statusCodes(e)["110"]
			})
		}
		joinMS = float64(time.Since(t0).Microseconds()) / 1000
		// Every user's JOIN has reached the channel once the peer saw it.
		for i := range cs {
			prefix := fmt.Sprintf(":u%d!", first+i)
			peer.take(b, benchWait, prefix+" JOIN", func(l string) bool { return strings.HasPrefix(l, prefix) && strings.Contains(l, " JOIN ") })
		}
		return joinMS
	}

	// settled is the memory once the gateway has had time to go quiet
	// (and give back what a burst left over, for the gateways that do).
	settled := func() procMem {
		time.Sleep(benchSettle)
		return procMemKB(b, pid)
	}
	before := settled()
	var joinMS float64
	for first := 0; first < n; first += benchJoinBatch {
		joinMS += join(first, clients[first:min(n, first+benchJoinBatch)])
	}
	after := procMemKB(b, pid)
	afterSettled := settled()
	users, rss, anon := []float64{float64(n)}, []float64{float64(afterSettled.rss)}, []float64{float64(afterSettled.anon)}
	for w := range benchWaves {
		first := n + w*benchWave
		join(first, all[first:first+benchWave])
		m := settled()
		users, rss, anon = append(users, float64(first+benchWave)), append(rss, float64(m.rss)), append(anon, float64(m.anon))
	}
	for i, c := range extra {
		c.Send(b, "<presence type='unavailable' to='%s/u%d'/>", harness.Esc(room), n+i)
	}
	for i := range extra {
		prefix := fmt.Sprintf(":u%d!", n+i)
		peer.take(b, benchWait, prefix+" PART or QUIT", func(l string) bool {
			return strings.HasPrefix(l, prefix) && (strings.Contains(l, " PART ") || strings.Contains(l, " QUIT "))
		})
	}

	var ircToXMPP, xmppToIRC float64 // CPU seconds
	b.StartTimer()
	for it := range b.N {
		// IRC→XMPP fan-out: M lines from the peer, N deliveries each.
		cpu0 := procCPUSeconds(b, pid)
		for k := range benchMessages {
			peer.send(b, "PRIVMSG %s :i2x %d %d", benchChannel, it, k)
		}
		for _, c := range clients {
			for k := range benchMessages {
				c.Expect(b, benchWait, "fan-out message", groupchatBody(room+"/peer", fmt.Sprintf("i2x %d %d", it, k)))
			}
		}
		ircToXMPP += procCPUSeconds(b, pid) - cpu0

		// XMPP→IRC: M messages in total, spread over the users.
		cpu0 = procCPUSeconds(b, pid)
		for k := range benchMessages {
			c := clients[k%n]
			c.Send(b, "<message type='groupchat' to='%s' id='x2i-%d-%d'><body>x2i %d %d</body></message>", harness.Esc(room), it, k, it, k)
		}
		for k := range benchMessages {
			suffix := fmt.Sprintf(" PRIVMSG %s :x2i %d %d", benchChannel, it, k)
			peer.take(b, benchWait, suffix, func(l string) bool { return strings.HasSuffix(l, suffix) })
		}
		for _, c := range clients {
			for k := range benchMessages {
				c.Expect(b, benchWait, "channel message", groupchatBody(fmt.Sprintf("%s/u%d", room, k%n), fmt.Sprintf("x2i %d %d", it, k)))
			}
		}
		xmppToIRC += procCPUSeconds(b, pid) - cpu0
	}
	b.StopTimer()

	b.ReportMetric(joinMS, "join-ms")
	b.ReportMetric(float64(after.rss-before.rss)/float64(n), "rss-KB/user")
	b.ReportMetric(float64(after.anon-before.anon)/float64(n), "anon-KB/user")
	b.ReportMetric(float64(after.rss), "rss-KB")
	b.ReportMetric(float64(afterSettled.rss-before.rss)/float64(n), "settled-KB/user")
	b.ReportMetric(float64(afterSettled.anon-before.anon)/float64(n), "settled-anon-KB/user")
	b.ReportMetric(slope(users, rss), "slope-KB/user")
	b.ReportMetric(slope(users, anon), "slope-anon-KB/user")
	b.ReportMetric(ircToXMPP*1e6/float64(b.N*n*benchMessages), "cpu-µs/stanza")
	b.ReportMetric(xmppToIRC*1e6/float64(b.N*benchMessages), "cpu-µs/msg")
}

// slope is the least-squares slope of y against x.
func slope(x, y []float64) float64 {
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= float64(len(x))
	my /= float64(len(y))
	var sxy, sxx float64
	for i := range x {
		sxy += (x[i] - mx) * (y[i] - my)
		sxx += (x[i] - mx) * (x[i] - mx)
	}
	return sxy / sxx
}

// benchConfigure runs the ad-hoc "configure" command of the IRC server
// benchIRCServer with the given data form.
func benchConfigure(b *testing.B, c *harness.Client, form string) {
	b.Helper()
	to := benchIRCServer + "@" + ircDomain
	r := c.IQ(b, "set", to, "<command xmlns='http://jabber.org/protocol/commands' node='configure' action='execute'/>")
	if r.Attr("type") != "result" {
		b.Fatalf("configure, first step: %s", r)
	}
	sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
	r = c.IQ(b, "set", to, "<command xmlns='http://jabber.org/protocol/commands' node='configure' sessionid='"+
		harness.Esc(sid)+"' action='complete'>"+form+"</command>")
	if r.Attr("type") != "result" {
		b.Fatalf("configure: %s", r)
	}
}

func groupchatBody(from, body string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return harness.IsMessage(e) && e.Attr("type") == "groupchat" && e.Attr("from") == from &&
			e.ChildText("", "body") == body
	}
}

// procCPUSeconds is utime+stime of pid (/proc/<pid>/stat fields 14 and 15,
// in clock ticks of 1/100 s: USER_HZ is 100 in Linux's ABI).
func procCPUSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return float64(ut+st) / 100
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
