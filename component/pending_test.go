package component

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// askRoster sends a roster get with id and returns a channel for its
// outcome (a minute at most).
func askRoster(c *Component, id string) chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := c.IQ(ctx, stanza.IQ("test.example.org", "u@example.org", "get", id, xmlel.New(stanza.NSRoster, "query")))
		done <- err
	}()
	return done
}

// A request of the component's whose stream ends fails at once with
// ErrDisconnected, rather than waiting for its own timeout: the answer
// cannot come on another stream.
func TestPendingIQFailsOnDisconnect(t *testing.T) {
	srv := newFakeServer(t, "s")
	c, _, _ := startComponent(t, srv, &fakeBridge{}, "s")
	fc := srv.accept(t)
	waitFor(t, "the stream taken", c.Connected)
	done := askRoster(c, "roster-1")
	fc.expect(t, "the request", func(e *xmlel.Element) bool { return e.Attr("id") == "roster-1" })
	fc.nc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, bridges.ErrDisconnected) {
			t.Fatalf("IQ = %v, want ErrDisconnected", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request still waits after the stream ended")
	}
	// The next stream serves requests as before.
	fc = srv.accept(t)
	waitFor(t, "the stream taken again", c.Connected)
	done = askRoster(c, "roster-2")
	fc.expect(t, "the second request", func(e *xmlel.Element) bool { return e.Attr("id") == "roster-2" })
	fc.send(t, "<iq from='u@example.org' to='test.example.org' id='roster-2' type='result'/>")
	if err := <-done; err != nil {
		t.Fatalf("the second request: %v", err)
	}
}

// A contact whose roster request is cut off by the end of the stream is
// given up at once (logged as such), not after the roster timeout.
func TestRosterRequestFailsOnDisconnect(t *testing.T) {
	var lb logBuffer
	c, fc, _ := privilegedComponent(t, stanza.NSPrivilege2, "both", logInto(&lb))
	c.Contact(context.Background(), "alice@example.org", "bob", "Bob")
	fc.expect(t, "the roster get", rosterIQTo("alice@example.org", "get"))
	fc.nc.Close()
	waitFor(t, "the contact given up", func() bool { return strings.Contains(lb.String(), "cannot put a contact in the user's roster") })
	if s := lb.String(); !strings.Contains(s, bridges.ErrDisconnected.Error()) {
		t.Fatalf("the contact was given up for another reason:\n%s", s)
	}
}
