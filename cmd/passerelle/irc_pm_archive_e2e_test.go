package main

// End-to-end test of XEP-0313 for IRC private messages: the gateway keeps
// no archive of them; the user's own server (Prosody with mod_mam) stores
// the messages exchanged with nick%server@irc-domain both ways, also
// while the user is offline.

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

const (
	nsMAM     = "urn:xmpp:mam:2"
	nsForward = "urn:xmpp:forward:0"
	nsDelay   = "urn:xmpp:delay"
)

// archived is one message of a MAM result, as the archive holds it.
type archived struct{ from, to, typ, body string }

func (a archived) String() string {
	return fmt.Sprintf("%s -> %s (%s): %q", a.from, a.to, a.typ, a.body)
}

// mamWith queries the archive at to (a bare JID, or "" for the user's own)
// for the messages exchanged with the JID with. It returns the reply and
// the archived messages, oldest first.
func mamWith(t *testing.T, c *harness.Client, to, with string) (*xmlel.Element, []archived) {
	t.Helper()
	qid := fmt.Sprintf("pm%d", time.Now().UnixNano())
	r := c.IQ(t, "set", to, "<query xmlns='"+nsMAM+"' queryid='"+qid+"'>"+submitForm(nsMAM, "with", with)+"</query>")
	var out []archived
	for _, el := range c.Received() {
		res := el.Child(nsMAM, "result")
		if !harness.IsMessage(el) || res == nil || res.Attr("queryid") != qid {
			continue
		}
		m := res.Child(nsForward, "forwarded").Child("", "message")
		if m == nil {
			t.Fatalf("MAM result without a forwarded message: %s", el)
		}
		out = append(out, archived{m.Attr("from"), m.Attr("to"), m.Attr("type"), m.ChildText("", "body")})
	}
	return r, out
}

// ircConnectionInfo runs get-irc-connection-info on server@irc-domain and
// returns its note.
func ircConnectionInfo(t *testing.T, c *harness.Client, server string) string {
	t.Helper()
	r := c.IQ(t, "set", server+"@"+ircDomain, "<command xmlns='http://jabber.org/protocol/commands' node='get-irc-connection-info' action='execute'/>")
	wantResult(t, r, "get-irc-connection-info")
	return r.Child("http://jabber.org/protocol/commands", "command").ChildText("", "note")
}

