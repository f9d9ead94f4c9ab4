package irc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/xmlel"
)

// benchIRC is a minimal IRC server for many clients: it registers them,
// answers JOIN, counts PRIVMSGs and can send a line to every client.
type benchIRC struct {
	ln       net.Listener
	mu       sync.Mutex
	conns    []net.Conn
	privmsgs chan struct{} // one per PRIVMSG received
}

func newBenchIRC(b *testing.B) *benchIRC {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &benchIRC{ln: ln, privmsgs: make(chan struct{}, 1<<16)}
	b.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *benchIRC) serve(c net.Conn) {
	r := bufio.NewReader(c)
	nick := ""
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "NICK":
			nick = f[1]
		case "USER":
			fmt.Fprintf(c, ":srv 001 %s :Welcome\r\n", nick)
		case "JOIN":
			fmt.Fprintf(c, ":%s!u@h JOIN %s\r\n:srv 366 %s %s :End\r\n", nick, f[1], nick, f[1])
		case "PRIVMSG":
			s.privmsgs <- struct{}{}
		}
	}
}

func (s *benchIRC) broadcast(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		io.WriteString(c, line+"\r\n")
	}
}

func (s *benchIRC) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// BenchmarkChannel joins N users to one channel, then measures the join
// time, the memory per bridged user, and the cost of each delivered
// stanza for IRC→XMPP fan-out and for XMPP→IRC.
func BenchmarkChannel(b *testing.B) {
	for _, archive := range []bool{true, false} {
		for _, users := range []int{10, 100} {
			b.Run(fmt.Sprintf("archive=%v/users=%d", archive, users), func(b *testing.B) { benchChannel(b, users, archive) })
		}
	}
}

func benchChannel(b *testing.B, users int, archive bool) {
	srv := newBenchIRC(b)
	h := newFakeHost(b)
	// Measure the bridge, not the outbox: but with archive=true, the
	// copies of a line written with it (the echo, and the copies of a
	// line from IRC queued by the connection that archives it: record)
	// are in the outbox all the same. PASSERELLE_BENCH_COMMIT=1 commits
	// every copy, as the component does (one user goroutine here: no
	// group commit of the users' writes).
	h.Uncommitted = os.Getenv("PASSERELLE_BENCH_COMMIT") == ""
	br := New(Options{AllowPrivate: true})
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(b, ctx, br, h)
	b.Cleanup(func() { cancel(); wait() })
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts, cfg.ThrottleLimit = []int{srv.port()}, nil, 1_000_000 // measure CPU, not the throttle
	jid := func(i int) string { return fmt.Sprintf("u%d@example.org", i) }
	for i := 0; i < users; i++ {
		if err := br.saveNetConfig(ctx, jid(i), "localhost", cfg); err != nil {
			b.Fatal(err)
		}
		if err := br.saveChanSettings(ctx, jid(i), "localhost", "#c", chanSettings{Record: archive}); err != nil {
			b.Fatal(err)
		}
	}
	drainUntil := func(n int, match func(*xmlel.Element) bool) {
		var last *xmlel.Element
		for got := 0; got < n; {
			st, ok := h.Receive(30 * time.Second)
			if !ok {
				b.Fatalf("timed out: %d of %d stanzas (last other: %v)", got, n, last)
			}
			if match(st) {
				got++
			} else {
				last = st
			}
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	for i := 0; i < users; i++ {
		st, _ := xmlel.Parse(fmt.Sprintf("<presence xmlns='jabber:component:accept' from='%s/r' to='#c%%localhost@irc.example/u%d'><x xmlns='http://jabber.org/protocol/muc'/></presence>", jid(i), i))
		u := &bridges.User{JID: jid(i), Full: jid(i) + "/r"}
		h.Run(func(ctx context.Context) { br.Handle(ctx, u, st) })
	}
	drainUntil(users, selfPresence)
	joinTime := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	joinUS := float64(joinTime.Microseconds()) / float64(users)
	heapPerUser := (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(users)
	stackPerUser := (float64(after.StackInuse) - float64(before.StackInuse)) / float64(users)
	b.Run("join", func(b *testing.B) {
		// The joins happened once, above; this only reports them.
		b.ReportMetric(joinUS, "µs/join")
		b.ReportMetric(heapPerUser, "heap-B/user")
		b.ReportMetric(stackPerUser, "stack-B/user") // the connections' goroutines
	})

	isMsg := func(e *xmlel.Element) bool { return e.Local == "message" && e.Attr("type") == "groupchat" }
	b.Run("irc-to-xmpp", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			srv.broadcast(":someone!u@h PRIVMSG #c :hello everyone")
			drainUntil(users, isMsg)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*users), "ns/stanza")
	})
	b.Run("xmpp-to-irc", func(b *testing.B) {
		b.ReportAllocs()
		st, _ := xmlel.Parse("<message xmlns='jabber:component:accept' from='" + jid(0) + "/r' to='#c%localhost@irc.example' type='groupchat'><body>hello irc</body></message>")
		u := &bridges.User{JID: jid(0), Full: jid(0) + "/r"}
		for i := 0; i < b.N; i++ {
			h.Run(func(ctx context.Context) { br.Handle(ctx, u, st) })
			drainUntil(1, isMsg) // the reflection
			select {             // and the line on the server
			case <-srv.privmsgs:
			case <-time.After(30 * time.Second):
				b.Fatal("the line did not reach the server")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/stanza")
	})
}

// BenchmarkReflection is the room's echo of a user's own message in a
// channel that keeps its history, with the outbox committed: the line
// from the XMPP side to its echo queued for the user's resource (one),
// the line on the IRC server.
func BenchmarkReflection(b *testing.B) {
	srv := newBenchIRC(b)
	h := newFakeHost(b)
	br := New(Options{AllowPrivate: true})
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(b, ctx, br, h)
	b.Cleanup(func() { cancel(); wait() })
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts, cfg.ThrottleLimit = []int{srv.port()}, nil, 1_000_000 // measure CPU, not the throttle
	const user = "u0@example.org"
	if err := br.saveNetConfig(ctx, user, "localhost", cfg); err != nil {
		b.Fatal(err)
	}
	u := &bridges.User{JID: user, Full: user + "/r"}
	join, _ := xmlel.Parse("<presence xmlns='jabber:component:accept' from='" + u.Full + "' to='#c%localhost@irc.example/u0'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
	h.Run(func(ctx context.Context) { br.Handle(ctx, u, join) })
	next := func(what string, match func(*xmlel.Element) bool) {
		for {
			st, ok := h.Receive(30 * time.Second)
			if !ok {
				b.Fatalf("timed out waiting for %s", what)
			}
			if match(st) {
				return
			}
		}
	}
	next("the self-presence", selfPresence)
	st, _ := xmlel.Parse("<message xmlns='jabber:component:accept' from='" + u.Full + "' to='#c%localhost@irc.example' type='groupchat' id='m'><body>hello irc</body></message>")
	isEcho := func(e *xmlel.Element) bool { return e.Local == "message" && e.Attr("id") == "m" }
	b.ReportAllocs()
	for b.Loop() {
		h.Run(func(ctx context.Context) { br.Handle(ctx, u, st) })
		next("the echo", isEcho)
		select {
		case <-srv.privmsgs:
		case <-time.After(30 * time.Second):
			b.Fatal("the line did not reach the server")
		}
	}
}
