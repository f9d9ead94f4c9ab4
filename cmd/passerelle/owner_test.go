package main

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
	"passerelle/store/pgtest"
)

// takeover bounds the wait for a killed instance's users to come back on
// another: its lease (30 s), the survivor's renewal period (10 s) and
// room for a loaded machine.
const takeover = 90 * time.Second

// TestOwnerTakeover: two gateway instances on one PostgreSQL database,
// both connected to one ejabberd for the IRC domain. Alice's persistent
// channel is held by the first; the second, started later, leaves her to
// it. The first is killed (SIGKILL): the second takes her up once its
// lease ended and rejoins her persistent channel on ngircd without any
// stanza from her; her next join and message go through it.
func TestOwnerTakeover(t *testing.T) {
	first, env, alice, bob, keep := aliceKeeps(t)
	// The second instance: alice is held by the first.
	env2 := maps.Clone(env)
	env2["PASSERELLE_HTTP_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	second := harness.StartGateway(t, first.bin, env2)
	second.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+ircDomain)
	second.WaitOutput(t, wait, `msg="users held by other instances are left to them" component=`+ircDomain+` users=1`)
	if held := metric(t, env2, "passerelle_users_held"); held != "0" {
		t.Fatalf("the second instance holds %s users, want 0", held)
	}
	if held := metric(t, env, "passerelle_users_held"); held != "1" {
		t.Fatalf("the first instance holds %s users, want 1", held)
	}

	first.gw.Signal(syscall.SIGKILL)
	first.gw.Wait(t, wait)
	bob.expect(t, " QUIT ")
	second.WaitOutput(t, takeover, `msg="took up users of instances gone or handed over" component=`+ircDomain+` users=1`)
	bob.find(t, takeover, "alice rejoining #keep", false, func(l string) bool {
		return strings.HasPrefix(l, ":alice!") && strings.Contains(l, "JOIN")
	})
	// Her client joins again (the first instance died without telling it
	// she left): the second instance holds her now.
	alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(keep), mucX())
	alice.Expect(t, wait, "joined #keep again", occupant(keep+"/alice", "", "110"))
	alice.Send(t, "<message to='%s' type='groupchat' id='m1'><body>from the second instance</body></message>", harness.Esc(keep))
	bob.expect(t, "PRIVMSG #keep :from the second instance")
	if held := metric(t, env2, "passerelle_users_held"); held != "1" {
		t.Fatalf("the second instance holds %s users, want 1", held)
	}
	if strings.Contains(second.Output(), "level=ERROR") {
		t.Errorf("errors logged by the second instance:\n%s", second.Output())
	}
}

// aliceKeeps starts ngircd, ejabberd for the IRC domain and a first
// gateway instance on a PostgreSQL database, where alice joins #keep,
// persistent, with bob in it on IRC. It returns the instance, its
// environment, alice's client, bob and the room's JID.
func aliceKeeps(t *testing.T) (first *gwEnv, env map[string]string, alice *harness.Client, bob *ircPeer, keep string) {
	t.Helper()
	url := instancesDB(t)
	ng := harness.StartNgircd(t)
	_, port, _ := net.SplitHostPort(ng.Addr)
	srv := harness.StartEjabberd(t, harness.ServerOptions{Domain: "localhost", Components: []string{ircDomain}})
	env = map[string]string{
		"PASSERELLE_XMPP_ADDR":         srv.ComponentAddr(),
		"PASSERELLE_XMPP_SECRET":       srv.Secret(),
		"PASSERELLE_DB":                url,
		"PASSERELLE_IRC_DOMAIN":        ircDomain,
		"PASSERELLE_IRC_ALLOW_PRIVATE": "true",
		"PASSERELLE_LOG_LEVEL":         "info",
		"PASSERELLE_HTTP_LISTEN":       fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
	}
	first = startGateway(t, srv, env)
	alice = first.dial(t, "alice@localhost")
	wantResult(t, configureNetwork(t, alice, "localhost", "ports", port, "tls_ports", "", "verify_cert", "true"), "configure")
	bob = dialIRC(t, ng.Addr, "bob")
	bob.send(t, "JOIN #keep")
	bob.expect(t, "366")
	keep = "#keep%localhost@" + ircDomain
	r := alice.IQ(t, "set", keep, "<command xmlns='http://jabber.org/protocol/commands' node='configure' action='execute'/>")
	wantResult(t, r, "channel configure")
	sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
	wantResult(t, alice.IQ(t, "set", keep, "<command xmlns='http://jabber.org/protocol/commands' node='configure' sessionid='"+sid+"' action='complete'>"+
		submitForm("", "persistent", "true")+"</command>"), "channel configure submit")
	alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(keep), mucX())
	alice.Expect(t, wait, "joined #keep", occupant(keep+"/alice", "", "110"))
	bob.expect(t, ":alice!")

	return first, env, alice, bob, keep
}

