package harness

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

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

// TestEjabberdBalancing: ejabberd 23.01 configured from
// deploy/ejabberd-instances.yml (domain_balancing bare_source,
// component_number 3, global_routes false) takes three connections for
// one component domain, not counting those for its other domains, and
// spreads the senders over them, each sender always to the same one; a
// component's pings to itself and the server's answers go by the bare
// source as well, so to one connection for all.
// When one goes, its slot stays reserved: its senders' stanzas are dropped
// without an error, the others' still go where they went; the next
// connection takes the free slot and gets them; a connection beyond the
// three gets nothing, and is not given the slot of one that goes.
// One-way stanzas from <localpart>@<domain> to the domain go by their
// sender's slot too, whichever connection wrote them: what the gateway's
// route probes rely on.
func TestEjabberdBalancing(t *testing.T) {
	const domain, from = "irc.localhost", "mail.localhost"
	srv := StartEjabberd(t, ServerOptions{Components: []string{domain, from, "sms.localhost"}, DeployInstances: true})
	// First, a connection for another domain of the listener: it must
	// not take a slot of this one (global_routes: false).
	sender := DialComponent(t, srv.ComponentAddr(), from, srv.Secret())
	conns := []*Client{
		DialComponent(t, srv.ComponentAddr(), domain, srv.Secret()),
		DialComponent(t, srv.ComponentAddr(), domain, srv.Secret()),
		DialComponent(t, srv.ComponentAddr(), domain, srv.Secret()),
	}
	const users = 30
	round := 0
	// send sends one message from each user u<i>@mail.localhost and
	// returns, by user, the index in conns of the connection that got it
	// (-1: none); want is how many should arrive in all.
	send := func(want int) []int {
		t.Helper()
		round++
		for i := 0; i < users; i++ {
			sender.Send(t, "<message from='u%d@%s' to='%s' id='r%d-u%d'><body>x</body></message>", i, from, domain, round, i)
		}
		got := make([]int, users)
		deadline := time.Now().Add(iqTimeout)
		for {
			n := 0
			for i := range got {
				got[i] = -1
			}
			for ci, c := range conns {
				for _, e := range c.Received() {
					var u, r int
					if _, err := fmt.Sscanf(e.Attr("id"), "r%d-u%d", &r, &u); err == nil && r == round {
						if got[u] != -1 {
							t.Fatalf("round %d: u%d reached two connections", round, u)
						}
						got[u] = ci
						n++
					}
				}
			}
			if n == want {
				// Anything else would have arrived by now: ejabberd routes
				// one sender's stanzas in order.
				time.Sleep(300 * time.Millisecond)
				return got
			}
			if n > want || time.Now().After(deadline) {
				t.Fatalf("round %d: %d of %d messages arrived, want %d", round, n, users, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	first := send(users)
	per := make([]int, len(conns))
	for _, ci := range first {
		per[ci]++
	}
	for ci, n := range per {
		if n == 0 {
			t.Fatalf("connection %d got no sender: %v", ci, per)
		}
	}
	t.Logf("senders per connection: %v", per)
	if again := send(users); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("a sender moved: %v then %v", first, again)
	}

	// A connection's pings to its own domain, and the server's answers to
	// its pings, go by the bare source too: the domain's and the
	// server's, each to one connection whichever sent the ping.
	for _, p := range []struct{ id, to, typ string }{{"self", domain, "get"}, {"server", "localhost", "result"}} {
		for ci, c := range conns {
			c.Send(t, "<iq type='get' id='%s-%d' from='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>", p.id, ci, domain, p.to)
		}
		where := map[int]bool{}
		for ci := range conns {
			id := fmt.Sprintf("%s-%d", p.id, ci)
			deadline := time.Now().Add(iqTimeout)
			for found := false; !found; time.Sleep(20 * time.Millisecond) {
				for cj, c := range conns {
					for _, e := range c.Received() {
						if e.Local == "iq" && e.Attr("id") == id && e.Attr("type") == p.typ {
							where[cj], found = true, true
						}
					}
				}
				if !found && time.Now().After(deadline) {
					t.Fatalf("the %s ping %s arrived nowhere", p.id, id)
				}
			}
		}
		if len(where) != 1 {
			t.Fatalf("%s pings of the three connections arrived at %v, want one connection", p.id, where)
		}
		t.Logf("the %s pings of the three connections all arrived at connection %v", p.id, where)
	}

	conns[1].Close()
	time.Sleep(200 * time.Millisecond)
	after := send(users - per[1])
	for u, ci := range after {
		switch {
		case first[u] == 1 && ci != -1:
			t.Fatalf("u%d of the closed connection's slot reached connection %d", u, ci)
		case first[u] != 1 && ci != first[u]:
			t.Fatalf("u%d moved from connection %d to %d", u, first[u], ci)
		}
	}
	for _, e := range sender.Received() {
		if e.Attr("type") == "error" {
			t.Fatalf("the sender got an error: %s", e)
		}
	}

	conns[1] = DialComponent(t, srv.ComponentAddr(), domain, srv.Secret())
	if refilled := send(users); fmt.Sprint(refilled) != fmt.Sprint(first) {
		t.Fatalf("after a new connection: %v, want %v", refilled, first)
	}
	conns = append(conns, DialComponent(t, srv.ComponentAddr(), domain, srv.Secret()))
	if beyond := send(users); fmt.Sprint(beyond) != fmt.Sprint(first) {
		t.Fatalf("with a fourth connection: %v, want %v", beyond, first)
	}

	// What the gateway's route probes rely on (component/route.go): a
	// one-way stanza (an IQ result) from <localpart>@<domain> to the
	// domain goes, whichever connection wrote it, to the connection of
	// its sender's slot, and 64 localparts reach every slot.
	const candidates = 64
	for k, from := range []*Client{conns[0], conns[2]} {
		for i := 0; i < candidates; i++ {
			from.Send(t, "<iq type='result' id='probe%d-%d' from='route-%d@%s' to='%s'/>", k, i, i, domain, domain)
		}
	}
	at := map[string]int{} // "k-i" -> connection
	deadline := time.Now().Add(iqTimeout)
	for len(at) < 2*candidates && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		for ci, c := range conns {
			for _, e := range c.Received() {
				var k, i int
				if _, err := fmt.Sscanf(e.Attr("id"), "probe%d-%d", &k, &i); err == nil {
					at[fmt.Sprintf("%d-%d", k, i)] = ci
				}
			}
		}
	}
	if len(at) != 2*candidates {
		t.Fatalf("%d of %d route stanzas came back", len(at), 2*candidates)
	}
	reached := map[int]int{}
	for i := 0; i < candidates; i++ {
		a, b := at[fmt.Sprintf("0-%d", i)], at[fmt.Sprintf("1-%d", i)]
		if a != b {
			t.Fatalf("route-%d went to connection %d when connection 0 wrote it, %d when connection 2 did", i, a, b)
		}
		reached[a]++
	}
	if len(reached) != 3 || reached[3] != 0 {
		t.Fatalf("route localparts per connection: %v, want the three holding a slot", reached)
	}
	t.Logf("route localparts per connection: %v", reached)

	// A connection that found no slot is not given one later: with
	// connection 0 gone, its senders reach nobody, not the fourth.
	conns[0].Close()
	time.Sleep(200 * time.Millisecond)
	for u, ci := range send(users - per[0]) {
		if first[u] == 0 && ci != -1 {
			t.Fatalf("u%d of the closed connection's slot reached connection %d", u, ci)
		}
	}
}
