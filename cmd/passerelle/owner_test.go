package main

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
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
	url := instancesDB(t)
	ng := harness.StartNgircd(t)
	_, port, _ := net.SplitHostPort(ng.Addr)
	srv := harness.StartEjabberd(t, harness.ServerOptions{Domain: "localhost", Components: []string{ircDomain}})
	env := map[string]string{
		"PASSERELLE_XMPP_ADDR":         srv.ComponentAddr(),
		"PASSERELLE_XMPP_SECRET":       srv.Secret(),
		"PASSERELLE_DB":                url,
		"PASSERELLE_IRC_DOMAIN":        ircDomain,
		"PASSERELLE_IRC_ALLOW_PRIVATE": "true",
		"PASSERELLE_LOG_LEVEL":         "info",
		"PASSERELLE_HTTP_LISTEN":       fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
	}
	first := startGateway(t, srv, env)
	alice := first.dial(t, "alice@localhost")
	wantResult(t, configureNetwork(t, alice, "localhost", "ports", port, "tls_ports", "", "verify_cert", "true"), "configure")
	bob := dialIRC(t, ng.Addr, "bob")
	bob.send(t, "JOIN #keep")
	bob.expect(t, "366")
	keep := "#keep%localhost@" + ircDomain
	r := alice.IQ(t, "set", keep, "<command xmlns='http://jabber.org/protocol/commands' node='configure' action='execute'/>")
	wantResult(t, r, "channel configure")
	sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
	wantResult(t, alice.IQ(t, "set", keep, "<command xmlns='http://jabber.org/protocol/commands' node='configure' sessionid='"+sid+"' action='complete'>"+
		submitForm("", "persistent", "true")+"</command>"), "channel configure submit")
	alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(keep), mucX())
	alice.Expect(t, wait, "joined #keep", occupant(keep+"/alice", "", "110"))
	bob.expect(t, ":alice!")

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
