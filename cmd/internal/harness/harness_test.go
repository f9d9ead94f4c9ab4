package harness

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"passerelle/component/xmlel"
)

func TestMain(m *testing.M) {
	if os.Getenv("HARNESS_HELPER") == "" {
		code := m.Run()
		Cleanup()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// ------------------------------------------------------------ XMPP servers

func TestProsody(t *testing.T) {
	t.Parallel()
	srv := StartProsody(t, ServerOptions{
		ExtraHosts: []string{"other.localhost"},
		Components: []string{"irc.localhost", "mail.localhost"},
		Upload:     true,
	})
	if srv.Name() != "prosody" || srv.Domain() != "localhost" || len(srv.Secret()) != 32 {
		t.Fatalf("unexpected server identity %q %q %q", srv.Name(), srv.Domain(), srv.Secret())
	}
	alicePW := exerciseServer(t, srv)
	exerciseUpload(t, srv, alicePW)
}

func TestEjabberd(t *testing.T) {
	t.Parallel()
	srv := StartEjabberd(t, ServerOptions{
		ExtraHosts: []string{"other.localhost"},
		Components: []string{"irc.localhost", "mail.localhost"},
		Upload:     true,
	})
	if srv.Name() != "ejabberd" {
		t.Fatalf("Name() = %q", srv.Name())
	}
	alicePW := exerciseServer(t, srv)
	exerciseUpload(t, srv, alicePW)
}

// exerciseUpload: XEP-0363 slot for a user and for a component, PUT, GET.
func exerciseUpload(t *testing.T, srv Server, alicePW string) {
	t.Helper()
	if srv.UploadDomain() != "upload.localhost" {
		t.Fatalf("UploadDomain() = %q", srv.UploadDomain())
	}
	alice := Dial(t, srv.C2SAddr(), "alice@localhost", alicePW, "upload")
	reply := alice.IQ(t, "get", srv.UploadDomain(), "<request xmlns='urn:xmpp:http:upload:0' filename='hello.txt' size='5' content-type='text/plain'/>")
	putGet(t, srv, reply, "hello")

	comp := dialComponent(t, srv.ComponentAddr(), "irc.localhost", srv.Secret())
	fmt.Fprintf(comp, "<iq type='get' id='up1' from='irc.localhost' to='%s'><request xmlns='urn:xmpp:http:upload:0' filename='c.txt' size='3' content-type='text/plain'/></iq>", srv.UploadDomain())
	putGet(t, srv, comp.next(t), "abc")
}

func putGet(t *testing.T, srv Server, reply *xmlel.Element, content string) {
	t.Helper()
	slot := reply.Child("urn:xmpp:http:upload:0", "slot")
	if reply.Attr("type") != "result" || slot == nil {
		t.Fatalf("no upload slot: %s", reply)
	}
	put := slot.Child("", "put").Attr("url")
	get := slot.Child("", "get").Attr("url")
	if !strings.HasPrefix(put, "http://"+srv.HTTPAddr()+"/") || !strings.HasPrefix(get, "http://"+srv.HTTPAddr()+"/") {
		t.Fatalf("slot URLs do not point to %s: %s", srv.HTTPAddr(), slot)
	}
	req, _ := http.NewRequest(http.MethodPut, put, strings.NewReader(content))
	req.Header.Set("Content-Type", "text/plain")
	for _, h := range slot.Child("", "put").ChildrenNamed("", "header") {
		req.Header.Set(h.Attr("name"), h.Text)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT %s: %s", put, resp.Status)
	}
	resp, err = http.Get(get)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != content {
		t.Fatalf("GET %s: %s %q", get, resp.Status, body)
	}
}

// exerciseServer: two users exchange a message, a component connects and
// sends to a user, offline storage works, a restart keeps accounts, and an
// account added while running works at once.
func exerciseServer(t *testing.T, srv Server) (alicePW string) {
	t.Helper()
	alicePW = srv.AddUser(t, "alice@localhost")
	bobPW := srv.AddUser(t, "bob")
	carolPW := srv.AddUser(t, "carol@other.localhost")

	alice := Dial(t, srv.C2SAddr(), "alice@localhost", alicePW, "a1")
	bob := Dial(t, srv.C2SAddr(), "bob@localhost", bobPW, "b1")
	if alice.JID != "alice@localhost/a1" {
		t.Errorf("alice bound as %q", alice.JID)
	}
	alice.Send(t, "<message to='%s' type='chat'><body>%s</body></message>", Esc(bob.JID), Esc("hi <bob> & co"))
	m := bob.Expect(t, 5*time.Second, "alice's message", MessageFrom("alice@localhost", "hi <bob> & co"))
	if m.Attr("from") != alice.JID {
		t.Errorf("from = %q", m.Attr("from"))
	}
	// The server answers a ping; a wrong password is refused.
	if r := alice.IQ(t, "get", "localhost", "<ping xmlns='urn:xmpp:ping'/>"); r.Attr("type") != "result" {
		t.Errorf("ping: %s", r)
	}
	if c, err := DialErr(srv.C2SAddr(), "alice@localhost", "wrong", "x"); err == nil {
		c.Close()
		t.Error("wrong password accepted")
	} else if !strings.Contains(err.Error(), "not-authorized") {
		t.Errorf("wrong password: %v", err)
	}
	// Other virtual host.
	carol := Dial(t, srv.C2SAddr(), "carol@other.localhost", carolPW, "c")
	carol.Send(t, "<message to='bob@localhost' type='chat'><body>from other host</body></message>")
	bob.Expect(t, 5*time.Second, "carol's message", MessageFrom("carol@other.localhost", "from other host"))

	// XEP-0114 component on both component domains.
	for _, comp := range []string{"irc.localhost", "mail.localhost"} {
		cc := dialComponent(t, srv.ComponentAddr(), comp, srv.Secret())
		fmt.Fprintf(cc, "<message from='someone@%s' to='%s' type='chat'><body>via %s</body></message>", comp, bob.JID, comp)
		bob.Expect(t, 5*time.Second, "message from "+comp, MessageFrom("someone@"+comp, "via "+comp))
		cc.Close()
	}

	// Offline storage.
	bob.Close()
	alice.Send(t, "<message to='bob@localhost' type='chat'><body>while you were out</body></message>")
	// A round trip on alice's stream: the server handles a stream's stanzas
	// in order, so the message has been routed (to offline storage) once the
	// ping is answered. Without it, ejabberd may still be routing the message
	// when bob's new session comes up, and keep it for his next login.
	alice.IQ(t, "get", "localhost", "<ping xmlns='urn:xmpp:ping'/>")
	bob2 := Dial(t, srv.C2SAddr(), "bob@localhost", bobPW, "b2")
	bob2.Expect(t, 5*time.Second, "offline message", MessageFrom("alice@localhost", "while you were out"))
	bob2.ExpectNone(t, 200*time.Millisecond, "second copy of the offline message", MessageFrom("alice@localhost", "while you were out"))

	// Restart on the same ports and data.
	srv.Stop(t)
	if _, err := DialErr(srv.C2SAddr(), "alice@localhost", alicePW, "x"); err == nil {
		t.Fatal("dial succeeded while the server is stopped")
	}
	srv.Start(t)
	alice = Dial(t, srv.C2SAddr(), "alice@localhost", alicePW, "a2")
	bob = Dial(t, srv.C2SAddr(), "bob@localhost", bobPW, "b3")
	bob.Send(t, "<message to='alice@localhost' type='chat'><body>after restart</body></message>")
	alice.Expect(t, 5*time.Second, "message after restart", MessageFrom("bob@localhost", "after restart"))

	// Account added while running.
	davePW := srv.AddUser(t, "dave@localhost")
	dave := Dial(t, srv.C2SAddr(), "dave@localhost", davePW, "d")
	dave.Send(t, "<message to='%s'><body>hello from dave</body></message>", Esc(alice.JID))
	alice.Expect(t, 5*time.Second, "dave's message", MessageFrom("dave@localhost", "hello from dave"))

	if len(alice.Received()) == 0 {
		t.Error("Received() is empty")
	}
	if tail := srv.LogTail(5); tail == "" {
		t.Error("empty LogTail")
	}
	return alicePW
}

// component is a raw XEP-0114 connection.
type component struct {
	net.Conn
	dec *xml.Decoder
}

// next reads the next element from the server (5 s).
func (c *component) next(t *testing.T) *xmlel.Element {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for {
		tok, err := c.dec.Token()
		if err != nil {
			t.Fatalf("component: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			e, err := xmlel.Read(c.dec, se)
			if err != nil {
				t.Fatalf("component: %v", err)
			}
			return e
		}
	}
}

// dialComponent performs a XEP-0114 handshake.
func dialComponent(t *testing.T, addr, domain, secret string) *component {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &component{Conn: conn, dec: xml.NewDecoder(conn)}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>", domain)
	var id string
	for id == "" {
		tok, err := c.dec.Token()
		if err != nil {
			t.Fatalf("component %s: %v", domain, err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "stream" {
			for _, a := range se.Attr {
				if a.Name.Local == "id" {
					id = a.Value
				}
			}
		}
	}
	sum := sha1.Sum([]byte(id + secret))
	fmt.Fprintf(c, "<handshake>%s</handshake>", hex.EncodeToString(sum[:]))
	_ = c.SetDeadline(time.Time{})
	if e := c.next(t); e.Local != "handshake" {
		t.Fatalf("component %s handshake refused: %s", domain, e)
	}
	return c
}

// ------------------------------------------------------------ client details

func TestEsc(t *testing.T) {
	if got := Esc(`<a href="x">'&'</a>`); got != "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;" {
		t.Errorf("Esc = %q", got)
	}
	if err := wellFormed("<message><body>" + Esc("a<b&c") + "</body></message><presence/>"); err != nil {
		t.Error(err)
	}
	if err := wellFormed("<message><body>a<b</body></message>"); err == nil {
		t.Error("malformed XML accepted")
	}
}

type fakeTB struct {
	testing.TB
	skipped, fatal bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any) { f.fatal = true }

func TestRequireBinary(t *testing.T) {
	t.Setenv("CI", "")
	f := &fakeTB{}
	requireBinary(f, "sh", "no-such-binary-for-harness")
	if !f.skipped || f.fatal {
		t.Errorf("without CI: skipped=%v fatal=%v, want a skip", f.skipped, f.fatal)
	}
	t.Setenv("CI", "true")
	f = &fakeTB{}
	requireBinary(f, "no-such-binary-for-harness")
	if f.skipped || !f.fatal {
		t.Errorf("with CI: skipped=%v fatal=%v, want a failure", f.skipped, f.fatal)
	}
	f = &fakeTB{}
	requireBinary(f, "sh")
	if f.skipped || f.fatal {
		t.Errorf("installed binary: skipped=%v fatal=%v", f.skipped, f.fatal)
	}
}

// TestClientPingAndBuffering runs the client against a scripted fake server
// that pings the client and sends stanzas in an awkward order.
func TestClientPingAndBuffering(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pong := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		d := xml.NewDecoder(conn)
		next := func() *xmlel.Element {
			for {
				tok, err := d.Token()
				if err != nil {
					return nil
				}
				if se, ok := tok.(xml.StartElement); ok {
					if se.Name.Local == "stream" {
						continue
					}
					e, _ := xmlel.Read(d, se)
					return e
				}
			}
		}
		hdr := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0'>"
		io.WriteString(conn, hdr+"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>")
		next() // auth
		io.WriteString(conn, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
		d = xml.NewDecoder(conn)
		io.WriteString(conn, hdr+"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>")
		bind := next()
		// An early message before the bind result must not be lost.
		io.WriteString(conn, "<message from='early@localhost'><body>early</body></message>")
		fmt.Fprintf(conn, "<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>u@localhost/r</jid></bind></iq>", bind.Attr("id"))
		sess := next()
		fmt.Fprintf(conn, "<iq type='result' id='%s'/>", sess.Attr("id"))
		next() // initial presence
		io.WriteString(conn, "<presence from='u@localhost/r' to='u@localhost/r'/>")
		io.WriteString(conn, "<iq type='get' id='p1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
		io.WriteString(conn, "<message from='one@localhost'><body>1</body></message><message from='two@localhost'><body>2</body></message>")
		for {
			e := next()
			if e == nil {
				return
			}
			if e.Local == "iq" && e.Attr("id") == "p1" {
				pong <- e.Attr("type")
			}
			if e.Local == "message" {
				io.WriteString(conn, "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
				return
			}
		}
	}()
	c := Dial(t, l.Addr().String(), "u@localhost", "pw", "r")
	if c.JID != "u@localhost/r" {
		t.Fatalf("JID %q", c.JID)
	}
	select {
	case typ := <-pong:
		if typ != "result" {
			t.Fatalf("ping answered with type %q", typ)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ping not answered")
	}
	// Out of order: 2 first, then 1, then the early one.
	c.Expect(t, time.Second, "two", MessageFrom("two@localhost", "2"))
	c.ExpectNone(t, 50*time.Millisecond, "two again", MessageFrom("two@localhost", ""))
	c.Expect(t, time.Second, "one", MessageFrom("one@localhost", "1"))
	c.Expect(t, time.Second, "early", MessageFrom("early@localhost", "early"))
	c.Send(t, "<message to='x@localhost'><body>bye</body></message>")
	c.Expect(t, 5*time.Second, "stream error", func(e *xmlel.Element) bool { return e.Local == "error" && e.Space == nsStreams })
	deadline := time.Now().Add(5 * time.Second)
	for c.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := c.Err().(*StreamError); !ok {
		t.Fatalf("Err() = %v, want a *StreamError", c.Err())
	}
	found := false
	for _, e := range c.Received() {
		found = found || (e.Local == "iq" && e.Attr("id") == "p1")
	}
	if !found {
		t.Error("the ping is not in Received()")
	}
}

// ------------------------------------------------------------ IRC

func TestNgircd(t *testing.T) {
	t.Parallel()
	irc := StartNgircd(t)
	if irc.Name != "irc.test" || !strings.HasPrefix(irc.Addr, "127.0.0.1:") {
		t.Fatalf("unexpected %+v", irc)
	}
	a := dialIRC(t, irc.Addr, "alice_with_a_long_nickname_29")
	b := dialIRC(t, irc.Addr, "bob")
	a.send("JOIN #test")
	a.expect(t, " 366 ")
	b.send("JOIN #test")
	b.expect(t, " 366 ")
	a.expect(t, ":bob!")
	b.send("PRIVMSG #test :hello alice")
	a.expect(t, "PRIVMSG #test :hello alice")

	// Many connections from 127.0.0.1 are allowed.
	for i := range 8 {
		dialIRC(t, irc.Addr, fmt.Sprintf("extra%d", i))
	}

	irc.Stop(t)
	a.expectClosed(t)
	irc.Start(t)
	c := dialIRC(t, irc.Addr, "carol")
	c.send("JOIN #again")
	c.expect(t, " 366 ")
	if !strings.Contains(irc.LogTail(60), "ready") {
		t.Errorf("log tail: %s", irc.LogTail(60))
	}
}

type ircConn struct {
	net.Conn
	r *bufio.Reader
}

func dialIRC(t *testing.T, addr, nick string) *ircConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ic := &ircConn{Conn: c, r: bufio.NewReader(c)}
	ic.send("NICK " + nick)
	ic.send("USER " + nick + " 0 * :" + nick)
	ic.expect(t, " 001 "+nick+" ")
	return ic
}

func (c *ircConn) send(line string) { fmt.Fprintf(c, "%s\r\n", line) }

func (c *ircConn) expect(t *testing.T, substr string) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var seen []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for %q: %v; got:\n%s", substr, err, strings.Join(seen, ""))
		}
		if strings.HasPrefix(line, "PING ") {
			c.send("PONG " + strings.TrimSpace(line[5:]))
			continue
		}
		seen = append(seen, line)
		if strings.Contains(line, substr) {
			return line
		}
	}
}

func (c *ircConn) expectClosed(t *testing.T) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.r.ReadString('\n'); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("connection still open after Stop")
			}
			return
		}
	}
}

