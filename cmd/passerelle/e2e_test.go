package main

// End-to-end tests: the built binary against a real XMPP server (Prosody,
// and ejabberd for the core suite) with real client connections.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv("PASSERELLE_TEST_DB") == "postgres" {
		c, err := pgtest.Start()
		if err != nil {
			fmt.Fprintf(os.Stderr, "PASSERELLE_TEST_DB=postgres: %v\n", err)
			os.Exit(1)
		}
		testCluster = c
	}
	code := m.Run()
	harness.Cleanup()
	if testCluster != nil {
		if err := testCluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}

// testCluster is the PostgreSQL server the gateways of baseEnv use when
// PASSERELLE_TEST_DB=postgres (nil: each has an SQLite file).
var testCluster *pgtest.Cluster

// testDB is a new database for a gateway: an SQLite file, or with
// PASSERELLE_TEST_DB=postgres a database in testCluster.
func testDB(t testing.TB) string {
	if testCluster != nil {
		return testCluster.DB(t)
	}
	return filepath.Join(t.TempDir(), "passerelle.db")
}

const (
	ircDomain  = "irc.localhost"
	mailDomain = "mail.localhost"
	smsDomain  = "sms.localhost"
	wait       = 10 * time.Second
)

var allDomains = []string{ircDomain, mailDomain, smsDomain}

// gwEnv is a gateway running against a server, with its configuration.
type gwEnv struct {
	srv harness.Server
	gw  *harness.Gateway
	bin string
	env map[string]string
	// passwords of the accounts created by dial
	passwords map[string]string
}

func startServer(t *testing.T, kind string) harness.Server {
	opts := harness.ServerOptions{Domain: "localhost", ExtraHosts: []string{"other.localhost"}, Components: allDomains}
	if kind == "ejabberd" {
		return harness.StartEjabberd(t, opts)
	}
	return harness.StartProsody(t, opts)
}

// baseEnv is the gateway configuration used by most tests.
func baseEnv(t testing.TB, srv harness.Server) map[string]string {
	return map[string]string{
		"PASSERELLE_XMPP_ADDR":    srv.ComponentAddr(),
		"PASSERELLE_XMPP_SECRET":  srv.Secret(),
		"PASSERELLE_DB":           testDB(t),
		"PASSERELLE_ADMINS":       "admin@localhost",
		"PASSERELLE_IRC_DOMAIN":   ircDomain,
		"PASSERELLE_EMAIL_DOMAIN": mailDomain,
		"PASSERELLE_SMS_DOMAIN":   smsDomain,
		"PASSERELLE_SMS_NUMBERS":  "+15550001111,+15550002222",
		"PASSERELLE_STORE_KEY":    "test-store-key",
		"PASSERELLE_LOG_LEVEL":    "debug",
		"PASSERELLE_HTTP_LISTEN":  fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		// Inbound mail's SPF, DKIM and DMARC lookups stay on loopback.
		"PASSERELLE_DNS_RESOLVER": harness.StartDNS(t).Addr(),
	}
}

// healthz returns the status code of the gateway's /healthz (0 when it
// does not answer).
func (e *gwEnv) healthz() int {
	code, _ := e.health()
	return code
}

