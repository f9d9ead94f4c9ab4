package main

// End-to-end test of the channel archive kept once per server: each user
// sees in it the lines of the times they were in the channel, and the
// users' copies of a line carry the same archive id.

import (
	"strings"
	"testing"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

func TestIRCArchiveWindows(t *testing.T) {
	srv, ngircd, e, users := archiveSetup(t, "alice@localhost", "dave@localhost")
	alice, dave := users[0], users[1]
	room := "#win%localhost@" + ircDomain
	bob := dialIRC(t, ngircd.Addr, "bob")
	bob.send(t, "JOIN #win")
	bob.expect(t, "366")
	join := func(c *harness.Client, nick string) {
		t.Helper()
		c.Send(t, "<presence to='%s/%s'>%s</presence>", harness.Esc(room), nick, mucX())
		c.Expect(t, wait, "self-presence in #win", occupant(room+"/"+nick, "", "110"))
		bob.expect(t, "JOIN :#win")
	}
	// sidOf waits for body in the room and returns its stanza-id.
	sidOf := func(c *harness.Client, from, body string) string {
		t.Helper()
		m := c.Expect(t, wait, body, harness.MessageFrom(room+"/"+from, body))
		return m.Child("urn:xmpp:sid:0", "stanza-id").Attr("id")
	}
	say := func(body string, to ...*harness.Client) {
		t.Helper()
		bob.send(t, "PRIVMSG #win :%s", body)
		var sids []string
		for _, c := range to {
			sids = append(sids, sidOf(c, "bob", body))
		}
		for _, s := range sids[1:] {
			if s != sids[0] {
				t.Errorf("%q: the users' copies have the stanza-ids %v, want one archive id", body, sids)
			}
		}
	}

	join(alice, "alice")
	say("one", alice) // before dave joined
	join(dave, "dave")
	say("two", alice, dave)
	dave.Send(t, "<presence to='%s/dave' type='unavailable'/>", harness.Esc(room))
	bob.expect(t, "PART #win")
	say("three", alice) // while dave was away
	join(dave, "dave")
	say("four", alice, dave)
	// A user's own line: the sender's echo and the other's copy, one id.
	alice.Send(t, "<message type='groupchat' to='%s' id='five'><body>five</body></message>", harness.Esc(room))
	if a, d := sidOf(alice, "alice", "five"), sidOf(dave, "alice", "five"); a != d {
		t.Errorf("five: stanza-ids %q (echo) and %q (copy), want one", a, d)
	}
	bob.expect(t, "five")
	// Two lines on IRC, one message in the archive.
	alice.Send(t, "<message type='groupchat' to='%s' id='six'><body>six\nseven</body></message>", harness.Esc(room))
	if a, d6, d7 := sidOf(alice, "alice", "six\nseven"), sidOf(dave, "alice", "six"), sidOf(dave, "alice", "seven"); a != d6 || a != d7 {
		t.Errorf("six/seven: stanza-ids %q (echo), %q and %q (the copies of its lines), want one", a, d6, d7)
	}
	bob.expect(t, "seven")

	for _, c := range []struct {
		who  *harness.Client
		want string
	}{{alice, "one two three four five six\nseven"}, {dave, "two four five six\nseven"}} {
		p := roomArchive(t, c.who, room, "")
		if p.String() != c.want || !p.complete() {
			t.Errorf("%s's archive: %q, fin %s; want %q", c.who.JID, p, p.fin, c.want)
		}
	}
	// The history a join replays is the same.
	c2 := harness.Dial(t, srv.C2SAddr(), "dave@localhost", e.passwords["dave@localhost"], "h")
	c2.Send(t, "<presence to='%s/dave'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='10'/></x></presence>", harness.Esc(room))
	c2.Expect(t, wait, "the subject", func(e *xmlel.Element) bool { return harness.IsMessage(e) && e.Child("", "subject") != nil })
	var got []string
	for _, el := range c2.Received() {
		if harness.IsMessage(el) && el.Child(nsDelay, "delay") != nil {
			got = append(got, el.ChildText("", "body"))
		}
	}
	if strings.Join(got, " ") != "two four five six\nseven" {
		t.Errorf("dave's join history: %q, want %q", got, "two four five six\nseven")
	}
}
