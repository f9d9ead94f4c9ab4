package main

// End-to-end test of the README's run command, deploy/run-local.sh: the
// script builds the gateway, starts a throwaway Prosody with TLS, an IRC
// server, an SMS sandbox and the gateway on loopback, prints what to try,
// and on SIGINT or SIGTERM stops them all and removes its temporary
// directory.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
)

const (
	runLocalScript = "../../deploy/run-local.sh"
	// runLocalStart bounds the script's start: it runs go build first,
	// which compiles the SQLite driver when the build cache is cold.
	runLocalStart = 180 * time.Second
	// runLocalStop bounds the script's exit after a signal.
	runLocalStop = 30 * time.Second
	// runLocalDirPrefix is where the script puts its temporary directory.
	runLocalDirPrefix = "/tmp/passerelle-local."
)

// runLocalPorts names the loopback ports the script is given.
var runLocalPorts = []string{"c2s", "c2s_tls", "component", "smtp", "http", "irc", "sms", "webhook"}

// runLocalDirRE matches the script's temporary directory (mktemp -d
// /tmp/passerelle-local.XXXXXX).
var runLocalDirRE = regexp.MustCompile(regexp.QuoteMeta(runLocalDirPrefix) + `[A-Za-z0-9]{6}`)

func TestRunLocal(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sig      syscall.Signal
		group    bool // signal the whole process group, as a terminal's Ctrl-C does
		wantCode int
		demo     bool // try what the script's hints say
	}{
		{"SIGINT", syscall.SIGINT, false, 130, true},
		{"SIGTERM", syscall.SIGTERM, false, 143, false},
		{"Ctrl-C", syscall.SIGINT, true, 130, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rl := startRunLocal(t, nil)
			rl.waitHealthy(t)
			gwPid, prosodyPid, dir := rl.children(t)
			ngircdPid, sandboxPid := rl.child(t, "ngircd"), rl.child(t, "sms-sandbox")

			alice := harness.Dial(t, rl.addr("c2s"), "alice@localhost", "alice-password", "runlocal")
			for _, d := range allDomains {
				r := alice.IQ(t, "get", d, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
				wantResult(t, r, "disco#info "+d)
				gateway := false
				for _, id := range r.Child("http://jabber.org/protocol/disco#info", "query").ChildrenNamed("", "identity") {
					gateway = gateway || id.Attr("category") == "gateway"
				}
				if !gateway {
					t.Errorf("%s has no gateway identity: %s", d, r)
				}
			}
			r := alice.IQ(t, "get", smsDomain, "<query xmlns='jabber:iq:register'/>")
			wantResult(t, r, "register get "+smsDomain)
			if formValues(r, "number") == nil {
				t.Errorf("%s registration form has no number field: %s", smsDomain, r)
			}
			bob, err := harness.DialErr(rl.addr("c2s"), "bob@localhost", "bob-password", "runlocal")
			if err != nil {
				t.Fatalf("bob logs in: %v", err)
			}
			bob.Close()
			alice.Close()
			if tc.demo {
				rl.tryDemo(t, dir)
			}

			if tc.group {
				rl.SignalGroup(tc.sig)
			} else {
				rl.Signal(tc.sig)
			}
			// The script has exited but is not reaped yet: whatever it
			// left running is still there to be seen.
			rl.waitExit(t, runLocalStop)
			if !strings.Contains(rl.output(), `msg="stopped cleanly"`) {
				t.Errorf("the gateway did not stop cleanly:\n%s", rl.output())
			}
			for name, pid := range map[string]int{"passerelle": gwPid, "prosody": prosodyPid, "ngircd": ngircdPid, "sms-sandbox": sandboxPid} {
				if harness.ProcAlive(pid) {
					t.Errorf("%s (pid %d) still runs after the script exited", name, pid)
				}
			}
			for _, name := range runLocalPorts {
				if c, err := net.DialTimeout("tcp", rl.addr(name), 5*time.Second); err == nil {
					c.Close()
					t.Errorf("%s port %s still accepts connections", name, rl.addr(name))
				}
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("temporary directory %s not removed (stat: %v)", dir, err)
			}
			if code := rl.Reap(); code != tc.wantCode {
				t.Errorf("exit code %d, want %d\n%s", code, tc.wantCode, rl.output())
			}
		})
	}
}

