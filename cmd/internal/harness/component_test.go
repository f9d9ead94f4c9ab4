package harness

import (
	"bufio"
	"net"
	"strings"
	"testing"

	"passerelle/component/xmlel"
)

// TestDeployPrivileges: with Deploy, each component of the deploy snippet
// receives its privileges right after the handshake, and a peer component
// dialled with DialComponent talks to the server; a wrong secret is an
// error.
func TestDeployPrivileges(t *testing.T) {
	for _, start := range []func(testing.TB, ServerOptions) Server{StartProsody, StartEjabberd} {
		srv := start(t, ServerOptions{Components: []string{"irc.localhost", "mail.localhost", "sms.localhost"}, Deploy: true})
		t.Run(srv.Name(), func(t *testing.T) {
			c := DialComponent(t, srv.ComponentAddr(), "mail.localhost", srv.Secret())
			m := c.Expect(t, iqTimeout, "the privilege advertisement", func(e *xmlel.Element) bool {
				return e.Local == "message" && e.Attr("from") == "localhost" && len(e.Children) > 0 && e.Children[0].Local == "privilege"
			})
			roster := ""
			for _, p := range m.Children[0].Children {
				if p.Attr("access") == "roster" {
					roster = p.Attr("type")
				}
			}
			if roster != "both" {
				t.Fatalf("advertisement %s, want roster both", m)
			}
			c.Send(t, "<iq type='get' id='p1' from='mail.localhost' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
			r := c.Expect(t, iqTimeout, "the server's answer", func(e *xmlel.Element) bool { return e.Attr("id") == "p1" })
			if r.Attr("type") != "result" {
				t.Fatalf("ping to the server: %s", r)
			}

			nc, err := net.Dial("tcp", srv.ComponentAddr())
			if err != nil {
				t.Fatal(err)
			}
			bad := &Client{conn: nc, r: bufio.NewReader(nc), changed: make(chan struct{}), readDone: make(chan struct{})}
			defer nc.Close()
			if err := bad.componentHandshake("sms.localhost", "wrong"+srv.Secret()); err == nil {
				t.Fatal("a wrong secret was accepted")
			}
		})
	}
}

func TestDeploySnippetChanged(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "no longer contains") {
			t.Fatalf("recover() = %v, want a panic naming the missing text", r)
		}
	}()
	deploySnippet("prosody.cfg.lua", map[string]string{"a line the snippet never had": ""})
}

func TestRequireFile(t *testing.T) {
	t.Setenv("CI", "")
	var skipped bool
	t.Run("missing", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		requireFile(t, t.TempDir()+"/absent", "some-package")
	})
	if !skipped {
		t.Fatal("a missing file did not skip the test")
	}
	requireFile(t, prosodyPrivilegeModule, "prosody-modules") // installed here
}