// instancesDB returns a PostgreSQL database for several instances: in
// the cluster of the PASSERELLE_TEST_DB=postgres pass, else in one of the
// test's own.
func instancesDB(t *testing.T) string {
	if testCluster != nil {
		return testCluster.DB(t)
	}
	return pgtest.New(t).DB(t)
}

// metric returns the value of the gateway's series name for the IRC
// domain on /metrics.
func metric(t *testing.T, env map[string]string, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + env["PASSERELLE_HTTP_LISTEN"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+`{domain="`+ircDomain+`"`) {
			return l[strings.LastIndexByte(l, ' ')+1:]
		}
	}
	t.Fatalf("no %s for %s in:\n%s", name, ircDomain, b)
	return ""
}

// TestFrozenInstance: two gateway instances on one PostgreSQL database
// and one ejabberd, alice's persistent channel held by the first. The
// first is frozen (SIGSTOP) past its lease: the second takes alice up and
// rejoins her channel under another nick (ngircd still gives hers to the
// frozen connection). Bob writes to her nick meanwhile. Resumed
// (SIGCONT), the first must not act for her any more: it closes her IRC
// connection without writing a line (ngircd reports the connection
// closed, not the gateway's QUIT), does not deliver bob's line, and lets
// go of her before its renewal.
func TestFrozenInstance(t *testing.T) {
	first, env, alice, bob, _ := aliceKeeps(t)
	bob.send(t, "PRIVMSG alice :before the freeze")
	alice.Expect(t, wait, "bob's line before the freeze", func(e *xmlel.Element) bool {
		return harness.IsMessage(e) && strings.Contains(e.ChildText("", "body"), "before the freeze")
	})

	env2 := maps.Clone(env)
	env2["PASSERELLE_HTTP_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	second := harness.StartGateway(t, first.bin, env2)
	second.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+ircDomain)
	second.WaitOutput(t, wait, `msg="users held by other instances are left to them" component=`+ircDomain+` users=1`)

	first.gw.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	t.Cleanup(func() { first.gw.Signal(syscall.SIGCONT) })
	if !waitUntil(wait, func() bool { return processState(first.gw.Cmd.Process.Pid) == "T" }) {
		t.Fatal("the first instance did not stop")
	}
	bob.send(t, "PRIVMSG alice :during the freeze")
	duringFreeze := func() int {
		return countReceived(alice, func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && strings.Contains(e.ChildText("", "body"), "during the freeze")
		})
	}
	second.WaitOutput(t, takeover, `msg="took up users of instances gone or handed over" component=`+ircDomain+` users=1`)
	bob.find(t, takeover, "alice rejoining #keep from the second instance", false, func(l string) bool {
		return strings.HasPrefix(l, ":alice_!") && strings.Contains(l, "JOIN")
	})
	t.Logf("the second instance took alice up and rejoined her channel %v after the freeze", time.Since(stopped).Round(time.Millisecond))

	if n := duringFreeze(); n > 0 {
		t.Fatalf("bob's line to the frozen connection reached alice %d times before the resume", n)
	}
	first.gw.Signal(syscall.SIGCONT)
	resumed := time.Now()
	quit := bob.find(t, wait, "the frozen connection's end", false, func(l string) bool {
		return strings.HasPrefix(l, ":alice!") && strings.Contains(l, " QUIT ")
	})
	var quitAt time.Time
	for _, l := range bob.stampedLines() {
		if l.line == quit {
			quitAt = l.at
		}
	}
	t.Logf("resumed, the first instance's connection ended %v later: %q", quitAt.Sub(resumed).Round(time.Millisecond), quit)
	if strings.Contains(quit, "Passerelle") {
		t.Errorf("the resumed instance wrote a QUIT on a connection it no longer held: %q", quit)
	}
	first.gw.WaitOutput(t, wait, `msg="let go of every user: the lease ended before it was renewed`)
	first.gw.WaitOutput(t, wait, `msg="joined the instances again under a new name"`)
	out := first.gw.Output()
	if l, j := strings.Index(out, "let go of every user"), strings.Index(out, "joined the instances again"); l > j {
		t.Errorf("the resumed instance renewed before it let go:\n%s", out)
	}
	// Whatever it would deliver has had the time to arrive.
	time.Sleep(3 * time.Second)
	if n := duringFreeze(); n > 0 {
		t.Errorf("bob's line to the frozen connection was delivered %d times by the resumed instance", n)
	}
	if held := metric(t, env, "passerelle_users_held"); held != "0" {
		t.Errorf("the resumed instance holds %s users, want 0", held)
	}
	if held := metric(t, env2, "passerelle_users_held"); held != "1" {
		t.Errorf("the second instance holds %s users, want 1", held)
	}
}

// processState returns the state letter of process pid ("T": stopped;
// "" when it cannot be read).
func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+3 > len(b) {
		return ""
	}
	return string(b[i+2 : i+3])
}