// TestRunLocalPortTaken: when the client port is taken, Prosody runs without
// it; the script must say so and exit non-zero, leaving nothing behind,
// instead of pointing the user at whatever holds the port.
func TestRunLocalPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	rl := startRunLocal(t, map[string]int{"c2s": taken})
	rl.waitExit(t, runLocalStart)
	code := rl.Reap()
	out := rl.output()
	if code != 1 {
		t.Errorf("exit code %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		fmt.Sprintf("Prosody did not start on 127.0.0.1:%d", taken),
		fmt.Sprintf("Failed to open server port %d", taken),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "log in as alice") {
		t.Errorf("the script announced a server it did not start:\n%s", out)
	}
	// The end of Prosody's log is shown under tail's "==> <dir>/prosody.log <==".
	dir := runLocalDirRE.FindString(out)
	if dir == "" {
		t.Fatalf("no temporary directory named in the output:\n%s", out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s not removed (stat: %v)", dir, err)
	}
}

// TestRunLocalNoProsody runs TestRunLocalPortTaken in a child test process
// whose PATH has no Prosody: it is skipped, or fails when CI is set.
func TestRunLocalNoProsody(t *testing.T) {
	if os.Getenv("RUNLOCAL_NO_PROSODY_CHILD") != "" {
		t.Skip("run by TestRunLocalNoProsody only")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range []string{"", "true"} {
		var env []string
		for _, kv := range os.Environ() {
			if name, _, _ := strings.Cut(kv, "="); name != "PATH" && name != "CI" {
				env = append(env, kv)
			}
		}
		env = append(env, "PATH="+t.TempDir(), "CI="+ci, "RUNLOCAL_NO_PROSODY_CHILD=1")
		cmd := exec.Command(exe, "-test.run=^TestRunLocalPortTaken$", "-test.v", "-test.count=1")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		want, wantErr := "--- SKIP: TestRunLocalPortTaken", false
		if ci != "" {
			want, wantErr = "--- FAIL: TestRunLocalPortTaken", true
		}
		if !strings.Contains(string(out), want) || !strings.Contains(string(out), "prosody is not installed") || (err != nil) != wantErr {
			t.Errorf("CI=%q: want %q about prosody, exit error %v; got error %v, output:\n%s", ci, want, wantErr, err, out)
		}
	}
}

// runLocal is one run of deploy/run-local.sh, the leader of its own process
// group.
type runLocal struct {
	*harness.Script
	out   lockedOutput   // the script's stdout and stderr
	ports map[string]int // runLocalPorts

	mu  sync.Mutex
	dir string // found by children, removed in the cleanup if left
}

// startRunLocal starts the script on random free ports (ports overrides some
// of them). The whole process group is SIGKILLed at the end of the test
// (harness.Script), and also when the test process dies.
func startRunLocal(t *testing.T, ports map[string]int) *runLocal {
	t.Helper()
	harness.RequireBinary(t, "prosody", "prosodyctl", "bash", "ngircd", "openssl")
	rl := &runLocal{ports: map[string]int{}}
	for _, name := range runLocalPorts {
		rl.ports[name] = ports[name]
		if rl.ports[name] == 0 {
			rl.ports[name] = harness.FreePort(t)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "PASSERELLE_") && !strings.HasPrefix(name, "LOCAL_") && name != "PATH" {
			env = append(env, kv)
		}
	}
	env = append(env,
		"PATH="+runLocalGoDir(t)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"LOCAL_C2S_PORT="+strconv.Itoa(rl.ports["c2s"]),
		"LOCAL_COMPONENT_PORT="+strconv.Itoa(rl.ports["component"]),
		"LOCAL_SMTP_PORT="+strconv.Itoa(rl.ports["smtp"]),
		"LOCAL_HTTP_PORT="+strconv.Itoa(rl.ports["http"]),
		"LOCAL_C2S_TLS_PORT="+strconv.Itoa(rl.ports["c2s_tls"]),
		"LOCAL_IRC_PORT="+strconv.Itoa(rl.ports["irc"]),
		"LOCAL_SMS_PORT="+strconv.Itoa(rl.ports["sms"]),
		"LOCAL_SMS_WEBHOOK_PORT="+strconv.Itoa(rl.ports["webhook"]),
	)
	// A test process started with SIGINT ignored (a non-interactive
	// shell's background job) would pass that on, and the script could
	// not trap it. Once this process handles SIGINT, exec gives the
	// script the default disposition. Ctrl-C was ignored here anyway.
	if signal.Ignored(os.Interrupt) {
		signal.Notify(make(chan os.Signal, 1), os.Interrupt)
	}
	cmd := exec.Command("bash", runLocalScript)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &rl.out, &rl.out
	rl.Script = harness.StartScript(t, cmd)
	t.Cleanup(func() { // runs before the Script's own cleanup
		rl.mu.Lock()
		dir := rl.dir
		rl.mu.Unlock()
		if dir == "" {
			// Not found yet (the test failed early): the go build, Prosody
			// or the gateway the script runs names it on its command line.
			for _, m := range rl.Group() {
				if d := runLocalDirRE.FindString(m.Cmdline); d != "" {
					dir = d
					break
				}
			}
		}
		rl.Reap()
		if dir != "" {
			if err := os.RemoveAll(dir); err != nil {
				t.Errorf("removing %s: %v", dir, err)
			}
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", runLocalScript, rl.output())
		}
	})
	return rl
}

// runLocalGoDir is the directory of the go command, which the script runs.
func runLocalGoDir(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return filepath.Dir(p)
	}
	const dir = "/usr/local/go/bin"
	if _, err := os.Stat(filepath.Join(dir, "go")); err != nil {
		t.Fatalf("no go command in PATH nor in %s", dir)
	}
	return dir
}

func (rl *runLocal) addr(name string) string {
	return fmt.Sprintf("127.0.0.1:%d", rl.ports[name])
}

func (rl *runLocal) output() string { return rl.out.String() }

// waitExit waits up to timeout for the script to exit, and fails the test
// when a process it started is still in its process group. It does not reap
// the script: Reap does.
func (rl *runLocal) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !rl.Exited() {
		if time.Now().After(deadline) {
			t.Fatalf("%s still runs %v after it was started or signalled\n%s", runLocalScript, timeout, rl.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := rl.Group(); len(left) > 0 {
		var b strings.Builder
		for _, m := range left {
			fmt.Fprintf(&b, "\n%d %s", m.Pid, m.Cmdline)
		}
		t.Errorf("processes left in the script's process group after it exited:%s", b.String())
	}
}

// waitHealthy waits until the gateway's /healthz answers 200 "ok".
func (rl *runLocal) waitHealthy(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + rl.addr("http") + "/healthz"
	deadline := time.Now().Add(runLocalStart)
	last := "no answer"
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				return
			}
			last = fmt.Sprintf("%d %q", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		if rl.Exited() {
			t.Fatalf("%s exited before %s answered ok (last: %s)\n%s", runLocalScript, url, last, rl.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer ok within %v (last: %s)\n%s", url, runLocalStart, last, rl.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// children finds the gateway and Prosody the script started, and the
// temporary directory they run in (the gateway's binary is built there, and
// Prosody writes its pid file there).
func (rl *runLocal) children(t *testing.T) (gwPid, prosodyPid int, dir string) {
	t.Helper()
	kids := map[int]bool{}
	for _, c := range rl.Children() {
		kids[c.Pid] = true
		if argv0, _, _ := strings.Cut(c.Cmdline, " "); filepath.Base(argv0) == "passerelle" {
			gwPid, dir = c.Pid, filepath.Dir(argv0)
		}
	}
	if gwPid == 0 {
		t.Fatalf("no passerelle process among the script's children\n%s", rl.output())
	}
	rl.mu.Lock()
	rl.dir = dir
	rl.mu.Unlock()
	if !strings.HasPrefix(dir, runLocalDirPrefix) {
		t.Fatalf("the gateway runs from %s, not from a %sXXXXXX directory", dir, runLocalDirPrefix)
	}
	b, err := os.ReadFile(filepath.Join(dir, "prosody.pid"))
	if err != nil {
		t.Fatalf("Prosody's pid file: %v", err)
	}
	prosodyPid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("Prosody's pid file holds %q", b)
	}
	if !kids[prosodyPid] {
		t.Fatalf("Prosody (pid %d from its pid file) is not a child of the script", prosodyPid)
	}
	return gwPid, prosodyPid, dir
}

// child returns the pid of the script's child running the named program.
func (rl *runLocal) child(t *testing.T, name string) int {
	t.Helper()
	for _, c := range rl.Children() {
		if argv0, _, _ := strings.Cut(c.Cmdline, " "); filepath.Base(argv0) == name {
			return c.Pid
		}
	}
	t.Fatalf("no %s process among the script's children\n%s", name, rl.output())
	return 0
}

// tryDemo does what the script's "try this" block says: a TLS login
// (STARTTLS and direct TLS) trusting the certificate the script made, the
// IRC room on the local IRC server, and texts both ways through the SMS
// sandbox.
func (rl *runLocal) tryDemo(t *testing.T, dir string) {
	t.Helper()
	out := rl.output()
	for _, want := range []string{
		"alice@localhost / alice-password",
		fmt.Sprintf("port %d (STARTTLS) or %d (direct TLS)", rl.ports["c2s"], rl.ports["c2s_tls"]),
		fmt.Sprintf("swaks --server 127.0.0.1:%d --to alice@mail.localhost", rl.ports["smtp"]),
		"#demo%localhost@irc.localhost",
		"/cmd exec settings",
		fmt.Sprintf("ports=%d", rl.ports["irc"]),
		fmt.Sprintf("curl -d from=15557654321 -d to=15550001111 -d body=hello http://127.0.0.1:%d/send", rl.ports["sms"]),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the hints do not say %q:\n%s", want, out)
		}
	}

	pem, err := os.ReadFile(filepath.Join(dir, "certs", "localhost.crt"))
	if err != nil {
		t.Fatalf("the demo certificate: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("the demo certificate does not parse:\n%s", pem)
	}
	// A client that accepted the certificate trusts it for localhost.
	tlsConf := &tls.Config{ServerName: "localhost", RootCAs: roots}
	var peer tls.ConnectionState
	alice := harness.DialWith(t, rl.addr("c2s"), "alice@localhost", "alice-password", "starttls", harness.DialOptions{TLS: tlsConf, Peer: &peer})
	if !peer.HandshakeComplete {
		t.Fatalf("STARTTLS login without TLS")
	}
	peer = tls.ConnectionState{}
	bob := harness.DialWith(t, rl.addr("c2s_tls"), "bob@localhost", "bob-password", "directtls", harness.DialOptions{TLS: tlsConf, DirectTLS: true, Peer: &peer})
	if !peer.HandshakeComplete {
		t.Fatalf("direct TLS login without TLS")
	}

	t.Run("irc room", func(t *testing.T) {
		room := "#demo%localhost@" + ircDomain
		for _, c := range []*harness.Client{alice, bob} {
			wantResult(t, configureNetwork(t, c, "localhost", "ports", strconv.Itoa(rl.ports["irc"]), "tls_ports", ""), "configure the local IRC server")
		}
		alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX())
		alice.Expect(t, wait, "alice in the room", occupant(room+"/alice", "", "110"))
		bob.Send(t, "<presence to='%s/bob'>%s</presence>", harness.Esc(room), mucX())
		bob.Expect(t, wait, "bob in the room", occupant(room+"/bob", "", "110"))
		alice.Expect(t, wait, "bob joins", occupant(room+"/bob", ""))
		alice.Send(t, "<message to='%s' type='groupchat' id='demo1'><body>hello from alice</body><origin-id xmlns='urn:xmpp:sid:0' id='origin-demo1'/></message>", harness.Esc(room))
		r := alice.Expect(t, wait, "alice's reflection", withID("demo1"))
		if o := r.Child("urn:xmpp:sid:0", "origin-id"); o == nil || o.Attr("id") != "origin-demo1" {
			t.Errorf("the reflection lacks the origin-id: %s", r)
		}
		bob.Expect(t, wait, "alice's message", harness.MessageFrom(room+"/alice", "hello from alice"))
		bob.Send(t, "<message to='%s' type='groupchat' id='demo2'><body>hello from bob</body></message>", harness.Esc(room))
		alice.Expect(t, wait, "bob's message", harness.MessageFrom(room+"/bob", "hello from bob"))
		copies := 0
		for _, el := range alice.Received() {
			if harness.IsMessage(el) && el.ChildText("", "body") == "hello from alice" {
				copies++
			}
		}
		if copies != 1 {
			t.Errorf("alice got her message %d times", copies)
		}
	})

	t.Run("sms both ways", func(t *testing.T) {
		// Registered through the ad-hoc command the hints give for
		// clients without a registration form (Profanity).
		r := alice.IQ(t, "set", smsDomain, "<command xmlns='http://jabber.org/protocol/commands' node='settings' action='execute'/>")
		wantResult(t, r, "settings first step")
		sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
		r = alice.IQ(t, "set", smsDomain, "<command xmlns='http://jabber.org/protocol/commands' node='settings' sessionid='"+sid+"' action='complete'>"+
			submitForm("", "number", "+15550001111")+"</command>")
		wantResult(t, r, "alice claims the demo number with the settings command")
		acceptGateway(t, alice, smsDomain)
		peer := "+15557654321@" + smsDomain
		// In: the command the hints give.
		resp, err := http.PostForm(fmt.Sprintf("http://127.0.0.1:%d/send", rl.ports["sms"]),
			url.Values{"from": {"15557654321"}, "to": {"15550001111"}, "body": {"hello from a phone"}})
		if err != nil {
			t.Fatalf("send a text to the gateway: %v", err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the sandbox answered %d: %s", resp.StatusCode, answer)
		}
		alice.Expect(t, wait, "the text", harness.MessageFrom(peer, "hello from a phone"))
		// Out: logged by the sandbox and reported delivered.
		sendText(t, alice, peer, "demo-sms", "hello from xmpp", true)
		alice.Expect(t, wait, "the delivery receipt", receiptFor(peer, "demo-sms"))
		want := `msg="text sent" from=+15550001111 to=+15557654321 body="hello from xmpp"`
		if !strings.Contains(rl.output(), want) {
			t.Errorf("the sandbox did not log %s:\n%s", want, rl.output())
		}
	})
	alice.Close()
	bob.Close()
}

// TestRunLocalMissingPrerequisites: without root's apt-get, the script
// names what is missing and the apt-get line that installs it, or where to
// get Go, and exits 1 before building anything.
func TestRunLocalMissingPrerequisites(t *testing.T) {
	harness.RequireBinary(t, "bash", "gcc", "openssl", "prosody", "ngircd")
	for _, c := range []struct {
		tools []string // in PATH; apt-get never is
		want  string
	}{
		{[]string{"dirname", "id", "gcc", "openssl", "prosody"}, "sudo apt-get install --no-install-recommends ngircd"},
		{[]string{"dirname", "id", "openssl", "ngircd"}, "sudo apt-get install --no-install-recommends gcc prosody"},
		{[]string{"dirname", "id", "sed", "gcc", "openssl", "prosody", "ngircd"}, "missing: Go 1."},
	} {
		bin := t.TempDir()
		for _, tool := range c.tools {
			p, err := exec.LookPath(tool)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
				t.Fatal(err)
			}
		}
		bash, err := exec.LookPath("bash")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bash, runLocalScript)
		cmd.Env = []string{"PATH=" + bin, "HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), c.want) {
			t.Errorf("with %v: %v, want exit 1 saying %q:\n%s", c.tools, err, c.want, out)
		}
		if strings.Contains(string(out), runLocalDirPrefix) {
			t.Errorf("with %v: a temporary directory was made:\n%s", c.tools, out)
		}
	}
}