// health returns the status and body of /healthz (0 when it does not answer).
func (e *gwEnv) health() (int, string) {
	resp, err := http.Get("http://" + e.env["PASSERELLE_HTTP_LISTEN"] + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func startGateway(t *testing.T, srv harness.Server, env map[string]string) *gwEnv {
	e := &gwEnv{srv: srv, bin: harness.BuildBinary(t), env: env, passwords: map[string]string{}}
	e.gw = harness.StartGateway(t, e.bin, env)
	for _, d := range allDomains {
		if env[domainVar(d)] != "" {
			e.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+d)
		}
	}
	return e
}

func domainVar(d string) string {
	switch d {
	case ircDomain:
		return "PASSERELLE_IRC_DOMAIN"
	case mailDomain:
		return "PASSERELLE_EMAIL_DOMAIN"
	}
	return "PASSERELLE_SMS_DOMAIN"
}

func (e *gwEnv) dial(t *testing.T, jid string) *harness.Client {
	t.Helper()
	pw := e.srv.AddUser(t, jid)
	e.passwords[jid] = pw
	return harness.Dial(t, e.srv.C2SAddr(), jid, pw, "test")
}

// errCondition returns the error condition of an error stanza ("" if none).
func errCondition(el *xmlel.Element) string {
	if el.Attr("type") != "error" {
		return ""
	}
	return stanza.ErrorOf(el).Condition
}

func wantResult(t *testing.T, el *xmlel.Element, what string) {
	t.Helper()
	if el.Attr("type") != "result" {
		t.Fatalf("%s: got %s", what, el)
	}
}

func wantError(t *testing.T, el *xmlel.Element, cond, what string) {
	t.Helper()
	if got := errCondition(el); got != cond {
		t.Fatalf("%s: want error %s, got %s", what, cond, el)
	}
}

// submitForm renders a submitted data form with the given fields.
func submitForm(formType string, fields ...string) string {
	var b strings.Builder
	b.WriteString("<x xmlns='jabber:x:data' type='submit'>")
	if formType != "" {
		fmt.Fprintf(&b, "<field var='FORM_TYPE'><value>%s</value></field>", formType)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		fmt.Fprintf(&b, "<field var='%s'><value>%s</value></field>", harness.Esc(fields[i]), harness.Esc(fields[i+1]))
	}
	b.WriteString("</x>")
	return b.String()
}

func register(c *harness.Client, t *testing.T, domain string, fields ...string) *xmlel.Element {
	t.Helper()
	return c.IQ(t, "set", domain, "<query xmlns='jabber:iq:register'>"+submitForm("jabber:iq:register", fields...)+"</query>")
}

// formValue returns the values of field v in the data form inside el.
func formValues(el *xmlel.Element, v string) []string {
	var find func(*xmlel.Element) *xmlel.Element
	find = func(e *xmlel.Element) *xmlel.Element {
		if e.Space == "jabber:x:data" && e.Local == "x" {
			return e
		}
		for _, c := range e.Children {
			if x := find(c); x != nil {
				return x
			}
		}
		return nil
	}
	x := find(el)
	if x == nil {
		return nil
	}
	for _, f := range x.ChildrenNamed("jabber:x:data", "field") {
		if f.Attr("var") == v {
			var out []string
			for _, val := range f.ChildrenNamed("jabber:x:data", "value") {
				out = append(out, val.Text)
			}
			if out == nil {
				out = []string{}
			}
			return out
		}
	}
	return nil
}

func presenceFrom(from, typ string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return harness.IsPresence(e) && e.Attr("from") == from && e.Attr("type") == typ
	}
}