// ------------------------------------------------------------ gateway helpers

func TestGatewayHelpers(t *testing.T) {
	t.Setenv("HARNESS_CANARY", "must-not-leak")
	script := `trap 'echo got TERM; exit 3' TERM; env; echo "started FOO=$FOO"; while :; do sleep 0.05; done`
	g := StartGateway(t, "/bin/sh", map[string]string{"FOO": "bar baz"}, "-c", script)
	g.WaitOutput(t, 5*time.Second, "started FOO=bar baz")
	out := g.Output()
	if strings.Contains(out, "HARNESS_CANARY") {
		t.Errorf("the test's environment leaked into the gateway:\n%s", out)
	}
	if !strings.Contains(out, "PATH=") || !strings.Contains(out, "HOME=") {
		t.Errorf("PATH/HOME missing:\n%s", out)
	}
	g.Signal(syscall.SIGTERM)
	if code := g.Wait(t, 5*time.Second); code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
	g.WaitOutput(t, time.Second, "got TERM")

	g2 := StartGateway(t, "/bin/sh", nil, "-c", "echo boom >&2; exit 7")
	if code := g2.Wait(t, 5*time.Second); code != 7 {
		t.Errorf("exit code %d, want 7", code)
	}
	if !strings.Contains(g2.Output(), "boom") {
		t.Errorf("stderr not captured: %q", g2.Output())
	}
}

