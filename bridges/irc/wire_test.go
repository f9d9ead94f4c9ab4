package irc

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"unicode/utf8"

	"passerelle/component/xmlel"
)

func TestBuildLine(t *testing.T) {
	for _, bad := range []string{"a\rb", "a\nb", "a\x00b"} {
		if _, err := buildLine("PRIVMSG", "#c", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
		if _, err := buildLine("PRIVMSG", bad, "text"); err == nil {
			t.Errorf("target %q accepted", bad)
		}
	}
	if _, err := buildLine("PRIVMSG", "a b", "x"); err == nil {
		t.Error("a middle parameter with a space was accepted")
	}
	cases := map[string][]string{
		"PRIVMSG #c :hello world": {"#c", "hello world"},
		"PRIVMSG #c ::)":          {"#c", ":)"},
		"TOPIC #c :":              {"#c", ""},
		"NICK alice":              {"alice"},
	}
	for want, params := range cases {
		if got, err := buildLine(strings.Fields(want)[0], params...); err != nil || got != want {
			t.Errorf("buildLine(%q) = %q, %v; want %q", params, got, err, want)
		}
	}
}

func TestSplitText(t *testing.T) {
	long := strings.TrimSpace(strings.Repeat("héllo wörld ", 100))
	parts := splitText(long, 50)
	for _, p := range parts {
		if len(p) > 50 || !utf8.ValidString(p) || strings.HasPrefix(p, " ") {
			t.Fatalf("bad piece %q", p)
		}
	}
	if got := strings.Join(parts, " "); got != strings.TrimSpace(long) {
		t.Fatalf("words lost or cut: %q", parts)
	}
	// No spaces: cut on UTF-8 boundaries.
	for _, p := range splitText(strings.Repeat("é", 100), 11) {
		if !utf8.ValidString(p) || len(p) > 11 {
			t.Fatalf("bad piece %q", p)
		}
	}
	if got := splitText("a\r\nb\rc\nd\x00e", 100); strings.Join(got, "|") != "a|b|c|de" {
		t.Fatalf("line breaks: %q", got)
	}
	if got := splitText("\n\n", 10); len(got) != 0 {
		t.Fatalf("empty lines kept: %q", got)
	}
}

func TestStripFormatting(t *testing.T) {
	cases := map[string]string{
		"\x02bold\x02 \x1ditalic\x1d \x1funder\x1f": "bold italic under",
		"\x0304red\x03 \x0304,12on blue\x03 plain":  "red on blue plain",
		"\x03,5x 100\x031,2":                        ",5x 100",
		"\x04ff0000hex\x0f end":                     "hex end",
		"ordinary":                                  "ordinary",
	}
	for in, want := range cases {
		if got := stripFormatting(in); got != want {
			t.Errorf("stripFormatting(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecodeText(t *testing.T) {
	if got := decodeText("caf\xe9"); got != "café" {
		t.Errorf("latin-1: %q", got)
	}
	if got := decodeText("café"); got != "café" {
		t.Errorf("utf-8: %q", got)
	}
}

// The throttle never delays PONG: once the burst is spent, a PING is
// answered before the queued lines.
func TestThrottleLetsPongThrough(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client, false, 1)
	c.run(func(string) {}, func(error) {})
	defer c.close("")
	for i := 0; i < 15; i++ {
		if err := c.send("PRIVMSG #c :line"); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(server)
	for i := 0; i < defaultBurst; i++ {
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "PRIVMSG") {
			t.Fatalf("line %d: %q %v", i, l, err)
		}
	}
	go server.Write([]byte("PING :now\r\n"))
	l, err := r.ReadString('\n')
	if err != nil || l != "PONG now\r\n" {
		t.Fatalf("after the burst: %q %v (PONG waited behind the throttle)", l, err)
	}
}

// FuzzIRCLine feeds arbitrary lines to a joined network: every stanza
// produced must be well-formed XML, and nothing may panic.
func FuzzIRCLine(f *testing.F) {
	for _, s := range []string{
		":bob!u@h PRIVMSG #c :hello", ":bob!u@h PRIVMSG nick :\x01ACTION waves\x01", ":bob!u@h NOTICE #c :\x02hi\xff",
		":bob!u@h JOIN #c", ":bob!u@h PART #c :bye", ":bob!u@h QUIT :gone", ":op!u@h KICK #c bob :out",
		":op!u@h MODE #c +ov-v bob bob bob", ":bob!u@h NICK robert", ":op!u@h TOPIC #c :new\x00topic",
		":srv 353 nick = #c :@a +b ~&c", ":srv 366 nick #c :end", ":srv 332 nick #c :t", ":srv 475 nick #c :key",
		"@time=2020-01-01T00:00:00Z :x!y@z PRIVMSG #c :\x0312,4colour", ":srv 005 nick PREFIX=(ov)@+ CHANTYPES=#& :ok",
		":srv NOTICE * :*** Looking up", "ERROR :Closing link", ":srv 401 nick bob :No such nick",
		"PING :tok", "PING tok", "@a=b :srv PING x :y z", "ping  a  b ", ":srv PONG srv :x",
	} {
		f.Add(s)
	}
	h := newFakeHost(f)
	b := New(Options{})
	startOn(f, b, h)
	f.Fuzz(func(t *testing.T, line string) {
		m, err := parseLine(line)
		if err != nil {
			return
		}
		// The reader answers PING without parsing: it must see the
		// command and the token the parser sees.
		cmd, params := command(line)
		if ping := strings.EqualFold(m.Command, "PING"); ping != strings.EqualFold(cmd, "PING") {
			t.Fatalf("%q: command %q, parsed %q", line, cmd, m.Command)
		} else if ping && lastParam(params) != m.Trailing() {
			t.Fatalf("%q: PING token %q, parsed %q", line, lastParam(params), m.Trailing())
		}
		h.Run(func(ctx context.Context) {
			n := &network{ircClient: ircClient{nick: "nick", registered: true, chantypes: "#&", prefixMode: "ov", prefixSym: "@+"},
				b: b, user: testUser, server: "irc.example.net", chans: map[string]*channel{}}
			b.addNetwork(n)
			ch := &channel{name: "#c", pending: map[string]string{}, resources: map[string]*resource{testUser + "/r": {nick: "nick"}},
				state: chanIn, members: newRoster(caseRFC1459, member{nick: "nick"}, member{nick: "bob"})}
			n.chans["#c"] = ch
			n.handle(ctx, m)
		})
		for _, st := range h.Drain() {
			if _, err := xmlel.Parse(st.String()); err != nil {
				t.Fatalf("%q produced bad XML %s: %v", line, st, err)
			}
		}
	})
}

// Lines queued before a QUIT go out before it.
func TestQuitAfterQueued(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client, false, 1)
	for i := 0; i < 12; i++ { // more than the burst: some wait in the queue
		c.send("PRIVMSG #c :x")
	}
	c.send("PART #c")
	c.close("QUIT :bye")
	c.run(func(string) {}, func(error) {})
	r := bufio.NewReader(server)
	var got []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			break
		}
		got = append(got, strings.TrimSpace(l))
	}
	if len(got) != 14 || got[12] != "PART #c" || got[13] != "QUIT :bye" {
		t.Fatalf("lines: %q", got)
	}
}
