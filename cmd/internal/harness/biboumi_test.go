package harness

import (
	"net"
	"strings"
	"testing"
	"time"

	"passerelle/component/xmlel"
)

// TestBiboumi starts biboumi beside Prosody and ngircd, points it at ngircd
// with the ad-hoc "configure" command, joins a channel through it, then
// stops and restarts it; no biboumi process is left after the cleanup.
func TestBiboumi(t *testing.T) {
	t.Parallel()
	var pid int
	t.Run("inner", func(t *testing.T) { pid = exerciseBiboumi(t) })
	if pid != 0 && procAlive(pid) {
		t.Errorf("biboumi (pid %d) still alive after the subtest's cleanup", pid)
	}
}

func exerciseBiboumi(t *testing.T) (pid int) {
	srv := StartProsody(t, ServerOptions{Components: []string{"irc.localhost"}})
	irc := StartNgircd(t)
	b := StartBiboumi(t, srv, "irc.localhost", "log_level=1")
	pid = b.Pid()
	if b.Domain != "irc.localhost" || !procAlive(pid) {
		t.Fatalf("unexpected %+v (pid %d)", b, b.Pid())
	}
	c := Dial(t, srv.C2SAddr(), "alice@localhost", srv.AddUser(t, "alice@localhost"), "test")

	r := c.IQ(t, "get", "irc.localhost", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
	id := r.Child("http://jabber.org/protocol/disco#info", "query").Child("", "identity")
	if r.Attr("type") != "result" || id == nil || !strings.Contains(id.Attr("name"), "Biboumi") || id.Attr("type") != "irc" {
		t.Fatalf("disco#info of the component: %s", r)
	}

	_, port, _ := net.SplitHostPort(irc.Addr)
	const ns = "http://jabber.org/protocol/commands"
	r = c.IQ(t, "set", "localhost@irc.localhost", "<command xmlns='"+ns+"' node='configure' action='execute'/>")
	if r.Attr("type") != "result" {
		t.Fatalf("configure: %s", r)
	}
	sid := r.Child(ns, "command").Attr("sessionid")
	r = c.IQ(t, "set", "localhost@irc.localhost", "<command xmlns='"+ns+"' node='configure' sessionid='"+Esc(sid)+"' action='complete'>"+
		"<x xmlns='jabber:x:data' type='submit'><field var='ports'><value>"+port+"</value></field><field var='tls_ports'/></x></command>")
	if r.Attr("type") != "result" {
		t.Fatalf("configure: %s", r)
	}

	bob := dialIRC(t, irc.Addr, "bob")
	bob.send("JOIN #h")
	bob.expect(t, " 366 ")
	room := "#h%localhost@irc.localhost"
	c.Send(t, "<presence to='%s/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>", Esc(room))
	c.Expect(t, 10*time.Second, "self-presence", func(e *xmlel.Element) bool {
		return IsPresence(e) && e.Attr("from") == room+"/alice" && e.Attr("type") == ""
	})
	bob.expect(t, ":alice!")
	bob.send("PRIVMSG #h :hello alice")
	c.Expect(t, 10*time.Second, "bob's message", MessageFrom(room+"/bob", "hello alice"))

	b.Stop(t)
	bob.expect(t, "QUIT")
	if procAlive(pid) {
		t.Errorf("biboumi (pid %d) still alive after Stop", pid)
	}
	b.Start(t)
	if !strings.Contains(b.LogTail(200), "Authenticated with the XMPP server") {
		t.Errorf("log tail: %s", b.LogTail(60))
	}
	return b.Pid()
}
