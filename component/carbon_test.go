package component

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// advertise has the fake server grant the message permission type msg
// ("": none) in privilege namespace ns, and returns once the component
// read it.
func advertise(t *testing.T, fc *fakeConn, ns, msg string) {
	t.Helper()
	perm := ""
	if msg != "" {
		perm = "<perm access='message' type='" + msg + "'/>"
	}
	fc.send(t, `<message from='example.org' to='test.example.org'><privilege xmlns='%s'><perm access='roster' type='both'/>%s</privilege></message>`, ns, perm)
	fc.send(t, `<iq type='get' id='sync' from='example.org' to='test.example.org'><ping xmlns='urn:xmpp:ping'/></iq>`)
	fc.expect(t, "the ping's answer", func(e *xmlel.Element) bool { return e.Attr("id") == "sync" })
}

// With the message permission, a message the user sent elsewhere goes to
// her server as a privileged message (XEP-0356) in the namespace it
// advertised, carrying the sent carbon (XEP-0280) of the message in
// jabber:client, and the server receives it through the outbox.
func TestSentCarbonsStanza(t *testing.T) {
	for _, ns := range []string{stanza.NSPrivilege2, stanza.NSPrivilege1} {
		t.Run(ns, func(t *testing.T) {
			srv := newFakeServer(t, "s")
			c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
			fc := srv.accept(t)
			advertise(t, fc, ns, "outgoing")
			select {
			case <-c.PrivilegesKnown():
			default:
				t.Fatal("the grants are not known after the advertisement")
			}
			wrap, err := c.SentCarbons("alice@Example.org")
			if err != nil {
				t.Fatal(err)
			}
			msg := stanza.Message("alice@example.org", "bob%example.com@test.example.org", "chat", "m1", "*Subject: Hi*\n\nHello Bob")
			msg.AddText("thread", "t1")
			if err := c.SendMessage(context.Background(), wrap(msg)); err != nil {
				t.Fatal(err)
			}
			got := fc.expect(t, "the privileged message", func(e *xmlel.Element) bool { return e.Local == "message" && e.Attr("to") == "example.org" })
			if got.Attr("from") != "test.example.org" || got.Attr("type") != "" || got.Attr("id") == "" {
				t.Fatalf("outer message %s", got)
			}
			priv := got.Child(ns, "privilege")
			if priv == nil || len(priv.Children) != 1 {
				t.Fatalf("no privilege element of %s alone: %s", ns, got)
			}
			fwd := priv.Child(stanza.NSForward, "forwarded")
			carbon := fwd.Child(stanza.NSClient, "message")
			if fwd == nil || len(fwd.Children) != 1 || carbon == nil {
				t.Fatalf("privilege does not forward one jabber:client message: %s", got)
			}
			if carbon.Attr("from") != "alice@example.org" || carbon.Attr("to") != "alice@example.org" || carbon.Attr("type") != "chat" {
				t.Fatalf("carbon %s, want from and to alice's bare JID, type chat", carbon)
			}
			if carbon.Child(stanza.NSHints, "no-copy") == nil {
				t.Fatalf("carbon without a no-copy hint: %s", carbon)
			}
			sent := carbon.Child(stanza.NSCarbons, "sent")
			inner := sent.Child(stanza.NSForward, "forwarded").Child(stanza.NSClient, "message")
			if inner == nil {
				t.Fatalf("no forwarded jabber:client message in the sent carbon: %s", carbon)
			}
			if inner.Attr("from") != "alice@example.org" || inner.Attr("to") != "bob%example.com@test.example.org" ||
				inner.Attr("type") != "chat" || inner.Attr("id") != "m1" {
				t.Fatalf("inner message %s", inner)
			}
			if b := inner.Child(stanza.NSClient, "body"); b == nil || b.Text != "*Subject: Hi*\n\nHello Bob" || inner.ChildText(stanza.NSClient, "thread") != "t1" {
				t.Fatalf("inner message's body or thread not in jabber:client: %s", inner)
			}
		})
	}
}

