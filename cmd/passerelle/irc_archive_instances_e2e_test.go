package main

// TestIRCArchiveInstances: two gateway instances on one PostgreSQL
// database behind one ejabberd (domain_balancing from
// deploy/ejabberd-instances.yml), with users of one channel on both. Each
// instance gets the channel's lines through its users' connections; the
// channel's archive holds each line once, each user's MAM query returns
// it once, and the users' copies of a line carry one archive id.

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
)

func TestIRCArchiveInstances(t *testing.T) {
	url := instancesDB(t)
	ng := harness.StartNgircd(t)
	_, port, _ := net.SplitHostPort(ng.Addr)
	srv := harness.StartEjabberd(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, DeployInstances: true})
	bin := harness.BuildBinary(t)
	insts := make([]*instance, 2)
	start := func(i int) {
		in := &instance{name: fmt.Sprintf("gw%d", i), env: map[string]string{
			"PASSERELLE_XMPP_ADDR":         srv.ComponentAddr(),
			"PASSERELLE_XMPP_SECRET":       srv.Secret(),
			"PASSERELLE_DB":                url,
			"PASSERELLE_IRC_DOMAIN":        ircDomain,
			"PASSERELLE_IRC_ALLOW_PRIVATE": "true",
			"PASSERELLE_LOG_LEVEL":         "info",
			"PASSERELLE_HTTP_LISTEN":       fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		}}
		in.gw = harness.StartGateway(t, bin, in.env)
		in.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+ircDomain)
		insts[i] = in
	}
	// slots waits until the instances hold held of ejabberd's three
	// balancing slots for the domain.
	slots := func(held ...int) {
		t.Helper()
		var got []int
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			got = got[:0]
			for _, in := range insts[:len(held)] {
				got = append(got, in.gauge("passerelle_slots_held", ircDomain))
			}
			if slices.Equal(got, held) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("slots held by the instances: %v, want %v", got, held)
			}
		}
	}
	// The slots settle before the users come, so that none of them
	// moves to the other instance during the test: the first instance
	// takes all three, and hands one back when the second joins.
	start(0)
	slots(3)
	start(1)
	insts[0].gw.WaitOutput(t, 90*time.Second, `msg="an instance joined: handing a balancing slot back`)
	slots(2, 1)

	bob := dialIRC(t, ng.Addr, "bob")
	bob.send(t, "JOIN #both")
	bob.expect(t, "366")
	room := "#both%localhost@" + ircDomain
	// One user in each slot (see TestSeveralInstances): each instance
	// serves one at least.
	users := []string{"u1", "u0", "u6"}
	clients := make([]*harness.Client, len(users))
	for i, u := range users {
		jid := u + "@localhost"
		c := harness.Dial(t, srv.C2SAddr(), jid, srv.AddUser(t, jid), "test")
		clients[i] = c
		wantResult(t, configureNetwork(t, c, "localhost", "ports", port, "tls_ports", ""), u+" configures the network")
		c.Send(t, "<presence to='%s/%s'>%s</presence>", harness.Esc(room), u, mucX())
		c.Expect(t, wait, u+" in #both", occupant(room+"/"+u, "", "110"))
		bob.expect(t, ":"+u+"!")
	}
	owner := servedBy(insts, "irc connection registered")[ircDomain]
	per := make([]int, len(insts))
	for _, u := range users {
		i, ok := owner[u+"@localhost"]
		if !ok {
			t.Fatalf("no instance logged the irc connection of %s", u)
		}
		per[i]++
	}
	t.Logf("irc connections held by gw0, gw1: %v", per)
	if per[0] == 0 || per[1] == 0 {
		t.Fatalf("irc connections held by gw0, gw1: %v; the test needs users on both", per)
	}

	// sids waits for each user's copy of the next message from nick with
	// body in the room, and returns their stanza-ids.
	sids := func(nick, body string) []string {
		t.Helper()
		var ids []string
		for _, c := range clients {
			m := c.Expect(t, wait, body, harness.MessageFrom(room+"/"+nick, body))
			ids = append(ids, m.Child("urn:xmpp:sid:0", "stanza-id").Attr("id"))
		}
		return ids
	}
	oneID := func(what string, ids []string) string {
		t.Helper()
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Errorf("%s: the users' copies have the stanza-ids %v, want one archive id", what, ids)
			}
		}
		return ids[0]
	}
	// "ok" twice in a row, within a second: two lines.
	for _, l := range []string{"one", "ok", "ok", "two"} {
		bob.send(t, "PRIVMSG #both :%s", l)
	}
	var got []string
	for _, l := range []string{"one", "ok", "ok", "two"} {
		got = append(got, oneID(l, sids("bob", l)))
	}
	if got[1] == got[2] {
		t.Errorf("ok said twice: one archive id %s", got[1])
	}
	// A user's own messages, one of two IRC lines: the sender's instance
	// archives them as sent, the other gets them from IRC.
	sender := clients[0]
	sender.Send(t, "<message type='groupchat' to='%s' id='m1'><body>from u1</body></message>", harness.Esc(room))
	bob.expect(t, "PRIVMSG #both :from u1")
	sender.Send(t, "<message type='groupchat' to='%s' id='m2'><body>three\nfour</body></message>", harness.Esc(room))
	bob.expect(t, "PRIVMSG #both :four")
	bob.send(t, "PRIVMSG #both :five")
	for _, c := range clients {
		c.Expect(t, wait, "five", harness.MessageFrom(room+"/bob", "five"))
	}

	// Each line once in each user's archive, whichever instance got it
	// first (the two-line message is one entry, or its two lines when
	// the other instance archived them before the sender's did).
	const want = "one ok ok two from u1 three four five"
	for i, c := range clients {
		p := roomArchive(t, c, room, "")
		if s := strings.ReplaceAll(p.String(), "\n", " "); s != want || !p.complete() {
			t.Errorf("%s (on gw%d)'s archive: %q, fin %v; want %q", users[i], owner[users[i]+"@localhost"], p, p.fin, want)
		}
	}
	// No user's connection moved during the test (its copies would
	// then be another connection's, and the join's history replayed).
	for _, u := range users {
		re := regexp.MustCompile(`msg="irc connection registered".* user=` + u + `@localhost\b`)
		n := 0
		for _, in := range insts {
			n += len(re.FindAllString(in.gw.Output(), -1))
		}
		if n != 1 {
			t.Errorf("%s's irc connection registered %d times, want once", u, n)
		}
	}
	for _, in := range insts {
		if strings.Contains(in.gw.Output(), "cannot archive") {
			t.Errorf("%s could not archive a line:\n%s", in.name, in.gw.Output())
		}
	}
}