// acceptGateway puts the gateway in c's roster both ways (what a client does
// when the user accepts the gateway's subscription request).
func acceptGateway(t *testing.T, c *harness.Client, domain string) {
	t.Helper()
	c.Expect(t, wait, "subscription request from "+domain, presenceFrom(domain, "subscribe"))
	c.Send(t, "<presence to='%s' type='subscribed'/>", domain)
	c.Send(t, "<presence to='%s' type='subscribe'/>", domain)
	c.Expect(t, wait, domain+" available", presenceFrom(domain, ""))
	// The server records the gateway's approval in the roster.
	deadline := time.Now().Add(wait)
	for rosterSubscription(t, c, domain) != "both" {
		if time.Now().After(deadline) {
			t.Fatalf("%s is not in the roster with subscription both", domain)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rosterSubscription returns the subscription state of jid in c's roster.
func rosterSubscription(t *testing.T, c *harness.Client, jid string) string {
	r := c.IQ(t, "get", "", "<query xmlns='jabber:iq:roster'/>")
	for _, it := range r.Child("jabber:iq:roster", "query").ChildrenNamed("", "item") {
		if it.Attr("jid") == jid {
			return it.Attr("subscription")
		}
	}
	return ""
}

func TestCoreProsody(t *testing.T)  { coreSuite(t, "prosody") }
func TestCoreEjabberd(t *testing.T) { coreSuite(t, "ejabberd") }

// coreSuite runs the gateway-core scenarios against one server.
func coreSuite(t *testing.T, kind string) {
	srv := startServer(t, kind)
	e := startGateway(t, srv, baseEnv(t, srv))
	alice := e.dial(t, "alice@localhost")
	bob := e.dial(t, "bob@localhost")
	admin := e.dial(t, "admin@localhost")

	t.Run("disco", func(t *testing.T) {
		want := map[string][]string{
			ircDomain:  {"conference/irc", "gateway/irc"},
			mailDomain: {"gateway/smtp"},
			smsDomain:  {"gateway/sms"},
		}
		for _, d := range allDomains {
			r := alice.IQ(t, "get", d, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
			wantResult(t, r, "disco#info "+d)
			q := r.Child("http://jabber.org/protocol/disco#info", "query")
			var ids []string
			for _, id := range q.ChildrenNamed("", "identity") {
				ids = append(ids, id.Attr("category")+"/"+id.Attr("type"))
			}
			sort.Strings(ids)
			if strings.Join(ids, " ") != strings.Join(want[d], " ") {
				t.Errorf("%s identities = %v, want %v", d, ids, want[d])
			}
			features := map[string]bool{}
			for _, f := range q.ChildrenNamed("", "feature") {
				features[f.Attr("var")] = true
			}
			for _, f := range []string{"jabber:iq:register", "jabber:iq:gateway", "urn:xmpp:ping", "jabber:iq:version",
				"http://jabber.org/protocol/commands", "http://jabber.org/protocol/disco#info"} {
				if !features[f] {
					t.Errorf("%s lacks feature %s", d, f)
				}
			}
			r = alice.IQ(t, "get", d, "<query xmlns='http://jabber.org/protocol/disco#items'/>")
			wantResult(t, r, "disco#items "+d)
		}
	})

	t.Run("ping and version", func(t *testing.T) {
		for _, d := range allDomains {
			wantResult(t, alice.IQ(t, "get", d, "<ping xmlns='urn:xmpp:ping'/>"), "ping "+d)
			r := alice.IQ(t, "get", d, "<query xmlns='jabber:iq:version'/>")
			wantResult(t, r, "version "+d)
			if n := r.Child("jabber:iq:version", "query").ChildText("", "name"); n != "Passerelle" {
				t.Errorf("version name = %q", n)
			}
		}
	})

	t.Run("email registration", func(t *testing.T) {
		r := alice.IQ(t, "get", mailDomain, "<query xmlns='jabber:iq:register'/>")
		wantResult(t, r, "register get")
		q := r.Child("jabber:iq:register", "query")
		if q.Child("", "registered") != nil {
			t.Fatal("new user shown as registered")
		}
		if formValues(q, "address") == nil {
			t.Fatalf("registration form has no address field: %s", r)
		}
		wantError(t, register(alice, t, mailDomain), "not-acceptable", "registration without address")
		wantError(t, register(alice, t, mailDomain, "address", "a b"), "not-acceptable", "address with a space")
		wantError(t, register(alice, t, mailDomain, "address", "postmaster"), "not-acceptable", "reserved address")
		wantResult(t, register(alice, t, mailDomain, "address", "Alice", "imap_password", "s3cret"), "register alice")
		acceptGateway(t, alice, mailDomain)

		r = alice.IQ(t, "get", mailDomain, "<query xmlns='jabber:iq:register'/>")
		q = r.Child("jabber:iq:register", "query")
		if q.Child("", "registered") == nil {
			t.Fatalf("registered user not shown as registered: %s", r)
		}
		if v := formValues(q, "address"); len(v) != 1 || v[0] != "alice" {
			t.Fatalf("current address = %v, want [alice]", v)
		}
		if v := formValues(q, "imap_password"); len(v) != 0 {
			t.Fatalf("the form shows a stored password: %v", v)
		}

		wantError(t, register(bob, t, mailDomain, "address", "alice"), "conflict", "bob taking alice's address")
		// Re-registering changes the address and frees the old one.
		wantResult(t, register(alice, t, mailDomain, "address", "alice2"), "re-register alice")
		wantResult(t, register(bob, t, mailDomain, "address", "alice"), "bob takes the freed address")
		wantError(t, register(bob, t, mailDomain, "address", "alice2"), "conflict", "bob taking alice2")

		// Unregister: the address is free again.
		wantResult(t, alice.IQ(t, "set", mailDomain, "<query xmlns='jabber:iq:register'><remove/></query>"), "unregister")
		alice.Expect(t, wait, "the gateway going offline for alice", presenceFrom(mailDomain, "unavailable"))
		if sub := rosterSubscription(t, alice, mailDomain); sub == "both" || sub == "from" {
			t.Errorf("the gateway is still subscribed to alice after unregistering: %q", sub)
		}
		wantError(t, alice.IQ(t, "set", mailDomain, "<query xmlns='jabber:iq:register'><remove/></query>"), "registration-required", "second unregister")
		wantResult(t, register(bob, t, mailDomain, "address", "alice2"), "bob takes alice2 after unregister")
	})

	t.Run("sms registration", func(t *testing.T) {
		r := alice.IQ(t, "get", smsDomain, "<query xmlns='jabber:iq:register'/>")
		wantResult(t, r, "register get")
		wantError(t, register(alice, t, smsDomain, "number", "+15559999999"), "not-acceptable", "a number that is not the gateway's")
		wantError(t, register(alice, t, smsDomain, "number", "garbage"), "not-acceptable", "garbage number")
		wantResult(t, register(alice, t, smsDomain, "number", "(555) 000-1111"), "claim in national format")
		alice.Expect(t, wait, "subscription request", presenceFrom(smsDomain, "subscribe"))
		r = alice.IQ(t, "get", smsDomain, "<query xmlns='jabber:iq:register'/>")
		if v := formValues(r, "number"); len(v) != 1 || v[0] != "+15550001111" {
			t.Fatalf("claimed number = %v", v)
		}
		wantError(t, register(bob, t, smsDomain, "number", "+15550001111"), "conflict", "claimed number")
		wantResult(t, register(bob, t, smsDomain, "number", "+15550002222"), "bob claims the other number")
	})

	t.Run("irc registration", func(t *testing.T) {
		wantError(t, register(alice, t, ircDomain, "nick", "bad nick"), "not-acceptable", "nick with a space")
		wantResult(t, register(alice, t, ircDomain, "nick", "alice", "password", "pw"), "irc register")
		r := alice.IQ(t, "get", ircDomain, "<query xmlns='jabber:iq:register'/>")
		if v := formValues(r, "nick"); len(v) != 1 || v[0] != "alice" {
			t.Fatalf("nick = %v", v)
		}
	})

	t.Run("irc private address refused", func(t *testing.T) {
		// Without PASSERELLE_IRC_ALLOW_PRIVATE a loopback server is refused
		// with a condition clients show, and the reason in the text.
		room := "#demo%127.0.0.1@" + ircDomain
		alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX())
		el := alice.Expect(t, wait, "the refusal", occupant(room+"/alice", "error"))
		wantError(t, el, "not-acceptable", "a join to a loopback IRC server")
		if !strings.Contains(stanzaText(el), "private address 127.0.0.1") {
			t.Errorf("the refusal does not say why: %s", el)
		}
	})

	t.Run("gateway prompt", func(t *testing.T) {
		r := alice.IQ(t, "get", mailDomain, "<query xmlns='jabber:iq:gateway'/>")
		wantResult(t, r, "gateway get")
		if p := r.Child("jabber:iq:gateway", "query").ChildText("", "prompt"); p != "Email address" {
			t.Errorf("email prompt = %q", p)
		}
		cases := []struct{ domain, input, want string }{
			{mailDomain, "bob@example.com", "bob%example.com@" + mailDomain},
			{mailDomain, "Bob.Smith@Example.COM", "Bob.Smith%example.com@" + mailDomain},
			{smsDomain, "(555) 123-4567", "+15551234567@" + smsDomain},
			{smsDomain, "+44 20 7946 0958", "+442079460958@" + smsDomain},
			{ircDomain, "#go@irc.libera.chat", "#go%irc.libera.chat@" + ircDomain},
		}
		for _, c := range cases {
			r := alice.IQ(t, "set", c.domain, "<query xmlns='jabber:iq:gateway'><prompt>"+harness.Esc(c.input)+"</prompt></query>")
			wantResult(t, r, "gateway set "+c.input)
			if got := r.Child("jabber:iq:gateway", "query").ChildText("", "jid"); got != c.want {
				t.Errorf("%s → %q, want %q", c.input, got, c.want)
			}
		}
		wantError(t, alice.IQ(t, "set", mailDomain, "<query xmlns='jabber:iq:gateway'><prompt>not an address</prompt></query>"), "jid-malformed", "bad email")
		wantError(t, alice.IQ(t, "set", smsDomain, "<query xmlns='jabber:iq:gateway'><prompt>call me</prompt></query>"), "jid-malformed", "bad number")
	})

	t.Run("registration required", func(t *testing.T) {
		carol := e.dial(t, "carol@localhost")
		carol.Send(t, "<message to='bob%%example.com@%s' id='m1' type='chat'><body>hi</body></message>", mailDomain)
		el := carol.Expect(t, wait, "error for an unregistered sender", func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.Attr("id") == "m1"
		})
		wantError(t, el, "registration-required", "unregistered email sender")
		carol.Send(t, "<message to='+15551234567@%s' id='m2' type='chat'><body>hi</body></message>", smsDomain)
		el = carol.Expect(t, wait, "error for an unregistered texter", func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.Attr("id") == "m2"
		})
		wantError(t, el, "registration-required", "unregistered sms sender")
	})

	t.Run("ad-hoc", func(t *testing.T) {
		items := func(c *harness.Client) []string {
			r := c.IQ(t, "get", smsDomain, "<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>")
			wantResult(t, r, "command list")
			var nodes []string
			for _, it := range r.Child("http://jabber.org/protocol/disco#items", "query").ChildrenNamed("", "item") {
				nodes = append(nodes, it.Attr("node"))
			}
			sort.Strings(nodes)
			return nodes
		}
		if got := strings.Join(items(alice), " "); got != "settings unregister" {
			t.Errorf("alice's commands = %q", got)
		}
		if got := strings.Join(items(admin), " "); got != "list-users settings stats" {
			t.Errorf("admin's commands = %q", got)
		}
		exec := func(c *harness.Client, node string) *xmlel.Element {
			return c.IQ(t, "set", smsDomain, "<command xmlns='http://jabber.org/protocol/commands' node='"+node+"' action='execute'/>")
		}
		wantError(t, exec(alice, "list-users"), "forbidden", "list-users by a non-admin")
		wantError(t, exec(alice, "stats"), "forbidden", "stats by a non-admin")
		r := exec(admin, "list-users")
		wantResult(t, r, "list-users")
		if got := strings.Join(formValues(r, "users"), " "); got != "alice@localhost bob@localhost" {
			t.Errorf("registered users = %q", got)
		}
		r = exec(admin, "stats")
		wantResult(t, r, "stats")
		if v := formValues(r, "registered"); len(v) != 1 || v[0] != "2" {
			t.Errorf("stats registered = %v", v)
		}

		// Settings: a form, then a submission changing the number.
		r = exec(alice, "settings")
		cmd := r.Child("http://jabber.org/protocol/commands", "command")
		if cmd.Attr("status") != "executing" || formValues(r, "number") == nil {
			t.Fatalf("settings first step: %s", r)
		}
		sid := cmd.Attr("sessionid")
		r = alice.IQ(t, "set", smsDomain, "<command xmlns='http://jabber.org/protocol/commands' node='settings' sessionid='"+sid+"' action='complete'>"+
			submitForm("", "number", "+15550002222")+"</command>")
		wantError(t, r, "conflict", "settings taking bob's number")
		r = alice.IQ(t, "set", smsDomain, "<command xmlns='http://jabber.org/protocol/commands' node='settings' sessionid='"+sid+"' action='complete'>"+
			submitForm("", "number", "+15550001111")+"</command>")
		wantError(t, r, "bad-request", "a session that ended with an error")

		// Unregister through the command.
		r = exec(bob, "unregister")
		sid = r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
		r = bob.IQ(t, "set", smsDomain, "<command xmlns='http://jabber.org/protocol/commands' node='unregister' sessionid='"+sid+"' action='complete'>"+
			submitForm("", "confirm", "true")+"</command>")
		wantResult(t, r, "unregister command")
		if st := r.Child("http://jabber.org/protocol/commands", "command").Attr("status"); st != "completed" {
			t.Errorf("unregister status = %q", st)
		}
		r = exec(admin, "list-users")
		if got := strings.Join(formValues(r, "users"), " "); got != "alice@localhost" {
			t.Errorf("registered users after bob left = %q", got)
		}
	})

	t.Run("other virtual host refused", func(t *testing.T) {
		eve := e.dial(t, "eve@other.localhost")
		for _, d := range allDomains {
			wantError(t, eve.IQ(t, "get", d, "<query xmlns='jabber:iq:register'/>"), "forbidden", "register get from other host on "+d)
		}
		wantError(t, register(eve, t, mailDomain, "address", "eve"), "forbidden", "register set from other host")
		r := admin.IQ(t, "set", mailDomain, "<command xmlns='http://jabber.org/protocol/commands' node='list-users' action='execute'/>")
		if got := strings.Join(formValues(r, "users"), " "); strings.Contains(got, "eve") {
			t.Errorf("a refused user was stored: %q", got)
		}
	})

	t.Run("health and metrics", func(t *testing.T) {
		if code := e.healthz(); code != http.StatusOK {
			t.Fatalf("/healthz = %d with every stream up", code)
		}
		resp, err := http.Get("http://" + e.env["PASSERELLE_HTTP_LISTEN"] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`passerelle_connected{domain="sms.localhost"} 1`, "passerelle_stanzas_in_total", "passerelle_refused_total"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %q:\n%s", want, body)
			}
		}
	})

	t.Run("server restart", func(t *testing.T) {
		srv.Stop(t)
		deadline := time.Now().Add(10 * time.Second)
		for e.healthz() != http.StatusServiceUnavailable {
			if time.Now().After(deadline) {
				t.Fatal("/healthz still reports healthy with the XMPP server stopped")
			}
			time.Sleep(50 * time.Millisecond)
		}
		srv.Start(t)
		// Back and serving within 30 s: every stream up, every domain answering.
		deadline = time.Now().Add(30 * time.Second)
		for e.healthz() != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatalf("the gateway is not back 30 s after the server restarted")
			}
			time.Sleep(100 * time.Millisecond)
		}
		c := e.dial(t, "dave@localhost")
		for _, d := range allDomains {
			for {
				r := c.IQ(t, "get", d, "<ping xmlns='urn:xmpp:ping'/>")
				if r.Attr("type") == "result" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s not serving 30 s after the server restarted: %s", d, r)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	})

	t.Run("sigterm", func(t *testing.T) {
		frank := e.dial(t, "frank@localhost")
		wantResult(t, register(frank, t, smsDomain, "number", "+15550002222"), "frank registers")
		acceptGateway(t, frank, smsDomain)
		e.gw.Signal(syscall.SIGTERM)
		frank.Expect(t, wait, "unavailable presence on shutdown", presenceFrom(smsDomain, "unavailable"))
		if code := e.gw.Wait(t, wait); code != 0 {
			t.Fatalf("exit code after SIGTERM = %d\n%s", code, e.gw.Output())
		}
	})
}

func TestWrongSecret(t *testing.T) {
	srv := startServer(t, "prosody")
	env := baseEnv(t, srv)
	env["PASSERELLE_XMPP_SECRET"] = "not-the-secret"
	gw := harness.StartGateway(t, harness.BuildBinary(t), env)
	if code := gw.Wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code = %d, want 1\n%s", code, gw.Output())
	}
	if out := gw.Output(); !strings.Contains(out, "refused the component secret") || !strings.Contains(out, "PASSERELLE_XMPP_SECRET") {
		t.Fatalf("the message does not say the secret was refused:\n%s", out)
	}
	noCancelledErrors(t, gw.Output())
}

// TestUnknownComponentDomain: a component domain the XMPP server does not
// host is a configuration mistake retrying cannot fix: the gateway logs the
// server's stream error and exits 1 naming the domain and its variable.
func TestUnknownComponentDomain(t *testing.T) {
	for _, kind := range []string{"prosody", "ejabberd"} {
		t.Run(kind, func(t *testing.T) {
			srv := startServer(t, kind)
			env := baseEnv(t, srv)
			env["PASSERELLE_IRC_DOMAIN"] = "irc.nowhere.localhost"
			gw := harness.StartGateway(t, harness.BuildBinary(t), env)
			if code := gw.Wait(t, 30*time.Second); code != 1 {
				t.Fatalf("exit code = %d, want 1\n%s", code, gw.Output())
			}
			out := gw.Output()
			for _, want := range []string{"irc.nowhere.localhost", "PASSERELLE_IRC_DOMAIN"} {
				if !strings.Contains(out, want) {
					t.Errorf("the output does not say %q:\n%s", want, out)
				}
			}
			if kind == "prosody" && !strings.Contains(out, "host-unknown: irc.nowhere.localhost does not match any configured external components") {
				t.Errorf("the output does not give the server's stream error and text:\n%s", out)
			}
			noCancelledErrors(t, out)
		})
	}
}

// noCancelledErrors fails when work cancelled by the exit was logged as a
// warning or an error (it belongs at debug level).
func noCancelledErrors(t *testing.T, out string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "context canceled") && (strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN")) {
			t.Errorf("cancelled work logged as a warning or an error: %s", l)
		}
	}
}