// A server that does not grant the message permission (none, or another
// type) gets no carbon; before its advertisement and before the stream
// stayed up a moment without one, the grants are not known yet.
func TestSentCarbonsWithoutPermission(t *testing.T) {
	t.Run("advertised without it", func(t *testing.T) {
		for _, typ := range []string{"", "none"} {
			srv := newFakeServer(t, "s")
			c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
			fc := srv.accept(t)
			advertise(t, fc, stanza.NSPrivilege2, typ)
			if _, err := c.SentCarbons("alice@example.org"); !errors.Is(err, bridges.ErrNoPrivilege) {
				t.Fatalf("message permission %q: err = %v, want ErrNoPrivilege", typ, err)
			}
		}
	})
	t.Run("no advertisement", func(t *testing.T) {
		// Past the moment users are probed, the grants are still not
		// known: the sent mails wait for a late advertisement.
		srv := newFakeServer(t, "s")
		c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
		if _, err := c.SentCarbons("alice@example.org"); !errors.Is(err, bridges.ErrPrivilegeUnknown) {
			t.Fatalf("before the stream: err = %v, want ErrPrivilegeUnknown", err)
		}
		fc := srv.accept(t)
		time.Sleep(grantWait + time.Second)
		if _, err := c.SentCarbons("alice@example.org"); !errors.Is(err, bridges.ErrPrivilegeUnknown) {
			t.Fatalf("a stream up without an advertisement: err = %v, want ErrPrivilegeUnknown", err)
		}
		select {
		case <-c.PrivilegesKnown():
			t.Fatal("the grants are known without an advertisement")
		default:
		}
		advertise(t, fc, stanza.NSPrivilege2, "outgoing")
		if _, err := c.SentCarbons("alice@example.org"); err != nil {
			t.Fatalf("after a late advertisement: %v", err)
		}
	})
	t.Run("no advertisement at last", func(t *testing.T) {
		srv := newFakeServer(t, "s")
		lb := &logBuffer{}
		c, _, _ := startComponent(t, srv, &fakeBridge{}, "s", func(c *Component) {
			c.log = slog.New(slog.NewTextHandler(lb, nil))
			c.grantLastResort = grantWait + time.Second
		})
		srv.accept(t)
		select {
		case <-c.PrivilegesKnown():
		case <-time.After(c.grantLastResort + 10*time.Second):
			t.Fatal("the grants are still not known after the stream stayed up without an advertisement")
		}
		if _, err := c.SentCarbons("alice@example.org"); !errors.Is(err, bridges.ErrNoPrivilege) {
			t.Fatalf("a server that advertised nothing: err = %v, want ErrNoPrivilege", err)
		}
		if !strings.Contains(lb.String(), `msg="the XMPP server advertised no privileges (XEP-0356): it is taken to grant none"`) {
			t.Fatalf("not logged:\n%s", lb.String())
		}
	})
	t.Run("another server", func(t *testing.T) {
		srv := newFakeServer(t, "s")
		c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
		advertise(t, srv.accept(t), stanza.NSPrivilege2, "outgoing")
		if _, err := c.SentCarbons("carol@elsewhere.example"); !errors.Is(err, bridges.ErrNoPrivilege) {
			t.Fatalf("a user of a server that granted nothing: err = %v, want ErrNoPrivilege", err)
		}
	})
}

// A server that refuses a sent carbon despite its advertisement loses the
// permission: no more carbons go to it (until it advertises it again).
func TestSentCarbonRefused(t *testing.T) {
	srv := newFakeServer(t, "s")
	lb := &logBuffer{}
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s", func(c *Component) {
		c.log = slog.New(slog.NewTextHandler(lb, nil))
	})
	fc := srv.accept(t)
	advertise(t, fc, stanza.NSPrivilege2, "outgoing")
	wrap, err := c.SentCarbons("alice@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMessage(context.Background(), wrap(stanza.Message("alice@example.org", "bob%example.com@test.example.org", "chat", "m1", "hi"))); err != nil {
		t.Fatal(err)
	}
	got := fc.expect(t, "the privileged message", func(e *xmlel.Element) bool { return e.Local == "message" && e.Attr("to") == "example.org" })
	fc.send(t, `<message type='error' id='%s' from='example.org' to='test.example.org'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`, got.Attr("id"))
	waitFor(t, "the refusal logged", func() bool {
		return lb.count(`msg="the XMPP server refused a sent carbon despite its advertisement; no more are sent to it" server=example.org err=forbidden`) == 1
	})
	if _, err := c.SentCarbons("alice@example.org"); !errors.Is(err, bridges.ErrNoPrivilege) {
		t.Fatalf("after the refusal: err = %v, want ErrNoPrivilege", err)
	}
	// An error for another message of the component changes nothing.
	advertise(t, fc, stanza.NSPrivilege2, "outgoing")
	fc.send(t, `<message type='error' id='other' from='example.org' to='test.example.org'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`)
	// Read in order: once the ping is answered, the error was handled.
	fc.send(t, `<iq type='get' id='sync2' from='example.org' to='test.example.org'><ping xmlns='urn:xmpp:ping'/></iq>`)
	fc.expect(t, "the ping's answer", func(e *xmlel.Element) bool { return e.Attr("id") == "sync2" })
	if _, err := c.SentCarbons("alice@example.org"); err != nil {
		t.Fatalf("after an error for another message: %v", err)
	}
}
