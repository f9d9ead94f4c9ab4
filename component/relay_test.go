package component

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
	"passerelle/store/pgtest"
	"passerelle/store/storetest"
)

// listening waits until n's instance listened for relayed answers times
// times.
func listening(t *testing.T, n *node, times int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the instance's listener up (%d)", times), func() bool {
		return strings.Count(n.logs.String(), "listening for the answers other instances pass on") >= times
	})
}

// listeningPair starts two instances on a new database, a and b, and
// waits until a listens for what b passes on.
func listeningPair(t *testing.T, cluster *pgtest.Cluster) (log *eventLog, a, b *node) {
	t.Helper()
	url := cluster.DB(t)
	log = &eventLog{}
	a = startNode(t, url, "a", log, time.Second)
	b = startNode(t, url, "b", log, time.Second)
	listening(t, a, 1)
	return log, a, b
}

// ask sends req through n's component (its IQ) and returns the request
// as the server got it and a channel of the answer (or error).
func ask(t *testing.T, n *node, req *xmlel.Element, wait time.Duration) (*xmlel.Element, <-chan any) {
	t.Helper()
	waitFor(t, "the stream up", func() bool { return n.c.m.Connected.Load() == 1 })
	out := make(chan any, 1)
	typ, to := req.Attr("type"), req.Attr("to") // IQ sets the id meanwhile
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		r, err := n.c.IQ(ctx, req)
		if err != nil {
			out <- err
			return
		}
		out <- r
	}()
	got := n.fc.expect(t, "the request on the instance's stream", func(e *xmlel.Element) bool {
		return e.Local == "iq" && e.Attr("type") == typ && e.Attr("to") == to
	})
	return got, out
}