func TestBadConfiguration(t *testing.T) {
	bin := harness.BuildBinary(t)
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PASSERELLE_SMS_DOMAIN": "sms.localhost"}, "PASSERELLE_XMPP_SECRET"},
		{map[string]string{"PASSERELLE_XMPP_SECRET": "s"}, "PASSERELLE_IRC_DOMAIN"},
		{map[string]string{"PASSERELLE_XMPP_SECRET": "s", "PASSERELLE_SMS_DOMAIN": "sms.localhost", "PASSERELLE_SMS_NUMBERS": "12"}, "PASSERELLE_SMS_NUMBERS"},
		{map[string]string{"PASSERELLE_XMPP_SECRET": "s", "PASSERELLE_SMS_DOMAIN": "sms.localhost", "PASSERELLE_RETRY_MAX_DELAY": "soon"}, "PASSERELLE_RETRY_MAX_DELAY"},
		{map[string]string{"PASSERELLE_XMPP_SECRET": "s", "PASSERELLE_EMAIL_DOMAIN": "mail.localhost", "PASSERELLE_SMTP_RELAY": "ftp://x:1"}, "PASSERELLE_SMTP_RELAY"},
		{map[string]string{"PASSERELLE_XMPP_SECRET": "s", "PASSERELLE_IRC_DOMAIN": "not a domain"}, "PASSERELLE_IRC_DOMAIN"},
	}
	for _, c := range cases {
		gw := harness.StartGateway(t, bin, c.env)
		if code := gw.Wait(t, wait); code != 2 {
			t.Errorf("%v: exit code = %d, want 2\n%s", c.env, code, gw.Output())
		}
		if !strings.Contains(gw.Output(), c.want) {
			t.Errorf("%v: message does not name %s:\n%s", c.env, c.want, gw.Output())
		}
	}
	gw := harness.StartGateway(t, bin, nil, "-h")
	if code := gw.Wait(t, wait); code != 0 || !strings.Contains(gw.Output(), "PASSERELLE_SMS_WEBHOOK_URL") {
		t.Errorf("-h: exit %d, output:\n%s", code, gw.Output())
	}
}
