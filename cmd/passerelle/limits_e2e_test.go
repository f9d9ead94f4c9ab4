package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// Stanzas over the gateway's limits (nested too deep, too many attributes,
// too large) sent through a real Prosody by users outside and inside
// PASSERELLE_ALLOW are each answered with policy-violation, and the
// component stream stays up: another user's traffic to the same bridge in
// the same window is all answered, none bounced, none lost.
func TestStanzaLimitsKeepTheBridge(t *testing.T) {
	// Prosody's own limit for client stanzas (256 KiB by default) is
	// raised above the gateway's, so what is tested is the gateway's.
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", ExtraHosts: []string{"other.localhost"},
		Components: allDomains, C2SStanzaSizeLimit: 4 * xmlel.MaxStanzaSize})
	e := startGateway(t, srv, baseEnv(t, srv))
	alice := e.dial(t, "alice@localhost")
	mallory := e.dial(t, "mallory@localhost") // inside PASSERELLE_ALLOW
	eve := e.dial(t, "eve@other.localhost")   // outside

	deep := "<body>deep</body>" + strings.Repeat("<a>", xmlel.MaxDepth+1) + strings.Repeat("</a>", xmlel.MaxDepth+1)
	var b strings.Builder
	for i := range 2 * xmlel.MaxAttrs {
		fmt.Fprintf(&b, " a%d='%d'", i, i)
	}
	manyAttrs := "<body>attributes</body><x xmlns='urn:example:attrs'" + b.String() + "/>"
	oversize := "<body>" + strings.Repeat("x", xmlel.MaxStanzaSize+xmlel.MaxStanzaSize/2) + "</body>"

	type hostile struct {
		c        *harness.Client
		id, says string // the answer's text says which limit
	}
	var sent []hostile
	var pings []string
	// Alice pings the IRC bridge every 50 ms; the stanzas over a limit go
	// between her pings.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	ping := func(n int) {
		for range n {
			<-tick.C
			id := fmt.Sprintf("alice-ping-%d", len(pings))
			alice.Send(t, "<iq type='get' to='%s' id='%s'><ping xmlns='urn:xmpp:ping'/></iq>", ircDomain, id)
			pings = append(pings, id)
		}
	}
	send := func(c *harness.Client, id, inside string) {
		c.Send(t, "<message to='%s' id='%s' type='chat'>%s</message>", ircDomain, id, inside)
		says := map[string]string{"deep": "nested deeper", "attrs": "more attributes", "oversize": "larger"}[strings.Split(id, "-")[0]]
		sent = append(sent, hostile{c, id, says})
	}
	// The window: ten stanzas nested too deep in 5 s, from a
	// user outside PASSERELLE_ALLOW.
	disconnects := func() int {
		return strings.Count(e.gw.Output(), `msg="lost the XMPP server; reconnecting" component=`+ircDomain)
	}
	for i := range 10 {
		send(eve, fmt.Sprintf("deep-%d", i), deep)
		ping(10)
	}
	windowPings, windowDisconnects := len(pings), disconnects()
	// Then each limit, from outside and from inside.
	for _, c := range []*harness.Client{eve, mallory} {
		send(c, "deep", deep)
		ping(5)
		send(c, "attrs", manyAttrs)
		ping(5)
		send(c, "oversize", oversize)
		ping(5)
	}
	// A large stanza under the gateway's limit (over Prosody's default
	// one) reaches the bridge and is answered.
	big := mallory.IQ(t, "get", ircDomain, "<ping xmlns='urn:xmpp:ping'><x xmlns='urn:example:pad'>"+strings.Repeat("y", xmlel.MaxStanzaSize-4096)+"</x></ping>")
	ping(5)

	// Figures: the sender's answers, the gateway's reconnections, the
	// bounces and losses of alice's traffic.
	deadline := time.Now().Add(15 * time.Second)
	answered, wrong := 0, []string{}
	for _, h := range sent {
		r, ok := awaitReply(h.c, h.id, time.Until(deadline))
		switch {
		case !ok:
			wrong = append(wrong, h.c.JID+" "+h.id+": no answer")
		case errCondition(r) != "policy-violation" || !strings.Contains(stanza.ErrorOf(r).Text, h.says):
			wrong = append(wrong, h.c.JID+" "+h.id+": "+r.String())
		default:
			answered++
		}
	}
	// results, bounces and losses among alice's pings
	count := func(ids []string) (results, bounces, lost int) {
		for _, id := range ids {
			r, ok := awaitReply(alice, id, time.Until(deadline))
			switch {
			case !ok:
				lost++
			case r.Attr("type") == "result":
				results++
			default:
				bounces++
			}
		}
		return
	}
	wr, wb, wl := count(pings[:windowPings])
	t.Logf("in the window of 10 stanzas nested too deep in 5 s: %d disconnects of %s; alice: %d pings, %d answered, %d bounced, %d lost",
		windowDisconnects, ircDomain, windowPings, wr, wb, wl)
	results, bounces, lost := count(pings)
	total := disconnects()
	t.Logf("in all: %d stanzas over a limit sent, %d answered with policy-violation; %d disconnects of %s; alice: %d pings, %d answered, %d bounced, %d lost; large stanza under the limit: %s",
		len(sent), answered, total, ircDomain, len(pings), results, bounces, lost, big.Attr("type"))

	if total != 0 {
		t.Errorf("the component stream of %s was dropped %d times", ircDomain, total)
	}
	if len(wrong) > 0 {
		t.Errorf("stanzas over a limit not answered with policy-violation:\n%s", strings.Join(wrong, "\n"))
	}
	if bounces != 0 || lost != 0 || results != len(pings) {
		t.Errorf("alice's pings: %d sent, %d answered, %d bounced, %d lost", len(pings), results, bounces, lost)
	}
	wantResult(t, big, "a ping of about "+fmt.Sprint(xmlel.MaxStanzaSize-4096)+" bytes")
	for _, want := range []string{`msg="skipped a stanza over a limit" component=irc.localhost limit=depth max=64 from=eve@other.localhost/test`,
		`limit=attributes max=100 from=mallory@localhost/test`, `limit=size max=1048576 from=eve@other.localhost/test`} {
		if !strings.Contains(e.gw.Output(), want) {
			t.Errorf("the gateway's log has no %q", want)
		}
	}
}

// awaitReply waits up to timeout for the answer to the stanza id sent by
// c (type result or error), and reports whether it came.
func awaitReply(c *harness.Client, id string, timeout time.Duration) (*xmlel.Element, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, r := range c.Received() {
			if r.Attr("id") == id && (r.Attr("type") == "result" || r.Attr("type") == "error") {
				return r, true
			}
		}
		if time.Now().After(deadline) || c.Err() != nil {
			return nil, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
