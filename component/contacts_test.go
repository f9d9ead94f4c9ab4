package component

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

func storeContact(jid, name string) store.Contact {
	return store.Contact{Domain: "test.example.org", JID: "alice@example.org", Contact: jid, Name: name, State: store.ContactAdded}
}

func logInto(lb *logBuffer) func(*Component) {
	return func(c *Component) { c.log = slog.New(slog.NewTextHandler(lb, nil)) }
}

// idle waits until everything posted to user's goroutine before has run.
func idle(t *testing.T, c *Component, user string) {
	t.Helper()
	done := make(chan struct{})
	if err := c.Post(user, func(context.Context) { close(done) }); err != nil {
		t.Fatal(err)
	}
	<-done
}

// fill blocks user's goroutine until the test ends and fills its queue.
func fill(t *testing.T, c *Component, user string) {
	t.Helper()
	running, block := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(block) })
	if err := c.Post(user, func(context.Context) { close(running); <-block }); err != nil {
		t.Fatal(err)
	}
	<-running
	for c.Post(user, func(context.Context) {}) == nil {
	}
}

// nextStanza returns the next stanza the component sent.
func nextStanza(t *testing.T, fc *fakeConn) *xmlel.Element {
	t.Helper()
	return fc.expect(t, "a stanza", func(*xmlel.Element) bool { return true })
}

// A database that cannot read contacts: a contact is logged, not added;
// unregistering fails with internal-server-error and keeps the
// registration; a roster push is still answered.
func TestContactsStoreFailure(t *testing.T) {
	var lb logBuffer
	c, fc, st := privilegedComponent(t, stanza.NSPrivilege2, "both", logInto(&lb))
	if _, err := st.DB().Exec(`ALTER TABLE contacts RENAME TO contacts_away`); err != nil {
		t.Fatal(err)
	}
	c.Contact(context.Background(), "alice@example.org", "bob", "Bob")
	idle(t, c, "alice@example.org")
	if !strings.Contains(lb.String(), `msg="cannot put a contact in the user's roster" user=alice@example.org contact=bob@test.example.org err="failed to read contacts`) {
		t.Fatalf("log:\n%s", lb.String())
	}

	fc.send(t, `<iq type='set' id='push' from='alice@example.org' to='test.example.org'><query xmlns='jabber:iq:roster'><item jid='bob@test.example.org' name='B'/></query></iq>`)
	if r := nextStanza(t, fc); r.Attr("id") != "push" || r.Attr("type") != "result" {
		t.Fatalf("after a contact the store cannot read, then a push: %s, want the push's result and no roster request", r)
	}
	if !strings.Contains(lb.String(), `msg="cannot read a contact for a roster push"`) {
		t.Fatalf("log:\n%s", lb.String())
	}

	fc.send(t, `<iq type='set' id='unreg' from='alice@example.org/res' to='test.example.org'><query xmlns='jabber:iq:register'><remove/></query></iq>`)
	r := fc.expect(t, "the answer", hasID("unreg"))
	if e := stanza.ErrorOf(r); e == nil || e.Condition != "internal-server-error" {
		t.Fatalf("unregistering: %s, want internal-server-error", r)
	}
	if _, err := st.GetRegistration(context.Background(), "test.example.org", "alice@example.org"); err != nil {
		t.Fatalf("the registration after a failed unregistration: %v", err)
	}
}

// A contact for a user whose queue is full is logged.
func TestContactBusyUser(t *testing.T) {
	var lb logBuffer
	c, _, _ := privilegedComponent(t, stanza.NSPrivilege2, "both", logInto(&lb))
	fill(t, c, "alice@example.org")
	c.Contact(context.Background(), "alice@example.org", "bob", "Bob")
	if !strings.Contains(lb.String(), `msg="cannot put a contact in the user's roster" user=alice@example.org contact=bob@test.example.org err="too many stanzas`) {
		t.Fatalf("log:\n%s", lb.String())
	}
}

// A domain that asks too much at once gets resource-constraint.
func TestDomainQueryBusy(t *testing.T) {
	c, fc, _ := privilegedComponent(t, "", "")
	fill(t, c, "peer.example.org")
	fc.send(t, `<iq type='get' id='busy' from='peer.example.org' to='test.example.org'><ping xmlns='urn:xmpp:ping'/></iq>`)
	r := fc.expect(t, "the answer", hasID("busy"))
	if e := stanza.ErrorOf(r); e == nil || e.Condition != "resource-constraint" || e.Type != "wait" {
		t.Fatalf("a busy domain's ping: %s", r)
	}
}

// A roster push the database cannot record is logged and still answered.
func TestRosterPushStoreFailure(t *testing.T) {
	var lb logBuffer
	_, fc, st := privilegedComponent(t, stanza.NSPrivilege2, "both", logInto(&lb))
	ctx := context.Background()
	if err := st.PutContact(ctx, storeContact("bob@test.example.org", "Bob")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DB().Exec(`CREATE TRIGGER refuse BEFORE UPDATE ON contacts BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	fc.send(t, `<iq type='set' id='push' from='alice@example.org' to='test.example.org'><query xmlns='jabber:iq:roster'><item jid='bob@test.example.org' name='Bobby'/></query></iq>`)
	fc.expect(t, "the push's result", func(e *xmlel.Element) bool { return e.Attr("id") == "push" && e.Attr("type") == "result" })
	if !strings.Contains(lb.String(), `msg="cannot record a roster push" user=alice@example.org contact=bob@test.example.org err=`) {
		t.Fatalf("log:\n%s", lb.String())
	}
}
