package main

// End-to-end tests of IRC contacts' presence and vCards: Prosody with
// mod_privilege configured from deploy/prosody.cfg.lua, the built gateway,
// a real c2s client and ngircd 26.1, which offers neither MONITOR nor
// away-notify: the gateway polls with ISON and USERHOST, and asks WHOIS
// for the away message and the realname.

import (
	"net"
	"strings"
	"syscall"
	"testing"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// contactPresence matches a presence from jid of type typ with show and
// status.
func contactPresence(jid, typ, show, status string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return harness.IsPresence(e) && e.Attr("from") == jid && e.Attr("type") == typ &&
			e.ChildText("", "show") == show && e.ChildText("", "status") == status
	}
}

// startIRCPresence starts ngircd, Prosody (with the shipped deploy config
// when deploy) and the gateway with the IRC bridge only, polling every
// second; alice is registered with a nick and in #presence on ngircd.
func startIRCPresence(t *testing.T, deploy bool) (e *gwEnv, alice *harness.Client, ngircd *harness.Ngircd) {
	t.Helper()
	ngircd = harness.StartNgircd(t)
	_, port, _ := net.SplitHostPort(ngircd.Addr)
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, Deploy: deploy})
	env := baseEnv(t, srv)
	delete(env, "PASSERELLE_EMAIL_DOMAIN")
	delete(env, "PASSERELLE_SMS_DOMAIN")
	env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
	env["PASSERELLE_IRC_PRESENCE_POLL"] = "1s"
	e = startGateway(t, srv, env)
	if deploy {
		e.gw.WaitOutput(t, wait, grantedLine+ircDomain+" server=localhost namespace=urn:xmpp:privilege:2 roster=both message=outgoing presence=roster")
	}
	alice = e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, ircDomain, "nick", "alice"), "register with irc")
	acceptGateway(t, alice, ircDomain)
	wantResult(t, configureNetwork(t, alice, "localhost", "ports", port, "tls_ports", ""), "configure the network")
	room := "#presence%localhost@" + ircDomain
	alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX())
	alice.Expect(t, wait, "self-presence in the room", occupant(room+"/alice", "", "110"))
	return e, alice, ngircd
}

func TestIRCContactPresence(t *testing.T) {
	e, alice, ngircd := startIRCPresence(t, true)
	bobJID := "bob%localhost@" + ircDomain
	bob := dialIRC(t, ngircd.Addr, "bob") // realname "raw peer"
	bob.send(t, "PRIVMSG alice :hello alice")
	alice.Expect(t, wait, "bob's message", harness.MessageFrom(bobJID, "hello alice"))
	alice.Expect(t, wait, "the roster push of bob", rosterPush(bobJID, "both"))

	t.Run("online", func(t *testing.T) {
		alice.Expect(t, wait, "bob available", contactPresence(bobJID, "", "", ""))
	})

	t.Run("away with the away message", func(t *testing.T) {
		bob.send(t, "AWAY :gone fishing")
		bob.expect(t, " 306 ")
		alice.Expect(t, wait, "bob away", contactPresence(bobJID, "", "away", "gone fishing"))
	})

	t.Run("a new resource's probe is answered", func(t *testing.T) {
		phone := harness.Dial(t, e.srv.C2SAddr(), "alice@localhost", e.passwords["alice@localhost"], "phone")
		phone.Expect(t, wait, "bob away, on the new resource", contactPresence(bobJID, "", "away", "gone fishing"))
		phone.Close()
	})

	t.Run("back", func(t *testing.T) {
		bob.send(t, "AWAY")
		bob.expect(t, " 305 ")
		alice.Expect(t, wait, "bob back", contactPresence(bobJID, "", "", ""))
	})

	t.Run("vCard with the realname", func(t *testing.T) {
		v := vCard(t, alice, bobJID) // the realname cached from the away check
		if v.ChildText("", "FN") != "raw peer" || v.ChildText("", "NICKNAME") != "bob" {
			t.Fatalf("bob's vCard: %s", v)
		}
		dialIRC(t, ngircd.Addr, "dave") // neither a contact nor cached: a WHOIS
		v = vCard(t, alice, "dave%localhost@"+ircDomain)
		if v.ChildText("", "FN") != "raw peer" || v.ChildText("", "NICKNAME") != "dave" {
			t.Fatalf("dave's vCard: %s", v)
		}
		r := alice.IQ(t, "get", "nobody%localhost@"+ircDomain, "<vCard xmlns='vcard-temp'/>")
		wantError(t, r, "item-not-found", "the vCard of a nick nobody has")
	})

	t.Run("offline", func(t *testing.T) {
		bob.send(t, "QUIT :bye")
		alice.Expect(t, wait, "bob unavailable", contactPresence(bobJID, "unavailable", "", ""))
	})

	t.Run("a nick that comes back", func(t *testing.T) {
		dialIRC(t, ngircd.Addr, "bob")
		alice.Expect(t, wait, "bob available again", contactPresence(bobJID, "", "", ""))
	})

	// The gateway learns that alice came online from the presence the
	// server forwards (XEP-0356 presence permission): when it started,
	// and when it restarts, it probes nobody.
	t.Run("presence permission: no probes", func(t *testing.T) {
		e.gw.WaitOutput(t, wait, `msg="a user came online" component=`+ircDomain+` user=alice@localhost`)
		e.gw.Signal(syscall.SIGTERM)
		e.gw.Wait(t, wait)
		e.gw = harness.StartGateway(t, e.bin, e.env)
		e.gw.WaitOutput(t, wait, `msg="asked for the presence of registered users" component=`+ircDomain+` probed=0 forwarded_by_the_server=1`)
		e.gw.WaitOutput(t, wait, `msg="a user came online" component=`+ircDomain+` user=alice@localhost`)
	})
}

// Without the presence permission the gateway probes its registered users
// when it connects, and learns from the answer that alice is online.
func TestIRCContactPresenceProbes(t *testing.T) {
	e, _, _ := startIRCPresence(t, false)
	e.gw.Signal(syscall.SIGTERM)
	e.gw.Wait(t, wait)
	e.gw = harness.StartGateway(t, e.bin, e.env)
	e.gw.WaitOutput(t, wait, `msg="asked for the presence of registered users" component=`+ircDomain+` probed=1 forwarded_by_the_server=0`)
	e.gw.WaitOutput(t, wait, `msg="a user came online" component=`+ircDomain+` user=alice@localhost`)
	if strings.Contains(e.gw.Output(), "granted privileges") {
		t.Fatal("privileges logged from a server that granted none")
	}
}