func TestIRCPrivateArchive(t *testing.T) {
	ngircd := harness.StartNgircd(t)
	_, portStr, _ := net.SplitHostPort(ngircd.Addr)
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, MAM: true})
	env := baseEnv(t, srv)
	env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
	e := startGateway(t, srv, env)

	const server = "localhost"
	const aliceJID = "alice@localhost"
	room := "#pm%" + server + "@" + ircDomain
	peerJID := "peer%" + server + "@" + ircDomain
	alice := e.dial(t, aliceJID)
	peer := dialIRC(t, ngircd.Addr, "peer")
	peer.send(t, "JOIN #pm")
	peer.expect(t, "366")

	if !t.Run("persistent channel", func(t *testing.T) {
		wantResult(t, configureNetwork(t, alice, server, "ports", portStr, "tls_ports", ""), "configure the network")
		r := alice.IQ(t, "set", room, "<command xmlns='http://jabber.org/protocol/commands' node='configure' action='execute'/>")
		wantResult(t, r, "channel configure")
		sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
		r = alice.IQ(t, "set", room, "<command xmlns='http://jabber.org/protocol/commands' node='configure' sessionid='"+sid+"' action='complete'>"+
			submitForm("", "persistent", "true")+"</command>")
		wantResult(t, r, "channel configure submit")
		alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX())
		alice.Expect(t, wait, "self-presence in #pm", occupant(room+"/alice", "", "110"))
		if l := peer.expect(t, "JOIN :#pm"); !strings.HasPrefix(l, ":alice!") {
			t.Fatalf("join seen by the peer: %q", l)
		}
	}) {
		return
	}

	if !t.Run("private messages both ways", func(t *testing.T) {
		alice.Send(t, "<message to='%s' type='chat' id='pm1'><body>hello peer</body></message>", harness.Esc(peerJID))
		if l := peer.expect(t, "PRIVMSG peer :"); !strings.HasPrefix(l, ":alice!") || !strings.HasSuffix(l, " PRIVMSG peer :hello peer") {
			t.Fatalf("the peer got %q, want alice's PRIVMSG peer :hello peer", l)
		}
		peer.send(t, "PRIVMSG alice :hello alice")
		m := alice.Expect(t, wait, "the peer's answer", harness.MessageFrom(peerJID, "hello alice"))
		if m.Attr("from") != peerJID || m.Attr("type") != "chat" || m.ChildText("", "body") != "hello alice" {
			t.Fatalf("the peer's answer: %s", m)
		}
	}) {
		return
	}

	t.Run("while offline", func(t *testing.T) {
		info := ircConnectionInfo(t, alice, server)
		if !strings.HasPrefix(info, "Connected to localhost") || !strings.HasSuffix(info, " Channels: #pm.") {
			t.Fatalf("connection info before going offline: %q", info)
		}
		alice.Close() // the only resource, still in #pm: alice is offline
		peer.send(t, "PRIVMSG alice :while you were away")
		// The IRC server took it for alice: no 401 (no such nick) before
		// the PONG.
		peer.send(t, "PING :after-offline-pm")
		peer.expect(t, "after-offline-pm")
		for _, l := range peer.lines() {
			if strings.Contains(l, " 401 ") {
				t.Fatalf("alice was not on IRC while she was offline: %q", l)
			}
		}
		// The PONG says nothing of when the gateway passed the message on:
		// wait until Prosody has kept it for alice, or she could come back
		// before it arrives and get it live.
		waitServerLogged(t, srv, 1, "the message sent while alice was offline", offlineSaved(peerJID, aliceJID)...)

		back := harness.Dial(t, srv.C2SAddr(), aliceJID, e.passwords[aliceJID], "back")
		// The gateway handles alice's stanzas in order: this answer comes
		// after it saw her first resource leave #pm. The same connection
		// (same start time) is still up, still in the persistent channel.
		if after := ircConnectionInfo(t, back, server); after != info {
			t.Fatalf("alice's IRC connection did not stay up while she was offline:\nbefore: %q\nafter:  %q", info, after)
		}
		for _, l := range peer.lines() {
			if strings.HasPrefix(l, ":alice!") && (strings.Contains(l, " PART ") || strings.Contains(l, " QUIT ")) {
				t.Fatalf("alice left IRC while she was offline: %q", l)
			}
		}
		m := back.Expect(t, wait, "the message sent while alice was offline (from Prosody's offline storage)",
			harness.MessageFrom(peerJID, "while you were away"))
		if m.Attr("from") != peerJID || m.Attr("type") != "chat" || m.ChildText("", "body") != "while you were away" {
			t.Errorf("the message sent while offline: %s", m)
		}
		// Delivered by Prosody's mod_offline on the initial presence: it
		// carries the server's delay stamp.
		if d := m.Child(nsDelay, "delay"); d == nil || d.Attr("from") != "localhost" {
			t.Errorf("the message sent while offline has no offline-storage delay from localhost: %s", m)
		}

		r, got := mamWith(t, back, aliceJID, peerJID)
		wantResult(t, r, "MAM query to alice's own archive")
		if fin := r.Child(nsMAM, "fin"); fin == nil || fin.Attr("complete") != "true" {
			t.Errorf("MAM fin: %s", r)
		}
		want := []archived{
			{aliceJID + "/test", peerJID, "chat", "hello peer"},
			{peerJID, aliceJID, "chat", "hello alice"},
			{peerJID, aliceJID, "chat", "while you were away"},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("alice's archive with %s:\n got %v\nwant %v", peerJID, got, want)
		}

		// The same query sent to the contact is refused, pointing at the
		// user's own server.
		r, got = mamWith(t, back, peerJID, peerJID)
		wantError(t, r, "service-unavailable", "MAM query to the contact")
		if txt := stanzaText(r); txt != "Private messages are archived by your own server: query its archive, with this contact as the with filter." {
			t.Errorf("error text of the MAM query to the contact: %q", txt)
		}
		if len(got) != 0 {
			t.Errorf("the contact answered archived messages: %v", got)
		}
	})
}
