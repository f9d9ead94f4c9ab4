package irc

import (
	"bufio"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitConn waits until cond holds for c (checked under c.mu).
func waitConn(t *testing.T, c *conn, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

// queued waits until exactly n lines wait in c's queue (the writer took
// the others).
func queued(t *testing.T, c *conn, n int) {
	t.Helper()
	waitConn(t, c, "the writer did not take the lines", func() bool { return len(c.queue) == n })
}

// Lines go out in order; the writer ends once they are out, and an idle
// connection keeps no queue.
func TestConnWritesInOrder(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client, false, 1000)
	c.run(func(string) {}, func(error) {})
	defer c.close("")
	r := bufio.NewReader(server)
	for round := 0; round < 2; round++ {
		for i := 0; i < 3; i++ {
			if err := c.send("PRIVMSG #c :" + strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 3; i++ {
			if l, err := r.ReadString('\n'); err != nil || l != "PRIVMSG #c :"+strconv.Itoa(i)+"\r\n" {
				t.Fatalf("round %d line %d: %q %v", round, i, l, err)
			}
		}
		waitConn(t, c, "the writer did not end", func() bool { return !c.writing && c.queue == nil && c.prio == nil })
	}
	if got := c.room(); got != queueSize {
		t.Fatalf("room = %d, want %d", got, queueSize)
	}
}

// A full queue refuses the next line, and a closing or closed connection
// refuses all.
func TestConnRefusals(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client, false, 1)
	// Nobody reads the pipe: the writer blocks on the first line, the
	// rest queue up.
	if err := c.send("PRIVMSG #c :first"); err != nil {
		t.Fatal(err)
	}
	queued(t, c, 0)
	for i := 0; i < queueSize-2; i++ {
		if err := c.send("PRIVMSG #c :x"); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
	}
	// The lines of one message: all of them or none.
	if err := c.sendAll([]string{"PRIVMSG #c :1", "PRIVMSG #c :2", "PRIVMSG #c :3"}); !errors.Is(err, errQueueFull) {
		t.Fatalf("three lines with room for two: %v", err)
	}
	if c.room() != 2 {
		t.Fatalf("room = %d after a message that did not fit, want 2", c.room())
	}
	if err := c.sendAll([]string{"PRIVMSG #c :1", "PRIVMSG #c :2"}); err != nil {
		t.Fatal(err)
	}
	if err := c.send("PRIVMSG #c :x"); !errors.Is(err, errQueueFull) {
		t.Fatalf("send on a full queue: %v", err)
	}
	if c.room() != 0 {
		t.Fatalf("room = %d on a full queue", c.room())
	}
	if c.closing() {
		t.Fatal("closing before close")
	}
	c.close("QUIT :bye")
	if err := c.send("PRIVMSG #c :late"); !errors.Is(err, errClosed) {
		t.Fatalf("send while closing: %v", err)
	}
	if err := c.sendAll([]string{"PRIVMSG #c :late"}); !errors.Is(err, errClosed) || !c.closing() {
		t.Fatalf("sendAll while closing: %v, closing %v", err, c.closing())
	}
	server.Close() // the blocked write fails: the connection stops
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not stop after its write failed")
	}
	if err := c.send("PRIVMSG #c :later"); !errors.Is(err, errClosed) {
		t.Fatalf("send after the end: %v", err)
	}
	c.sendPrio("PONG x") // dropped, not queued
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prio != nil || c.queue != nil || c.writing {
		t.Fatalf("stopped connection still holds lines: prio %q queue %d writing %v", c.prio, len(c.queue), c.writing)
	}
}

// A QUIT while lines wait for a token goes out at once, after them.
func TestConnQuitDuringThrottle(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client, false, 0.01) // one token per 100 s
	lines := make(chan string, 64)
	go func() {
		r := bufio.NewReader(server)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- strings.TrimSpace(l)
		}
	}()
	for i := 0; i < defaultBurst+2; i++ {
		c.send("PRIVMSG #c :x")
	}
	for i := 0; i < defaultBurst; i++ {
		<-lines
	}
	queued(t, c, 2) // they wait for a token
	c.close("QUIT :bye")
	var got []string
	for l := range lines {
		got = append(got, l)
	}
	if len(got) != 3 || got[2] != "QUIT :bye" {
		t.Fatalf("after the burst: %q", got)
	}
}

// failingWrites is a connection whose writes fail.
type failingWrites struct{ net.Conn }

func (failingWrites) Write([]byte) (int, error) {
	return 0, errors.New("write: connection reset by peer")
}

// A failed write stops the connection, and the reason given is that
// write's error, not the reader's "closed connection".
func TestConnWriteFailureIsTheReason(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(failingWrites{client}, false, 1000)
	reason := make(chan error, 1)
	c.run(func(string) {}, func(err error) { reason <- err })
	if err := c.send("NICK x"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reason:
		if err == nil || !strings.Contains(err.Error(), "connection reset by peer") {
			t.Fatalf("reason %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not stop after its write failed")
	}
}

// The reader answers PING with the token the parser would see.
func TestReaderFindsPing(t *testing.T) {
	for _, c := range []struct{ line, cmd, token string }{
		{"PING :abc def", "PING", "abc def"},
		{"PING abc", "PING", "abc"},
		{"ping a b", "ping", "b"},
		{":srv PING :x", "PING", "x"},
		{"@time=2020-01-01T00:00:00Z :srv PING srv :tok", "PING", "tok"},
		{"PING", "PING", ""},
		{"PING :tok\r\n", "PING", "tok"},
		{"PING\n", "PING", ""},
		{":nick!u@h PRIVMSG #c :PING me", "PRIVMSG", "PING me"},
	} {
		cmd, params := command(c.line)
		if cmd != c.cmd || lastParam(params) != c.token {
			t.Errorf("%q: command %q, last parameter %q; want %q, %q", c.line, cmd, lastParam(params), c.cmd, c.token)
		}
	}
}
