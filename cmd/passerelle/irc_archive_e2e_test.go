package main

// End-to-end test of the queries on a channel's archive: MAM paging
// from the end, the date and with filters, refused queries, and the
// history a join asks for.

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// mamPage is the answer to a MAM query: the bodies, oldest first, the fin
// element, and the reply (for errors).
type mamPage struct {
	bodies []string
	fin    *xmlel.Element
	reply  *xmlel.Element
}

func (p mamPage) String() string { return strings.Join(p.bodies, " ") }

func (p mamPage) complete() bool { return p.fin != nil && p.fin.Attr("complete") == "true" }

func (p mamPage) first() string {
	return p.fin.Child("http://jabber.org/protocol/rsm", "set").ChildText("", "first")
}

// roomArchive sends a MAM query with the payload inside <query/> to room.
func roomArchive(t *testing.T, c *harness.Client, room, payload string) mamPage {
	t.Helper()
	qid := fmt.Sprintf("a%d", time.Now().UnixNano())
	r := c.IQ(t, "set", room, "<query xmlns='"+nsMAM+"' queryid='"+qid+"'>"+payload+"</query>")
	p := mamPage{reply: r, fin: r.Child(nsMAM, "fin")}
	for _, el := range c.Received() {
		if x := el.Child(nsMAM, "result"); x != nil && x.Attr("queryid") == qid {
			p.bodies = append(p.bodies, x.Child(nsForward, "forwarded").Child("jabber:client", "message").ChildText("", "body"))
		}
	}
	return p
}

func rsmSet(set string) string {
	return "<set xmlns='http://jabber.org/protocol/rsm'>" + set + "</set>"
}

// archiveSetup starts ngircd, Prosody and the gateway, and dials the
// users, each with the network localhost pointed at ngircd.
func archiveSetup(t *testing.T, users ...string) (harness.Server, *harness.Ngircd, *gwEnv, []*harness.Client) {
	ngircd := harness.StartNgircd(t)
	_, portStr, _ := net.SplitHostPort(ngircd.Addr)
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: allDomains})
	env := baseEnv(t, srv)
	env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
	e := startGateway(t, srv, env)
	var cs []*harness.Client
	for _, u := range users {
		c := e.dial(t, u)
		wantResult(t, configureNetwork(t, c, "localhost", "ports", portStr, "tls_ports", ""), "configure the network")
		cs = append(cs, c)
	}
	return srv, ngircd, e, cs
}

func TestIRCArchiveQueries(t *testing.T) {
	srv, ngircd, e, users := archiveSetup(t, "alice@localhost")
	alice := users[0]
	room := "#arch%localhost@" + ircDomain
	bob := dialIRC(t, ngircd.Addr, "bob")
	carol := dialIRC(t, ngircd.Addr, "carol")
	for _, p := range []*ircPeer{bob, carol} {
		p.send(t, "JOIN #arch")
		p.expect(t, "366")
	}
	alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX())
	alice.Expect(t, wait, "self-presence in #arch", occupant(room+"/alice", "", "110"))
	bob.expect(t, "JOIN :#arch")
	// Each message reached alice, so it was archived, before the next.
	for _, m := range []struct {
		from *ircPeer
		body string
	}{{bob, "one"}, {carol, "two"}, {bob, "three"}, {bob, "four"}} {
		m.from.send(t, "PRIVMSG #arch :%s", m.body)
		alice.Expect(t, wait, m.body, harness.MessageFrom(room+"/"+m.from.nick, m.body))
	}

	t.Run("paging from the end", func(t *testing.T) {
		last := roomArchive(t, alice, room, rsmSet("<max>2</max><before/>"))
		if last.String() != "three four" || last.complete() {
			t.Fatalf("the last page: %q, fin %s", last, last.fin)
		}
		before := roomArchive(t, alice, room, rsmSet("<max>10</max><before>"+last.first()+"</before>"))
		if before.String() != "one two" || !before.complete() {
			t.Errorf("the page before: %q, fin %s", before, before.fin)
		}
	})

	t.Run("filters", func(t *testing.T) {
		for _, c := range []struct {
			fields []string
			want   string
		}{
			{[]string{"with", room + "/BOB"}, "one three four"},
			{[]string{"with", "bob@localhost"}, ""},
			{[]string{"start", "2000-01-01T00:00:00Z", "end", "2100-01-01T00:00:00Z"}, "one two three four"},
			{[]string{"start", "2100-01-01T00:00:00Z"}, ""},
			{[]string{"end", "2000-01-01T00:00:00Z"}, ""},
			{[]string{"start", "2000-01-01T00:00:00Z", "with", room + "/carol"}, "two"},
		} {
			p := roomArchive(t, alice, room, submitForm(nsMAM, c.fields...))
			wantResult(t, p.reply, fmt.Sprint("query with ", c.fields))
			if p.String() != c.want || !p.complete() {
				t.Errorf("%v: %q, fin %s", c.fields, p, p.fin)
			}
		}
	})

	t.Run("refused queries", func(t *testing.T) {
		wantError(t, roomArchive(t, alice, room, submitForm(nsMAM, "start", "yesterday")).reply, "bad-request", "a bad date")
		wantError(t, roomArchive(t, alice, room, submitForm(nsMAM, "with", "not a jid")).reply, "bad-request", "a bad with")
		wantError(t, roomArchive(t, alice, room, rsmSet("<after>x</after>")).reply, "item-not-found", "a bad RSM id")
		wantError(t, roomArchive(t, alice, room, rsmSet("<before>x</before>")).reply, "item-not-found", "a bad RSM id")
	})

	t.Run("join history", func(t *testing.T) {
		for i, c := range []struct{ history, want string }{
			{"<history maxstanzas='2'/>", "three four"},
			{"<history seconds='3600'/>", "one two three four"},
			{"<history since='2100-01-01T00:00:00Z'/>", ""},
			{"<history maxchars='0'/>", ""},
		} {
			res := fmt.Sprintf("h%d", i)
			c2 := harness.Dial(t, srv.C2SAddr(), "alice@localhost", e.passwords["alice@localhost"], res)
			c2.Send(t, "<presence to='%s/alice'><x xmlns='http://jabber.org/protocol/muc'>%s</x></presence>", harness.Esc(room), c.history)
			c2.Expect(t, wait, "the subject", func(e *xmlel.Element) bool { return harness.IsMessage(e) && e.Child("", "subject") != nil })
			var got []string
			for _, el := range c2.Received() {
				if harness.IsMessage(el) && el.Child(nsDelay, "delay") != nil {
					got = append(got, el.ChildText("", "body"))
				}
			}
			if strings.Join(got, " ") != c.want {
				t.Errorf("%s: %q", c.history, got)
			}
			c2.Close()
		}
	})
}