func TestBuildBinary(t *testing.T) {
	t.Setenv("PASSERELLE_BIN", "/bin/true")
	if got := BuildBinary(t); got != "/bin/true" {
		t.Errorf("BuildBinary with PASSERELLE_BIN = %q", got)
	}
	if testing.Short() {
		t.Skip("no go build in -short mode")
	}
	// The build itself, on a tiny program (the real gateway is built the
	// same way by BuildBinary).
	path, out, err := goBuild("./testdata/fakegw", "fakegw", false)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	g := StartGateway(t, path, map[string]string{"GREETING": "hi"})
	g.WaitOutput(t, 5*time.Second, "fakegw says hi")
	g.Signal(syscall.SIGTERM)
	if code := g.Wait(t, 5*time.Second); code != 0 {
		t.Errorf("exit code %d\n%s", code, g.Output())
	}
	Cleanup()
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("build dir still there after Cleanup: %v", err)
	}
}

// ------------------------------------------------------------ no leftovers

// TestNoProcessLeft: after a (sub)test's cleanups, none of the processes it
// started (nor their children) is alive.
func TestNoProcessLeft(t *testing.T) {
	t.Parallel()
	var pids []int
	t.Run("inner", func(t *testing.T) {
		g := StartGateway(t, "/bin/sh", nil, "-c", `sleep 300 & echo "child=$!"; sleep 300`)
		g.WaitOutput(t, 5*time.Second, "child=")
		pids = append(pids, g.Pid(), parseChild(t, g.Output()))
		if _, err := exec.LookPath("ngircd"); err == nil {
			irc := StartNgircd(t)
			irc.mu.Lock()
			pids = append(pids, irc.p.pid)
			irc.mu.Unlock()
		}
	})
	for _, pid := range pids {
		if procAlive(pid) {
			t.Errorf("pid %d still alive after the subtest's cleanup", pid)
		}
	}
}

