package main

// TestSeveralInstances: three gateway processes sharing one PostgreSQL
// database (a private cluster) and the three component domains of one
// ejabberd configured from deploy/ejabberd-instances.yml, with six users
// on XMPP, IRC (ngircd, all in one persistent channel), mail (real SMTP into
// any instance, a relay sink) and SMS (the fake provider, webhooks into
// any instance). One instance is killed with SIGKILL in the middle of the
// traffic; the subtests check, and log the figures of, the rejoin of its
// persistent channels on a surviving instance, what was acknowledged
// against what arrived, duplicates, the IRC connections per user, and the
// killed instance restarted (as systemd would) taking its users back.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"passerelle/bridges/sms/smstest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
	"passerelle/store/pgtest"
)

// instance is one gateway process of several.
type instance struct {
	name       string
	env        map[string]string
	gw         *harness.Gateway
	smtp, hook string // its SMTP and SMS webhook listeners
	// wrap, when set, is the command that runs the binary (its last
	// argument).
	wrap []string
}

// newInstance returns instance name with the environment common and
// listeners of its own on free ports, not started.
func newInstance(t *testing.T, name string, common map[string]string) *instance {
	t.Helper()
	in := &instance{name: name, env: map[string]string{}}
	for k, v := range common {
		in.env[k] = v
	}
	in.smtp = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	in.hook = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	in.env["PASSERELLE_SMTP_LISTEN"] = in.smtp
	in.env["PASSERELLE_SMS_WEBHOOK_LISTEN"] = in.hook
	in.env["PASSERELLE_HTTP_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	return in
}

func (in *instance) start(t *testing.T, bin string) {
	t.Helper()
	if in.wrap != nil {
		in.gw = harness.StartGateway(t, in.wrap[0], in.env, append(in.wrap[1:], bin)...)
	} else {
		in.gw = harness.StartGateway(t, bin, in.env)
	}
	for _, d := range allDomains {
		in.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+d)
	}
	in.gw.WaitOutput(t, wait, `msg="listening for SMTP"`)
	in.gw.WaitOutput(t, wait, `msg="SMS webhooks listening"`)
}

// heldIRC is the instance's passerelle_users_held for the IRC domain.
func (in *instance) heldIRC(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(metric(t, in.env, "passerelle_users_held"))
	if err != nil {
		t.Fatalf("%s: passerelle_users_held: %v", in.name, err)
	}
	return n
}

