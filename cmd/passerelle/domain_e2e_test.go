package main

// End-to-end tests of queries from domain JIDs: another component on the
// same Prosody asks each bridge domain what a user's client would, and the
// gateway's presence carries its entity capabilities (XEP-0115).

import (
	"crypto/sha1"
	"encoding/base64"
	"sort"
	"strings"
	"testing"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// componentIQ sends an IQ from the component peer and returns the answer.
func componentIQ(t *testing.T, c *harness.Client, from, to, typ, id, payload string) *xmlel.Element {
	t.Helper()
	c.Send(t, "<iq type='%s' id='%s' from='%s' to='%s'>%s</iq>", typ, id, from, to, payload)
	return c.Expect(t, wait, "the answer to "+id, func(e *xmlel.Element) bool {
		return e.Local == "iq" && e.Attr("id") == id && e.Attr("from") == to
	})
}

// capsHash is the XEP-0115 verification string of a disco#info result.
func capsHash(info *xmlel.Element) string {
	var ids, features []string
	for _, id := range info.ChildrenNamed("", "identity") {
		ids = append(ids, id.Attr("category")+"/"+id.Attr("type")+"//"+id.Attr("name"))
	}
	for _, f := range info.ChildrenNamed("", "feature") {
		features = append(features, f.Attr("var"))
	}
	sort.Strings(ids)
	sort.Strings(features)
	sum := sha1.Sum([]byte(strings.Join(append(ids, features...), "<") + "<"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func TestDomainQueries(t *testing.T) {
	const probe = "probe.localhost"
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: append(append([]string{}, allDomains...), probe)})
	e := startGateway(t, srv, baseEnv(t, srv))
	peer := harness.DialComponent(t, srv.ComponentAddr(), probe, srv.Secret())
	for _, d := range allDomains {
		t.Run(d, func(t *testing.T) {
			r := componentIQ(t, peer, probe, d, "get", "info-"+d, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
			q := r.Child("http://jabber.org/protocol/disco#info", "query")
			if r.Attr("type") != "result" || q == nil || q.Child("", "identity") == nil {
				t.Fatalf("disco#info from %s: %s", probe, r)
			}
			if r := componentIQ(t, peer, probe, d, "get", "ping-"+d, "<ping xmlns='urn:xmpp:ping'/>"); r.Attr("type") != "result" {
				t.Fatalf("ping from %s: %s", probe, r)
			}
			r = componentIQ(t, peer, probe, d, "get", "items-"+d, "<query xmlns='http://jabber.org/protocol/disco#items'/>")
			wantResult(t, r, "disco#items")
			r = componentIQ(t, peer, probe, d, "get", "version-"+d, "<query xmlns='jabber:iq:version'/>")
			if r.Attr("type") != "result" || r.Child("jabber:iq:version", "query").ChildText("", "name") != "Passerelle" {
				t.Fatalf("version from %s: %s", probe, r)
			}
			r = componentIQ(t, peer, probe, d, "get", "gw-"+d, "<query xmlns='jabber:iq:gateway'/>")
			if r.Attr("type") != "result" || r.Child("jabber:iq:gateway", "query").ChildText("", "prompt") == "" {
				t.Fatalf("gateway prompt from %s: %s", probe, r)
			}
			// What acts for a user is not a domain's to ask.
			r = componentIQ(t, peer, probe, d, "set", "reg-"+d, "<query xmlns='jabber:iq:register'><remove/></query>")
			wantError(t, r, "service-unavailable", "unregistering a domain")
		})
	}

	t.Run("entity capabilities on the gateway's presence", func(t *testing.T) {
		alice := e.dial(t, "alice@localhost")
		wantResult(t, register(alice, t, mailDomain, "address", "alice"), "register")
		alice.Expect(t, wait, "the gateway's subscription request", presenceFrom(mailDomain, "subscribe"))
		p := alice.Expect(t, wait, "the gateway's presence", presenceFrom(mailDomain, ""))
		c := p.Child("http://jabber.org/protocol/caps", "c")
		if c == nil || c.Attr("hash") != "sha-1" || c.Attr("node") == "" {
			t.Fatalf("presence without capabilities: %s", p)
		}
		r := alice.IQ(t, "get", mailDomain, "<query xmlns='http://jabber.org/protocol/disco#info' node='"+harness.Esc(c.Attr("node")+"#"+c.Attr("ver"))+"'/>")
		wantResult(t, r, "disco#info of the caps node")
		if got := capsHash(r.Child("http://jabber.org/protocol/disco#info", "query")); got != c.Attr("ver") {
			t.Fatalf("ver %q, but the node's disco#info hashes to %q", c.Attr("ver"), got)
		}
	})
}