func answer(t *testing.T, out <-chan any) *xmlel.Element {
	t.Helper()
	select {
	case v := <-out:
		r, ok := v.(*xmlel.Element)
		if !ok {
			t.Fatalf("the request failed: %v", v)
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("the request did not end")
		return nil
	}
}

// Two instances on one PostgreSQL database, each with its stream: the
// answer to a's request reaches b's stream (as ejabberd routes it by the
// answering JID), and b passes it on to a, whose request gets it.
func TestRelayedAnswers(t *testing.T) {
	cluster := pgtest.New(t)
	roster := func(n *node, to string) (*xmlel.Element, <-chan any) {
		return ask(t, n, stanza.IQ("", to, "get", "", xmlel.New(stanza.NSRoster, "query")), 20*time.Second)
	}

	t.Run("answers reach the instance that asked", func(t *testing.T) {
		log, a, b := listeningPair(t, cluster)

		// The user's server answers a privileged roster get, with many
		// items (more than one notification carries).
		req, out := roster(a, "u@example.org")
		var items strings.Builder
		for i := range 300 {
			fmt.Fprintf(&items, "<item jid='c%d%%example.net@test.example.org' name='Contact é %d' subscription='both'><group>Email</group></item>", i, i)
		}
		b.fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='%s'><query xmlns='jabber:iq:roster'>%s</query></iq>", req.Attr("id"), items.String())
		r := answer(t, out)
		if q := r.Child(stanza.NSRoster, "query"); q == nil || len(q.Children) != 300 || q.Children[299].Attr("name") != "Contact é 299" {
			t.Fatalf("a's request got %.300s", r)
		}
		// An error, from the server's domain.
		req, out = ask(t, a, stanza.IQ("", "example.org", "get", "", xmlel.New(stanza.NSDiscoItems, "query")), 20*time.Second)
		b.fc.send(t, "<iq type='error' from='example.org' to='test.example.org' id='%s'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", req.Attr("id"))
		if r := answer(t, out); r.Attr("type") != "error" || !strings.Contains(r.String(), "service-unavailable") {
			t.Fatalf("a's request got %s", r)
		}
		// (a may get the answer before b's count goes up)
		waitFor(t, "b's count of answers passed on at 2", func() bool { return b.c.m.Relayed.Load() == 2 })
		// A user's answer passed on does not make b the user's holder.
		if log.has("b acquired u@example.org") || b.c.heldCount() != 0 || log.has("b handled u@example.org ") {
			t.Fatalf("b took the answering user: %v", log.all())
		}
		// Its own answers b keeps; an id of no instance's is not
		// passed on.
		req, out = roster(b, "v@example.org")
		b.fc.send(t, "<iq type='result' from='v@example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
		answer(t, out)
		b.fc.send(t, "<iq type='result' from='w@example.org' to='test.example.org' id='prZZZZZZZZ-1'/>")
		b.fc.send(t, "<iq type='result' from='w@example.org' to='test.example.org' id='pr12345678'/>")
		b.fc.send(t, "<message from='w@example.org/r' to='x%%irc@test.example.org' id='m'><body>after</body></message>")
		waitEvent(t, log, "b handled w@example.org after")
		if n := b.c.m.Relayed.Load(); n != 2 {
			t.Fatalf("b passed on %d answers, want 2", n)
		}
	})

	// The connection a listens on is cut: a listens again, and what is
	// passed on from then on reaches it.
	t.Run("listener cut", func(t *testing.T) {
		_, a, b := listeningPair(t, cluster)
		storetest.CutListeners(t, b.st)
		listening(t, a, 2)
		if !strings.Contains(a.logs.String(), "cannot listen for the answers other instances pass on") {
			t.Fatalf("a's lost listener is not logged:\n%s", a.logs)
		}
		req, out := roster(a, "u@example.org")
		b.fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
		if r := answer(t, out); r.Attr("id") != req.Attr("id") {
			t.Fatalf("a's request got %s", r)
		}
	})

	// b cannot write to the database: the answer is dropped and logged,
	// and a's request times out as before.
	t.Run("relay fails", func(t *testing.T) {
		_, a, b := listeningPair(t, cluster)
		req, out := ask(t, a, stanza.IQ("", "u@example.org", "get", "", xmlel.New(stanza.NSRoster, "query")), 3*time.Second)
		b.st.Close()
		b.fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
		waitFor(t, "b's failure logged", func() bool {
			return strings.Contains(b.logs.String(), "cannot pass an answer on to the instance that asked: dropped")
		})
		select {
		case v := <-out:
			if err, ok := v.(error); !ok || err != context.DeadlineExceeded {
				t.Fatalf("a's request got %v", v)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a's request did not end")
		}
	})

	// The instance that asked is gone: its answer, passed on, is lost
	// without harm; a late answer to a request that ended is dropped.
	t.Run("requester gone", func(t *testing.T) {
		_, a, b := listeningPair(t, cluster)
		req, out := ask(t, a, stanza.IQ("", "u@example.org", "get", "", xmlel.New(stanza.NSRoster, "query")), time.Second)
		if v := <-out; v != context.DeadlineExceeded {
			t.Fatalf("a's request got %v", v)
		}
		b.fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
		waitFor(t, "b passed the late answer on", func() bool { return b.c.m.Relayed.Load() == 1 })
		a.kill()
		b.fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
		waitFor(t, "b passed the answer on", func() bool { return b.c.m.Relayed.Load() == 2 })
		if strings.Contains(b.logs.String(), "cannot pass an answer on") {
			t.Fatalf("b's relay to a gone instance failed:\n%s", b.logs)
		}
	})
}

// What cannot be passed on, or is not to be taken.
func TestRelayRefusals(t *testing.T) {
	cluster := pgtest.New(t)
	const advert = "<message from='example.org' to='test.example.org'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/></privilege></message>"

	// b's queue of stanzas to pass on is full: what comes is dropped
	// and logged.
	t.Run("queue full", func(t *testing.T) {
		_, a, b := listeningPair(t, cluster)
		block := make(chan struct{})
		defer close(block)
		running := make(chan struct{})
		if err := b.c.Post(relayKey, func(context.Context) { close(running); <-block }); err != nil {
			t.Fatal(err)
		}
		<-running
		for b.c.Post(relayKey, func(context.Context) { <-block }) == nil {
		}
		req, _ := ask(t, a, stanza.IQ("", "u@example.org", "get", "", xmlel.New(stanza.NSRoster, "query")), time.Second)
		b.fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
		b.fc.send(t, advert)
		waitFor(t, "b's drops logged", func() bool {
			l := b.logs.String()
			return strings.Contains(l, "too many answers to pass on to other instances: dropped") &&
				strings.Contains(l, "cannot pass the server's privilege advertisement on to the other instances")
		})
	})

	// An answer to a's request id from a JID the gateway does not ask
	// (a remote user, a remote server, a user outside the allowed ones)
	// is dropped quietly by b, and counted; the answer of the JID asked,
	// and of the server's services, are passed on.
	t.Run("sender not asked", func(t *testing.T) {
		_, a, b := listeningPair(t, cluster)
		req, out := ask(t, a, stanza.IQ("", "u@example.org", "get", "", xmlel.New(stanza.NSRoster, "query")), 20*time.Second)
		for _, from := range []string{"mallory@evil.example.net/r", "evil.example.net", "x@test.example.org", "example.org.evil.example.net", "u@evil.example.net"} {
			b.fc.send(t, "<iq type='result' from='%s' to='test.example.org' id='%s'><query xmlns='jabber:iq:roster'><item jid='%s'/></query></iq>", from, req.Attr("id"), from)
		}
		b.fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
		if r := answer(t, out); r.Attr("from") != "u@example.org" {
			t.Fatalf("a's request got %s", r)
		}
		waitFor(t, "b's count of answers passed on at 1", func() bool { return b.c.m.Relayed.Load() == 1 })
		if n := b.c.m.NotRelayed.Load(); n != 5 {
			t.Fatalf("b dropped %d answers, want 5", n)
		}
		var w strings.Builder
		b.c.opts.Metrics.WritePrometheus(&w)
		if !strings.Contains(w.String(), `passerelle_not_relayed_total{domain="test.example.org"} 5`) {
			t.Errorf("b's metrics:\n%s", w.String())
		}
		if strings.Contains(b.logs.String(), "refused a user outside PASSERELLE_ALLOW") {
			t.Errorf("b refused an answer instead of dropping it:\n%s", b.logs)
		}
		// The server's services (an upload service's slot) answer too.
		req, out = ask(t, a, stanza.IQ("", "upload.example.org", "get", "", xmlel.New(stanza.NSUpload, "request")), 20*time.Second)
		b.fc.send(t, "<iq type='result' from='upload.example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
		if r := answer(t, out); r.Attr("from") != "upload.example.org" {
			t.Fatalf("a's request got %s", r)
		}
	})

	// What an instance takes from the others: answers and privilege
	// advertisements for a domain it serves, nothing else.
	t.Run("not to be taken", func(t *testing.T) {
		_, a, _ := listeningPair(t, cluster)
		ctx := context.Background()
		for _, r := range []store.Relayed{
			{Domain: "test.example.org", Stanza: []byte("<message from='u@example.org/r' to='test.example.org'><body>x</body></message>")},
			{Domain: "test.example.org", Stanza: []byte("<iq type='result'")},
			{Domain: "other.example.org", Stanza: []byte("<iq type='result' id='x'/>")},
		} {
			if err := a.st.Relay(ctx, a.inst.relayName, r); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "a's refusals logged", func() bool {
			l := a.logs.String()
			return strings.Contains(l, "another instance passed on what is not an answer: dropped") &&
				strings.Contains(l, "a stanza passed on by another instance does not parse: dropped") &&
				strings.Contains(l, "a stanza passed on by another instance is for a domain this instance does not serve: dropped")
		})
	})

	// An instance whose listener does not come up: its components
	// connect after listenWait all the same, and say so.
	t.Run("listener late", func(t *testing.T) {
		st, err := store.Open(cluster.DB(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		lb := &logBuffer{}
		in := testInstance(st, time.Second, lb)
		in.listenWait = 100 * time.Millisecond
		srv := newFakeServer(t, "s")
		c, _, _ := startComponent(t, srv, newRecordingBridge(), "s", func(c *Component) {
			c.inst = in
			in.add(c)
			c.log = slog.New(slog.NewTextHandler(lb, nil))
		})
		srv.accept(t)
		waitFor(t, "the stream up", func() bool { return c.m.Connected.Load() == 1 })
		if !strings.Contains(lb.String(), "connecting before the instance listens for what the others pass on") {
			t.Fatalf("log:\n%s", lb)
		}
	})
}

// The server's privilege advertisement reaches one instance (ejabberd
// routes it by the server's domain): that one passes it on to the others,
// which use the privileges as if their stream had brought it.
func TestRelayedGrants(t *testing.T) {
	cluster := pgtest.New(t)
	const lease = time.Second
	const advert = "<message from='example.org' to='test.example.org'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='message' type='outgoing'/></privilege></message>"

	t.Run("shared", func(t *testing.T) {
		url := cluster.DB(t)
		log := &eventLog{}
		a := startNode(t, url, "a", log, lease)
		b := startNode(t, url, "b", log, lease)
		c := startNode(t, url, "c", log, lease)
		b.fc.send(t, advert)
		for _, n := range []*node{a, b, c} {
			waitFor(t, "the grant recorded", func() bool { return n.c.grant("u@example.org").RosterSet() })
		}
		if g := a.c.grant("u@example.org"); g.Message != "outgoing" || g.NS != stanza.NSPrivilege2 {
			t.Fatalf("a's grant: %+v", g)
		}
		waitFor(t, "b's count of stanzas passed on at 1", func() bool { return b.c.m.Relayed.Load() == 1 })
		if a.c.m.Relayed.Load() != 0 || c.c.m.Relayed.Load() != 0 {
			t.Fatal("an advertisement passed on was passed on again")
		}
	})

	// b cannot write to the database: a does not learn the grant, and b
	// logs it.
	t.Run("relay fails", func(t *testing.T) {
		_, a, b := listeningPair(t, cluster)
		b.st.Close()
		b.fc.send(t, advert)
		waitFor(t, "b's failure logged", func() bool {
			return strings.Contains(b.logs.String(), "cannot pass the server's privilege advertisement on to the other instances")
		})
		if !b.c.grant("u@example.org").RosterSet() || a.c.grant("u@example.org").RosterSet() {
			t.Fatalf("grants: b %+v, a %+v", b.c.grant("u@example.org"), a.c.grant("u@example.org"))
		}
	})
}

// On SQLite the process is alone: request ids are as they were, and an
// answer to an id shaped like another instance's is not passed on.
func TestRelayAlone(t *testing.T) {
	st, err := store.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	in := NewInstance(st, nil)
	srv := newFakeServer(t, "s")
	b := newRecordingBridge()
	c, _, _ := startComponent(t, srv, b, "s", func(c *Component) { c.inst = in; in.add(c) })
	fc := srv.accept(t)
	n := &node{c: c, fc: fc}
	req, out := ask(t, n, stanza.IQ("", "u@example.org", "get", "", xmlel.New(stanza.NSRoster, "query")), 20*time.Second)
	if strings.HasPrefix(req.Attr("id"), relayIDPrefix) && len(req.Attr("id")) > len(relayIDPrefix)+relayNameLen && req.Attr("id")[len(relayIDPrefix)+relayNameLen] == '-' {
		t.Fatalf("a request id names a relay on SQLite: %s", req.Attr("id"))
	}
	fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='%s'/>", req.Attr("id"))
	answer(t, out)
	fc.send(t, "<iq type='result' from='u@example.org' to='test.example.org' id='pr12345678-1'/>")
	fc.send(t, "<message from='u@example.org/r' to='test.example.org' id='m' type='chat'><body>after</body></message>")
	waitFor(t, "the message handled", func() bool { return b.got("after") })
	if c.m.Relayed.Load() != 0 {
		t.Fatal("an answer passed on on SQLite")
	}
}