// metrics returns the instance's /metrics ("" when it does not answer).
func (in *instance) metrics() string {
	resp, err := http.Get("http://" + in.env["PASSERELLE_HTTP_LISTEN"] + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// gauge returns the instance's gauge name for domain (-1 when /metrics
// does not show it).
func (in *instance) gauge(name, domain string) int {
	re := regexp.MustCompile(`(?m)^` + name + `\{domain="` + regexp.QuoteMeta(domain) + `",instance="[^"]*"\} (\d+)$`)
	m := re.FindStringSubmatch(in.metrics())
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// servedBy returns, for the log line msg (with component= and user=
// attributes), the users each instance logged it for, by component.
func servedBy(insts []*instance, msg string) map[string]map[string]int {
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `".*?component=(\S+).*?user=(\S+)`)
	out := map[string]map[string]int{}
	for i, in := range insts {
		for _, m := range re.FindAllStringSubmatch(in.gw.Output(), -1) {
			user := strings.SplitN(m[2], "/", 2)[0]
			if out[m[1]] == nil {
				out[m[1]] = map[string]int{}
			}
			out[m[1]][user] = i
		}
	}
	return out
}

// inFlightWindow is how long before the kill a message handed to the
// killed instance (an IRC line to one of its connections, a stanza from one
// of its users) may have been in flight, neither lost nor acknowledged.
const inFlightWindow = 2 * time.Second

// acked is a message a peer handed to the gateway and the gateway (or, for
// IRC, the IRC server) acknowledged.
type acked struct {
	user   int
	marker string // a text that only this message's body holds
	at     time.Time
}

func TestSeveralInstances(t *testing.T) {
	if testCluster != nil {
		t.Skip("runs on its own PostgreSQL cluster in every pass: the pass with PASSERELLE_TEST_DB=postgres would repeat it")
	}
	dbURL := pgtest.New(t).DB(t)
	srv := harness.StartEjabberd(t, harness.ServerOptions{Domain: "localhost", Components: allDomains, DeployInstances: true})
	ngircd := harness.StartNgircd(t)
	_, ircPort, _ := net.SplitHostPort(ngircd.Addr)
	provider := smstest.Start(t, smsSID, smsToken)
	sink := startSink(t)
	bin := harness.BuildBinary(t)

	// ejabberd sends a user's stanzas to slot erlang:phash2({User,
	// Server, <<>>}, 3): two users for each of the three slots.
	users := []string{"u1", "u2", "u0", "u3", "u6", "u10"}
	nUsers := len(users)
	numbers := make([]string, nUsers)
	for i := range users {
		numbers[i] = fmt.Sprintf("+155500011%02d", i)
	}
	common := map[string]string{
		"PASSERELLE_XMPP_ADDR":         srv.ComponentAddr(),
		"PASSERELLE_XMPP_SECRET":       srv.Secret(),
		"PASSERELLE_DB":                dbURL,
		"PASSERELLE_IRC_DOMAIN":        ircDomain,
		"PASSERELLE_IRC_ALLOW_PRIVATE": "true",
		"PASSERELLE_EMAIL_DOMAIN":      mailDomain,
		"PASSERELLE_SMTP_RELAY":        "smtp://" + sink.addr,
		"PASSERELLE_SMS_DOMAIN":        smsDomain,
		"PASSERELLE_SMS_NUMBERS":       strings.Join(numbers, ","),
		"PASSERELLE_SMS_API_URL":       provider.URL(),
		"PASSERELLE_SMS_ACCOUNT_SID":   smsSID,
		"PASSERELLE_SMS_AUTH_TOKEN":    smsToken,
		"PASSERELLE_SMS_WEBHOOK_URL":   smsPublicURL,
		"PASSERELLE_RETRY_MAX_DELAY":   "1s",
		"PASSERELLE_STORE_KEY":         "test-store-key",
		"PASSERELLE_LOG_LEVEL":         "info",
		"PASSERELLE_DNS_RESOLVER":      harness.StartDNS(t).Addr(),
	}
	// The instance killed below runs as on another machine: in a PID
	// namespace of its own, where the others cannot see that its process
	// is gone, so they take its users over only when its lease ends.
	const victim = 0
	insts := make([]*instance, 3)
	for i := range insts {
		in := newInstance(t, fmt.Sprintf("gw%d", i), common)
		if i == victim {
			in.wrap = otherNode()
		}
		in.start(t, bin)
		insts[i] = in
	}
	started := time.Now()

	dave := dialIRC(t, ngircd.Addr, "dave")
	dave.send(t, "JOIN #multi")
	dave.expect(t, "366")

	// Every user registers with the three bridges, and joins #multi,
	// configured persistent, from XMPP.
	room := "#multi%localhost@" + ircDomain
	clients := make([]*harness.Client, nUsers)
	for i, u := range users {
		jid := u + "@localhost"
		c := harness.Dial(t, srv.C2SAddr(), jid, srv.AddUser(t, jid), "test")
		clients[i] = c
		wantResult(t, register(c, t, mailDomain, "address", u), u+" registers with mail")
		wantResult(t, register(c, t, smsDomain, "number", numbers[i]), u+" registers with sms")
		wantResult(t, register(c, t, ircDomain, "nick", u), u+" registers with irc")
		wantResult(t, configureNetwork(t, c, "localhost", "ports", ircPort, "tls_ports", ""), u+" configures the network")
		r := c.IQ(t, "set", room, "<command xmlns='http://jabber.org/protocol/commands' node='configure' action='execute'/>")
		wantResult(t, r, u+": channel configure")
		sid := r.Child("http://jabber.org/protocol/commands", "command").Attr("sessionid")
		wantResult(t, c.IQ(t, "set", room, "<command xmlns='http://jabber.org/protocol/commands' node='configure' sessionid='"+sid+"' action='complete'>"+
			submitForm("", "persistent", "true")+"</command>"), u+": channel configure submit")
		c.Send(t, "<presence to='%s/%s'>%s</presence>", harness.Esc(room), u, mucX())
		c.Expect(t, wait, u+" in #multi", occupant(room+"/"+u, "", "110"))
		dave.expect(t, ":"+u+"!")
	}

	// The spread: which instance each user's stanzas reach (by
	// registration), which holds each user's IRC connection.
	reg := servedBy(insts, "user registered")
	ircOwner := servedBy(insts, "irc connection registered")[ircDomain]
	slot := func(domain string, u int) int { return reg[domain][users[u]+"@localhost"] }
	for _, d := range allDomains {
		per := make([]int, len(insts))
		for _, u := range users {
			i, ok := reg[d][u+"@localhost"]
			if !ok {
				t.Fatalf("%s: no instance logged the registration of %s", d, u)
			}
			per[i]++
		}
		t.Logf("%s: users whose stanzas reach gw0, gw1, gw2: %v", d, per)
		for i, n := range per {
			if n == 0 {
				t.Errorf("%s: no user's stanzas reach %s", d, insts[i].name)
			}
		}
	}
	perIRC := make([]int, len(insts))
	for _, u := range users {
		i, ok := ircOwner[u+"@localhost"]
		if !ok {
			t.Fatalf("no instance logged the irc connection of %s", u)
		}
		perIRC[i]++
		if r := reg[ircDomain][u+"@localhost"]; r != i {
			t.Errorf("%s's irc stanzas reach %s, its irc connection is held by %s", u, insts[r].name, insts[i].name)
		}
	}
	t.Logf("irc connections held by gw0, gw1, gw2: %v; %s will be killed", perIRC, insts[victim].name)
	if perIRC[victim] == 0 {
		t.Errorf("%s, to be killed, holds no irc connection", insts[victim].name)
	}
	for i, in := range insts {
		if n := in.heldIRC(t); n != perIRC[i] {
			t.Errorf("%s: /metrics shows %d irc users held, its log %d", in.name, n, perIRC[i])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	victimNicks := map[string]bool{}
	for _, u := range users {
		if ircOwner[u+"@localhost"] == victim {
			victimNicks[u] = true
		}
	}

	// Every instance has renewed its lease once before the kill: a
	// survivor's first renewal takes any slot found free (one, here,
	// after the kill), later ones only those of instances gone, which is
	// what this test measures.
	time.Sleep(time.Until(started.Add(11 * time.Second)))

	// The traffic: rounds of an IRC line to every user, a mail and a text
	// into the instances in turn (the next one when one does not answer,
	// as a balancer or a second MX would), a text and a mail from a user.
	var (
		ircAcked, mailsIn, textsIn        []acked
		textsOut, mailsOut                []acked
		refusedSMTP, refusedHook, ircSent int
		tKill                             time.Time
	)
	// into hands a message for user u to the instances in turn from the
	// k-th on, until one takes it (try returns nil), and records it in
	// list, or counts it in refused when none took it.
	into := func(k, u int, marker string, list *[]acked, refused *int, try func(in *instance) error) {
		var err error
		for j := 0; j < len(insts); j++ {
			if err = try(insts[(k+j)%len(insts)]); err == nil {
				*list = append(*list, acked{user: u, marker: marker, at: time.Now()})
				return
			}
			var ne *net.OpError
			if !errors.As(err, &ne) {
				break
			}
		}
		*refused++
		t.Logf("%s: no instance took it: %v", marker, err)
	}
	const rounds, killAt = 40, 20
	for k := 0; k < rounds; k++ {
		for i, u := range users {
			dave.send(t, "PRIVMSG %s :irc#%d#%s#", u, k, u)
			ircSent++
			ircAcked = append(ircAcked, acked{user: i, marker: fmt.Sprintf("irc#%d#%s#", k, u), at: time.Now()})
		}
		dave.send(t, "PING :round%d", k)
		if k == killAt {
			insts[victim].gw.Signal(syscall.SIGKILL)
			tKill = time.Now()
		}
		u := k % nUsers
		marker := fmt.Sprintf("mi#%d#", k)
		into(k, u, marker, &mailsIn, &refusedSMTP, func(in *instance) error {
			return sendMail(in.smtp, "bob@example.com", []string{users[u] + "@" + mailDomain},
				fmt.Sprintf("From: Bob <bob@example.com>\nMessage-ID: <%s@example.com>\nSubject: round %d\n\n%s\n", strings.ReplaceAll(marker, "#", "."), k, marker))
		})
		u = (k + 1) % nUsers
		marker = fmt.Sprintf("si#%d#", k)
		into(k+1, u, marker, &textsIn, &refusedHook, func(in *instance) error {
			code, ans, err := provider.Inbound(in.hook, smsPublicURL, smstest.InboundParams(fmt.Sprintf("SMmulti%d", k), contact, numbers[u], marker))
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("webhook: %d %s", code, ans)
			}
			return err
		})
		u = (k + 2) % nUsers
		marker = fmt.Sprintf("so#%d#", k)
		sendText(t, clients[u], contact+"@"+smsDomain, "so"+strconv.Itoa(k), marker, false)
		textsOut = append(textsOut, acked{user: u, marker: marker, at: time.Now()})
		u = (k + 3) % nUsers
		marker = fmt.Sprintf("mo#%d#", k)
		clients[u].Send(t, "<message to='%s' type='chat' id='mo%d'><body>%s</body></message>", harness.Esc("carol%example.org@"+mailDomain), k, marker)
		mailsOut = append(mailsOut, acked{user: u, marker: marker, at: time.Now()})
		time.Sleep(50 * time.Millisecond)
	}
	dave.send(t, "PING :round%d", rounds)
	dave.expect(t, fmt.Sprintf("PONG %s :round%d", ngircd.Name, rounds))
	trafficEnd := time.Now()

	// Which IRC lines ngircd refused (401: the nick was gone) and when
	// dave saw the victim's nicks quit.
	lines := dave.stampedLines()
	refusedIRC := map[string]bool{}
	quitAt := map[string]time.Time{}
	round := 0
	for _, l := range lines {
		f := strings.Fields(l.line)
		switch {
		case len(f) >= 4 && f[1] == "PONG":
			if n, err := strconv.Atoi(strings.TrimPrefix(f[3], ":round")); err == nil {
				round = n + 1
			}
		case len(f) >= 4 && f[1] == "401":
			refusedIRC[fmt.Sprintf("irc#%d#%s#", round, f[3])] = true
		case len(f) >= 2 && f[1] == "QUIT":
			nick := strings.SplitN(strings.TrimPrefix(f[0], ":"), "!", 2)[0]
			if _, ok := quitAt[nick]; !ok && !tKill.IsZero() && l.at.After(tKill) {
				quitAt[nick] = l.at
			}
		}
	}
	var ircOK, inFlight []acked
	for _, a := range ircAcked {
		nick := users[a.user]
		switch {
		case refusedIRC[a.marker]:
		case victimNicks[nick] && a.at.After(tKill.Add(-inFlightWindow)) && (quitAt[nick].IsZero() || a.at.Before(quitAt[nick])):
			inFlight = append(inFlight, a)
		default:
			ircOK = append(ircOK, a)
		}
	}

	t.Run("persistent channels rejoin on a surviving instance within a minute", func(t *testing.T) {
		var slowest time.Duration
		for nick := range victimNicks {
			var at time.Time
			ok := waitUntil(tKill.Add(time.Minute).Sub(time.Now()), func() bool {
				for _, l := range dave.stampedLines() {
					if l.at.After(tKill) && strings.HasPrefix(l.line, ":"+nick+"!") && strings.Contains(l.line, " JOIN ") {
						at = l.at
						return true
					}
				}
				return false
			})
			if !ok {
				t.Errorf("%s (on the killed %s) did not rejoin #multi within a minute", nick, insts[victim].name)
				continue
			}
			slowest = max(slowest, at.Sub(tKill))
			owner := servedBy(insts, "irc connection registered")[ircDomain][nick+"@localhost"]
			if owner == victim {
				t.Errorf("%s rejoined, but no surviving instance logged its irc connection", nick)
			}
		}
		t.Logf("%d persistent connections of the killed instance rejoined; the last %v after the kill", len(victimNicks), slowest.Round(time.Millisecond))
		var held []int
		sum := 0
		for i, in := range insts {
			if i != victim {
				n := in.heldIRC(t)
				held, sum = append(held, n), sum+n
			}
		}
		if sum != nUsers {
			t.Errorf("the surviving instances hold %v irc users, want %d in all", held, nUsers)
		}
	})

	// Waits until every acknowledged message reached its user (or the
	// deadline), then counts.
	arrived := func(a acked) int {
		return countReceived(clients[a.user], func(e *xmlel.Element) bool {
			return harness.IsMessage(e) && e.Attr("type") != "error" && strings.Contains(e.ChildText("", "body"), a.marker)
		})
	}
	atProvider := func(marker string) int {
		n := 0
		for _, r := range provider.Requests() {
			if r.Body() == marker {
				n++
			}
		}
		return n
	}
	atRelay := func(marker string) int { return sink.count("carol@example.org", marker) }
	inbound := map[string][]acked{"irc": ircOK, "mail": mailsIn, "sms": textsIn}
	// An outbound message is expected when its user's stanzas went to a
	// live instance: to another than the victim, or to the victim earlier
	// than inFlightWindow before the kill.
	expectedOut := func(list []acked, domain string) (want, intoDead []acked) {
		for _, a := range list {
			if slot(domain, a.user) == victim && a.at.After(tKill.Add(-inFlightWindow)) {
				intoDead = append(intoDead, a)
			} else {
				want = append(want, a)
			}
		}
		return
	}
	textsWant, textsDead := expectedOut(textsOut, smsDomain)
	mailsWant, mailsDead := expectedOut(mailsOut, mailDomain)
	complete := func() bool {
		for _, list := range inbound {
			for _, a := range list {
				if arrived(a) == 0 {
					return false
				}
			}
		}
		for _, a := range textsWant {
			if atProvider(a.marker) == 0 {
				return false
			}
		}
		for _, a := range mailsWant {
			if atRelay(a.marker) == 0 {
				return false
			}
		}
		return true
	}
	t0 := time.Now()
	allThere := waitUntil(90*time.Second, complete)
	t.Logf("waited %v after the traffic for the acknowledged messages (all there: %v)", time.Since(t0).Round(time.Millisecond), allThere)

	t.Run("every acknowledged message arrives, duplicates only at least once", func(t *testing.T) {
		for _, kind := range []string{"irc", "mail", "sms"} {
			lost, dups := 0, 0
			for _, a := range inbound[kind] {
				switch n := arrived(a); {
				case n == 0:
					lost++
					t.Errorf("%s: %s, acknowledged at %v (kill at %v), never reached %s", kind, a.marker, a.at.Format("15:04:05.000"), tKill.Format("15:04:05.000"), users[a.user])
				case n > 1:
					dups += n - 1
					if n > 2 || !a.at.Before(tKill) {
						t.Errorf("%s: %s reached %s %d times (acknowledged %v after the kill)", kind, a.marker, users[a.user], n, a.at.Sub(tKill).Round(time.Millisecond))
					}
				}
			}
			t.Logf("%s into XMPP: %d acknowledged, %d arrived, %d duplicates", kind, len(inbound[kind]), len(inbound[kind])-lost, dups)
		}
		flightArrived := 0
		for _, a := range inFlight {
			if arrived(a) > 0 {
				flightArrived++
			}
		}
		var quits []string
		for nick, at := range quitAt {
			quits = append(quits, fmt.Sprintf("%s %v", nick, at.Sub(tKill).Round(time.Millisecond)))
		}
		sort.Strings(quits)
		t.Logf("irc lines: %d sent, %d refused by ngircd (nick gone), %d in flight to the killed instance's connections (from %v before the kill to the QUIT dave saw: %s), not counted, of which %d arrived",
			ircSent, len(refusedIRC), len(inFlight), inFlightWindow, strings.Join(quits, ", "), flightArrived)
		t.Logf("refused by every instance: %d mails, %d webhooks", refusedSMTP, refusedHook)
		for _, o := range []struct {
			kind       string
			want, dead []acked
			count      func(string) int
		}{{"texts to the provider", textsWant, textsDead, atProvider}, {"mails to the relay", mailsWant, mailsDead, atRelay}} {
			lost, dups, deadArrived := 0, 0, 0
			for _, a := range o.want {
				switch n := o.count(a.marker); {
				case n == 0:
					lost++
					t.Errorf("%s: %s from %s (sent %v after the kill) never arrived", o.kind, a.marker, users[a.user], a.at.Sub(tKill).Round(time.Millisecond))
				case n > 1:
					dups += n - 1
					if n > 2 || !a.at.Before(tKill) {
						t.Errorf("%s: %s sent %d times", o.kind, a.marker, n)
					}
				}
			}
			after, afterArrived := 0, 0
			for _, a := range o.dead {
				arrived := o.count(a.marker) > 0
				if arrived {
					deadArrived++
				}
				if a.at.After(tKill) {
					after++
					if arrived {
						afterArrived++
					}
				}
			}
			t.Logf("%s: %d from users of live instances, %d arrived, %d duplicates; %d sent into the killed instance's slot from %v before the kill, %d of those arrived; %d of them after the kill, %d of those arrived",
				o.kind, len(o.want), len(o.want)-lost, dups, len(o.dead), inFlightWindow, deadArrived, after, afterArrived)
		}
	})

	// ngircd's count of clients and the nicks dave saw in #multi.
	lusers := func() int {
		dave.send(t, "LUSERS")
		l := dave.expect(t, " 251 ")
		var n int
		if i := strings.Index(l, "There are "); i >= 0 {
			fmt.Sscanf(l[i:], "There are %d users", &n)
		}
		return n
	}
	checkOneConnectionEach := func(t *testing.T) {
		t.Helper()
		known := map[string]bool{"dave": true}
		for _, u := range users {
			known[u] = true
		}
		for _, l := range dave.stampedLines() {
			f := strings.Fields(l.line)
			if len(f) >= 3 && (f[1] == "JOIN" || f[1] == "NICK") {
				nick := strings.SplitN(strings.TrimPrefix(f[0], ":"), "!", 2)[0]
				if !known[nick] || (f[1] == "NICK" && !known[strings.TrimPrefix(f[2], ":")]) {
					t.Errorf("a second connection for a user: %q", l.line)
				}
			}
		}
		if n := lusers(); n != nUsers+1 {
			t.Errorf("ngircd has %d clients, want %d (the users and dave)", n, nUsers+1)
		}
	}
	t.Run("never two IRC connections for one user", checkOneConnectionEach)

	// The users whose stanzas went to the killed instance: ejabberd's
	// slot for it (component_number) stays empty until an instance
	// connects again. A text from each of them must reach the provider.
	var orphans []int
	for u := range users {
		if slot(smsDomain, u) == victim {
			orphans = append(orphans, u)
		}
	}
	textFromOrphans := func(t *testing.T, tag string) {
		t.Helper()
		for _, u := range orphans {
			marker := fmt.Sprintf("%s#%s#", tag, users[u])
			sendText(t, clients[u], contact+"@"+smsDomain, tag+users[u], marker, false)
			if !waitUntil(wait, func() bool { return atProvider(marker) > 0 }) {
				t.Errorf("a text from %s (its stanzas went to the killed instance) did not reach the provider within %v", users[u], wait)
			}
		}
	}
	// ejabberd keeps the killed instance's slots empty (dropping what
	// their users send) until a connection takes them: once its row is
	// gone (its lease ended), the survivors open connections that do.
	t.Run("users of the killed instance reach a surviving one", func(t *testing.T) {
		for _, d := range allDomains {
			var at time.Time
			var by []string
			ok := waitUntil(time.Until(tKill.Add(time.Minute)), func() bool {
				by = nil
				for i, in := range insts {
					if i == victim {
						continue
					}
					for _, a := range loggedAt(in.gw.Output(), slotTaken, d, tKill) {
						at, by = a, append(by, in.name)
					}
				}
				return len(by) > 0
			})
			if !ok {
				t.Errorf("%s: no surviving instance took the killed instance's slot within a minute of the kill", d)
				continue
			}
			t.Logf("%s: %v took the killed instance's slot %v after the kill", d, by, at.Sub(tKill).Round(time.Millisecond))
			if len(by) != 1 {
				t.Errorf("%s: %d connections took a slot, want 1 (one slot was free)", d, len(by))
			}
		}
		textFromOrphans(t, "survivor")
	})

	// Restarted (as systemd's Restart=on-failure does), the instance takes
	// its slot again; still one connection per user.
	killedOutput := insts[victim].gw.Output()
	restart := time.Now()
	insts[victim].start(t, bin)
	t.Logf("the killed instance restarted and connected in %v", time.Since(restart).Round(time.Millisecond))
	t.Run("after a restart of the killed instance", func(t *testing.T) {
		// It finds every slot taken (a standby): the survivor holding the
		// killed instance's slot hands it back when it sees the new
		// instance, and the restarted one's next try takes it. Between
		// the two, ejabberd drops what that slot's users send.
		for _, d := range allDomains {
			var took, handed time.Time
			ok := waitUntil(40*time.Second, func() bool {
				ts := loggedAt(insts[victim].gw.Output(), slotTaken, d, restart)
				if len(ts) == 0 {
					return false
				}
				took = ts[0]
				for i, in := range insts {
					if i != victim {
						for _, h := range loggedAt(in.gw.Output(), slotHandedBack, d, restart) {
							handed = h
						}
					}
				}
				return !handed.IsZero()
			})
			if !ok {
				t.Errorf("%s: the restarted instance did not take a slot handed back within 40 s (took %v, handed back %v)", d, took, handed)
				continue
			}
			t.Logf("%s: slot handed back %v after the restart, taken %v later (the gap ejabberd drops that slot's stanzas in)",
				d, handed.Sub(restart).Round(time.Millisecond), took.Sub(handed).Round(time.Millisecond))
		}
		// Every slot is held, one of them by the restarted instance.
		for _, d := range allDomains {
			var per []int
			sum := 0
			for _, in := range insts {
				n := in.gauge("passerelle_slots_held", d)
				per, sum = append(per, n), sum+n
			}
			if sum != len(insts) || per[victim] != 1 {
				t.Errorf("%s: slots held by gw0, gw1, gw2: %v, want 3 in all and 1 by the restarted %s", d, per, insts[victim].name)
			}
		}
		textFromOrphans(t, "restarted")
		// The users of its slot write to IRC again: it takes their
		// connections over from the instance that adopted them. A
		// temporary error (type wait) is retried, as a client would.
		t0 := time.Now()
		send := func(u, try int) string {
			id := fmt.Sprintf("h%d-%d", u, try)
			clients[u].Send(t, "<message to='%s' type='chat' id='%s'><body>handover#%s#</body></message>", harness.Esc("dave%localhost@"+ircDomain), id, users[u])
			return id
		}
		ids := map[int]string{}
		for u := range users {
			if slot(ircDomain, u) == victim {
				ids[u] = send(u, 0)
			}
		}
		for u, id := range ids {
			nick := users[u]
			reached := func() bool {
				for _, l := range dave.stampedLines() {
					if strings.HasPrefix(l.line, ":"+nick+"!") && strings.HasSuffix(l.line, "PRIVMSG dave :handover#"+nick+"#") {
						return true
					}
				}
				return false
			}
			var errs []string
			for try := 0; ; {
				var e *xmlel.Element
				waitUntil(time.Minute-time.Since(t0), func() bool {
					for _, el := range clients[u].Received() {
						if el.Attr("id") == id && el.Attr("type") == "error" {
							e = el
						}
					}
					return e != nil || reached()
				})
				if e == nil {
					break
				}
				errs = append(errs, e.String())
				if e.Child("", "error").Attr("type") != "wait" || time.Since(t0) > time.Minute {
					break
				}
				time.Sleep(500 * time.Millisecond)
				try++
				id = send(u, try)
			}
			if !reached() {
				t.Errorf("%s's private message to dave, sent through the restarted instance, did not reach IRC within a minute; errors: %v", nick, errs)
				continue
			}
			if len(errs) > 0 {
				t.Logf("%s's private message was refused %d times first: %v", nick, len(errs), errs)
			}
			t.Logf("%s's private message reached IRC %v after it was first sent", nick, time.Since(t0).Round(time.Millisecond))
		}
		if n := insts[victim].heldIRC(t); n != len(victimNicks) {
			t.Errorf("the restarted instance holds %d irc users, want %d", n, len(victimNicks))
		}
		// Give it the time to rejoin what it would.
		time.Sleep(3 * time.Second)
		checkOneConnectionEach(t)
		for _, in := range insts {
			if out := in.gw.Output(); strings.Contains(out, "level=ERROR") {
				t.Logf("%s logged errors:\n%s", in.name, grepLines(out, "level=ERROR"))
			}
		}
	})

	// Each instance confirms what its outbox wrote, and probes a silent
	// server, with pings to its own domain; an unanswered probe drops the
	// connection (and with it the instance's slot).
	t.Run("every instance's confirmations and idle probes come back", func(t *testing.T) {
		if d := time.Until(trafficEnd.Add(35 * time.Second)); d > 0 {
			time.Sleep(d)
		}
		outs := []string{killedOutput}
		for _, in := range insts {
			outs = append(outs, in.gw.Output())
		}
		for i, out := range outs {
			for _, bad := range []string{"the server does not answer the outbox confirmation ping", "an outbox confirmation did not come back",
				"lost the XMPP server", "lost an extra connection", "did not answer a ping"} {
				if n := strings.Count(out, bad); n > 0 {
					t.Errorf("output %d: %q %d times", i, bad, n)
				}
			}
		}
	})
}

// The log lines of a connection taking a balancing slot, and of one
// handed back.
const (
	slotTaken      = "took a balancing slot of the server with another connection"
	slotHandedBack = "an instance joined: handing a balancing slot back (closing an extra connection)"
)

// loggedAt returns the times of the lines of out with message msg for
// component domain, logged after since.
func loggedAt(out, msg, domain string, since time.Time) []time.Time {
	re := regexp.MustCompile(`(?m)^time=(\S+) level=\w+ msg="` + regexp.QuoteMeta(msg) + `".* component=` + regexp.QuoteMeta(domain) + `( |$)`)
	var ts []time.Time
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && at.After(since) {
			ts = append(ts, at)
		}
	}
	return ts
}

// otherNode is the command that runs a gateway as on another machine: in
// a PID namespace of its own (unshare(1); a user namespace too when not
// root), killed with it.
func otherNode() []string {
	if os.Geteuid() == 0 {
		return []string{"unshare", "--pid", "--fork", "--kill-child"}
	}
	return []string{"unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"}
}

// grepLines returns the lines of s containing substr.
func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