// TestWatchdog: when the test process dies without running its cleanups
// (SIGKILL), the watchdog still kills the process groups it started; when
// a test panics, the harness's cleanups kill them.
func TestWatchdog(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"kill", "panic"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
			// The helper's temporary directories go into ours: a SIGKILLed
			// helper cannot remove them.
			cmd.Env = append(os.Environ(), "HARNESS_HELPER="+mode, "TMPDIR="+t.TempDir())
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			var pids []int
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if rest, ok := strings.CutPrefix(sc.Text(), "PIDS "); ok {
					for _, f := range strings.Fields(rest) {
						n, _ := strconv.Atoi(f)
						pids = append(pids, n)
					}
					break
				}
			}
			if len(pids) < 2 {
				t.Fatalf("helper did not report its pids (%v)", sc.Err())
			}
			var rest strings.Builder
			if mode == "kill" {
				_ = cmd.Process.Kill() // no cleanups run
			} else {
				for sc.Scan() {
					rest.WriteString(sc.Text() + "\n")
				}
			}
			_ = cmd.Wait()
			deadline := time.Now().Add(10 * time.Second)
			for _, pid := range pids {
				for procAlive(pid) && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if procAlive(pid) {
					t.Errorf("pid %d survived the death of the test process", pid)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			if mode == "panic" && !strings.Contains(rest.String(), "CLEANUP failed=true alive=0") {
				t.Errorf("after the panic, the cleanups did not run or left processes:\n%s", rest.String())
			}
			if mode == "panic" && !strings.Contains(rest.String(), "harness: sh output") {
				t.Errorf("the gateway output was not dumped after the panic:\n%s", rest.String())
			}
		})
	}
}

// TestHelperProcess is run by TestWatchdog in a child test process.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("HARNESS_HELPER")
	if mode == "" {
		t.Skip("helper for TestWatchdog")
	}
	var pids []int
	t.Cleanup(func() { // registered first: runs after the harness's cleanups
		alive := 0
		for _, p := range pids {
			if procAlive(p) {
				alive++
			}
		}
		fmt.Printf("CLEANUP failed=%v alive=%d\n", failed(t), alive)
	})
	g := StartGateway(t, "/bin/sh", nil, "-c", `sleep 300 & echo "child=$!"; sleep 300`)
	g.WaitOutput(t, 5*time.Second, "child=")
	pids = append(pids, g.Pid(), parseChild(t, g.Output()))
	if _, err := exec.LookPath("ngircd"); err == nil {
		irc := StartNgircd(t)
		pids = append(pids, irc.p.pid)
	}
	var s []string
	for _, p := range pids {
		s = append(s, strconv.Itoa(p))
	}
	fmt.Printf("PIDS %s\n", strings.Join(s, " "))
	if mode == "panic" {
		panic("helper panics on purpose")
	}
	time.Sleep(time.Minute) // killed by the parent
}

func parseChild(t *testing.T, out string) int {
	t.Helper()
	i := strings.Index(out, "child=")
	f := strings.Fields(out[i+len("child="):])
	n, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("bad child pid in %q", out)
	}
	return n
}
