package component

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

func TestParsePrivilege(t *testing.T) {
	for _, tc := range []struct {
		name, xml string
		ok        bool
		want      Grant
	}{
		{"prosody :2, everything", `<message from='example.org' to='test.example.org'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='message' type='outgoing'/><perm access='presence' type='roster'/></privilege></message>`,
			true, Grant{Server: "example.org", NS: stanza.NSPrivilege2, Roster: "both", Message: "outgoing", Presence: "roster"}},
		{"ejabberd :1, roster get only", `<message from='Example.org' to='test.example.org'><privilege xmlns='urn:xmpp:privilege:1'><perm access='roster' type='get'/></privilege></message>`,
			true, Grant{Server: "example.org", NS: stanza.NSPrivilege1, Roster: "get"}},
		{"iq permission", `<message from='example.org'><privilege xmlns='urn:xmpp:privilege:2'><perm access='message' type='outgoing'/><perm access='iq'><namespace ns='urn:xmpp:mam:2' type='get'/></perm></privilege></message>`,
			true, Grant{Server: "example.org", NS: stanza.NSPrivilege2, Message: "outgoing", IQ: map[string]string{"urn:xmpp:mam:2": "get"}}},
		{"nothing granted", `<message from='example.org'><privilege xmlns='urn:xmpp:privilege:2'/></message>`,
			true, Grant{Server: "example.org", NS: stanza.NSPrivilege2}},
		{"from a user", `<message from='mallory@example.org'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/></privilege></message>`, false, Grant{}},
		{"from a resource", `<message from='example.org/x'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/></privilege></message>`, false, Grant{}},
		{"another namespace", `<message from='example.org'><privilege xmlns='urn:xmpp:privilege:0'><perm access='roster' type='both'/></privilege></message>`, false, Grant{}},
		{"an iq", `<iq from='example.org' type='set'><privilege xmlns='urn:xmpp:privilege:2'/></iq>`, false, Grant{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			el, err := xmlel.Parse(tc.xml)
			if err != nil {
				t.Fatal(err)
			}
			g, ok := parsePrivilege(el)
			if ok != tc.ok || !reflect.DeepEqual(g, tc.want) {
				t.Fatalf("parsePrivilege = %+v, %v; want %+v, %v", g, ok, tc.want, tc.ok)
			}
			if ok && g.RosterSet() != (g.Roster == "both") && g.Roster != "set" {
				t.Errorf("RosterSet for %q", g.Roster)
			}
		})
	}
}

// privilegedComponent starts a component whose server grants roster
// (perm, namespace ns) and returns it once the grant is recorded, with
// alice@example.org registered.
func privilegedComponent(t *testing.T, ns, roster string, tune ...func(*Component)) (*Component, *fakeConn, *store.Store) {
	t.Helper()
	srv := newFakeServer(t, "s")
	c, _, st := startComponent(t, srv, &fakeBridge{}, "s", tune...)
	fc := srv.accept(t)
	if roster != "" {
		fc.send(t, `<message from='example.org' to='test.example.org'><privilege xmlns='%s'><perm access='roster' type='%s'/></privilege></message>`, ns, roster)
	}
	// Stanzas are dispatched in order: once the ping is answered, the
	// advertisement was read.
	fc.send(t, `<iq type='get' id='sync' from='example.org' to='test.example.org'><ping xmlns='urn:xmpp:ping'/></iq>`)
	fc.expect(t, "the ping's answer", func(e *xmlel.Element) bool { return e.Attr("id") == "sync" })
	if err := st.PutRegistration(context.Background(), "test.example.org", "alice@example.org", map[string]string{"name": "a"}, nil); err != nil {
		t.Fatal(err)
	}
	return c, fc, st
}

// isRequest matches a presence with a type: not the available presence
// the component announces to registered users when it connects, which may
// come after the test registered its user.
func isRequest(e *xmlel.Element) bool { return e.Local == "presence" && e.Attr("type") != "" }

func rosterIQTo(user, typ string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		return e.Local == "iq" && e.Attr("to") == user && e.Attr("type") == typ && e.Child(stanza.NSRoster, "query") != nil
	}
}

func wantStoredContact(t *testing.T, st *store.Store, contact string, want store.Contact) {
	t.Helper()
	var got *store.Contact
	var err error
	waitFor(t, "the contact "+contact+" stored", func() bool {
		got, err = st.GetContact(context.Background(), "test.example.org", "alice@example.org", contact)
		return err == nil && got.State == want.State && got.Renamed == want.Renamed
	})
	if got.Name != want.Name || got.Group != want.Group {
		t.Fatalf("stored %+v, want %+v", got, want)
	}
}

func TestContactAddedWithRosterPermission(t *testing.T) {
	for _, ns := range []string{stanza.NSPrivilege1, stanza.NSPrivilege2} {
		t.Run(ns, func(t *testing.T) {
			c, fc, st := privilegedComponent(t, ns, "both")
			c.Contact(context.Background(), "alice@example.org/phone", "Bob", "Bob Example")
			get := fc.expect(t, "the roster get", rosterIQTo("alice@example.org", "get"))
			if get.Attr("from") != "test.example.org" {
				t.Fatalf("roster get from %q", get.Attr("from"))
			}
			fc.send(t, `<iq type='result' id='%s' from='alice@example.org' to='test.example.org'><query xmlns='jabber:iq:roster'><item jid='carol@test.example.org' name='Carol'/></query></iq>`, get.Attr("id"))
			set := fc.expect(t, "the roster set", rosterIQTo("alice@example.org", "set"))
			it := set.Child(stanza.NSRoster, "query").Child(stanza.NSRoster, "item")
			if it.Attr("jid") != "bob@test.example.org" || it.Attr("name") != "Bob Example" || it.Attr("subscription") != "both" || it.ChildText(stanza.NSRoster, "group") != "test" {
				t.Fatalf("roster set %s", set)
			}
			fc.send(t, `<iq type='result' id='%s' from='alice@example.org' to='test.example.org'/>`, set.Attr("id"))
			wantStoredContact(t, st, "bob@test.example.org", store.Contact{Name: "Bob Example", Group: "test", State: store.ContactAdded})

			// The user renames it: the server pushes the change.
			fc.send(t, `<iq type='set' id='push1' from='alice@example.org' to='test.example.org'><query xmlns='jabber:iq:roster'><item jid='bob@test.example.org' name='Bobby' subscription='both'/></query></iq>`)
			fc.expect(t, "the push's answer", func(e *xmlel.Element) bool { return e.Attr("id") == "push1" && e.Attr("type") == "result" })
			wantStoredContact(t, st, "bob@test.example.org", store.Contact{Name: "Bob Example", Group: "test", State: store.ContactAdded, Renamed: true})

			// A new name from the foreign side changes nothing now.
			c.Contact(context.Background(), "alice@example.org", "bob", "Robert")
			c.Contact(context.Background(), "alice@example.org", "dave", "Dave")
			next := fc.expect(t, "the next roster get", rosterIQTo("alice@example.org", "get"))
			fc.send(t, `<iq type='result' id='%s' from='alice@example.org' to='test.example.org'><query xmlns='jabber:iq:roster'/></iq>`, next.Attr("id"))
			set = fc.expect(t, "dave's roster set", rosterIQTo("alice@example.org", "set"))
			if jid := set.Child(stanza.NSRoster, "query").Child(stanza.NSRoster, "item").Attr("jid"); jid != "dave@test.example.org" {
				t.Fatalf("roster set for %s after bob was renamed, want dave's only", jid)
			}
		})
	}
}

func TestContactRosterPushFromAResourceRefused(t *testing.T) {
	_, fc, st := privilegedComponent(t, stanza.NSPrivilege2, "both")
	st.PutContact(context.Background(), store.Contact{Domain: "test.example.org", JID: "alice@example.org", Contact: "bob@test.example.org", Name: "Bob", State: store.ContactAdded})
	fc.send(t, `<iq type='set' id='push2' from='alice@example.org/res' to='test.example.org'><query xmlns='jabber:iq:roster'><item jid='bob@test.example.org' subscription='remove'/></query></iq>`)
	r := fc.expect(t, "the answer", func(e *xmlel.Element) bool { return e.Attr("id") == "push2" })
	if r.Attr("type") != "error" || r.Child("", "error") == nil {
		t.Fatalf("a push from a full JID: %s, want an error", r)
	}
	fc.send(t, `<iq type='set' id='push3' from='alice@example.org' to='test.example.org'><query xmlns='jabber:iq:roster'><item jid='bob@test.example.org' subscription='remove'/></query></iq>`)
	fc.expect(t, "the answer", func(e *xmlel.Element) bool { return e.Attr("id") == "push3" && e.Attr("type") == "result" })
	if _, err := st.GetContact(context.Background(), "test.example.org", "alice@example.org", "bob@test.example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the user removed the item: %v, want it forgotten", err)
	}
}

func TestContactSetOnlyGrant(t *testing.T) {
	c, fc, st := privilegedComponent(t, stanza.NSPrivilege1, "set")
	c.Contact(context.Background(), "alice@example.org", "bob", "Bob")
	r := fc.expect(t, "a roster request", func(e *xmlel.Element) bool { return e.Child(stanza.NSRoster, "query") != nil })
	if r.Attr("type") != "set" {
		t.Fatalf("with roster set only: %s, want a set without a get", r)
	}
	fc.send(t, `<iq type='result' id='%s' from='alice@example.org' to='test.example.org'/>`, r.Attr("id"))
	wantStoredContact(t, st, "bob@test.example.org", store.Contact{Name: "Bob", Group: "test", State: store.ContactAdded})
}

func TestContactRefusedFallsBackToSubscription(t *testing.T) {
	c, fc, st := privilegedComponent(t, stanza.NSPrivilege2, "both")
	c.Contact(context.Background(), "alice@example.org", "bob", "Bob")
	get := fc.expect(t, "the roster get", rosterIQTo("alice@example.org", "get"))
	fc.send(t, `<iq type='error' id='%s' from='alice@example.org' to='test.example.org'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, get.Attr("id"))
	p := fc.expect(t, "the subscription request", isRequest)
	if p.Attr("type") != "subscribe" || p.Attr("from") != "bob@test.example.org" || p.Attr("to") != "alice@example.org" || p.ChildText(stanza.NSNick, "nick") != "Bob" {
		t.Fatalf("fallback %s", p)
	}
	wantStoredContact(t, st, "bob@test.example.org", store.Contact{Name: "Bob", Group: "test", State: store.ContactAsked})
	if c.grant("alice@example.org").RosterSet() {
		t.Fatal("the roster permission is still used after the server refused it")
	}
	// The next contact asks at once, without a roster request.
	c.Contact(context.Background(), "alice@example.org", "carol", "Carol")
	p = fc.expect(t, "a stanza", func(e *xmlel.Element) bool { return isRequest(e) || e.Child(stanza.NSRoster, "query") != nil })
	if p.Local != "presence" || p.Attr("from") != "carol@test.example.org" {
		t.Fatalf("after the refusal: %s, want carol's subscription request", p)
	}
}

func TestContactWithoutPermission(t *testing.T) {
	c, fc, st := privilegedComponent(t, "", "")
	c.Contact(context.Background(), "nobody@example.org", "bob", "Bob") // not registered: nothing
	c.Contact(context.Background(), "alice@example.org", "bob", "")
	p := fc.expect(t, "the subscription request", func(e *xmlel.Element) bool { return isRequest(e) || e.Local == "iq" })
	if p.Attr("type") != "subscribe" || p.Attr("to") != "alice@example.org" || p.ChildText(stanza.NSNick, "nick") != "bob" {
		t.Fatalf("without permission: %s, want alice's subscription request named after the localpart", p)
	}
	wantStoredContact(t, st, "bob@test.example.org", store.Contact{Name: "bob", Group: "test", State: store.ContactAsked})
	if _, err := st.GetContact(context.Background(), "test.example.org", "nobody@example.org", "bob@test.example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a contact kept for an unregistered user: %v", err)
	}
}

func TestUnregisterRemovesAddedContacts(t *testing.T) {
	_, fc, st := privilegedComponent(t, stanza.NSPrivilege2, "both")
	ctx := context.Background()
	for _, ct := range []store.Contact{
		{Contact: "bob@test.example.org", Name: "Bob", State: store.ContactAdded, Renamed: true},
		{Contact: "carol@test.example.org", Name: "Carol", State: store.ContactFound},
		{Contact: "dave@test.example.org", Name: "Dave", State: store.ContactAsked},
		{Contact: "erin@test.example.org", Name: "Erin", State: store.ContactAdded},
	} {
		ct.Domain, ct.JID = "test.example.org", "alice@example.org"
		if err := st.PutContact(ctx, ct); err != nil {
			t.Fatal(err)
		}
	}
	fc.send(t, `<iq type='set' id='unreg' from='alice@example.org/res' to='test.example.org'><query xmlns='jabber:iq:register'><remove/></query></iq>`)
	var removed []string
	for len(removed) < 2 {
		r := fc.expect(t, "a roster removal", rosterIQTo("alice@example.org", "set"))
		it := r.Child(stanza.NSRoster, "query").Child(stanza.NSRoster, "item")
		if it.Attr("subscription") != "remove" {
			t.Fatalf("on unregistering: %s", r)
		}
		removed = append(removed, it.Attr("jid"))
		if len(removed) == 1 {
			// A failure leaves that item and goes on with the others.
			fc.send(t, `<iq type='error' id='%s' from='alice@example.org' to='test.example.org'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, r.Attr("id"))
		} else {
			fc.send(t, `<iq type='result' id='%s' from='alice@example.org' to='test.example.org'/>`, r.Attr("id"))
		}
	}
	if !reflect.DeepEqual(removed, []string{"bob@test.example.org", "erin@test.example.org"}) {
		t.Fatalf("removed %v, want the two the gateway added", removed)
	}
	fc.expect(t, "the unregistration's answer", func(e *xmlel.Element) bool { return e.Attr("id") == "unreg" && e.Attr("type") == "result" })
	if list, err := st.Contacts(ctx, "test.example.org", "alice@example.org"); err != nil || len(list) != 0 {
		t.Fatalf("contacts after unregistering: %v, %v", list, err)
	}
}

// ejabberd 23.01 fails a privileged roster set with internal-server-error:
// the contact asks for a subscription, and the permission is not used again.
func TestContactRosterSetFailureFallsBack(t *testing.T) {
	c, fc, st := privilegedComponent(t, stanza.NSPrivilege1, "both")
	c.Contact(context.Background(), "alice@example.org", "bob", "Bob")
	get := fc.expect(t, "the roster get", rosterIQTo("alice@example.org", "get"))
	fc.send(t, `<iq type='result' id='%s' from='alice@example.org' to='test.example.org'><query xmlns='jabber:iq:roster'/></iq>`, get.Attr("id"))
	set := fc.expect(t, "the roster set", rosterIQTo("alice@example.org", "set"))
	fc.send(t, `<iq type='error' id='%s' from='alice@example.org' to='test.example.org'><error type='wait'><internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Module failed to handle the query</text></error></iq>`, set.Attr("id"))
	p := fc.expect(t, "the subscription request", isRequest)
	if p.Attr("type") != "subscribe" || p.Attr("from") != "bob@test.example.org" || p.ChildText(stanza.NSNick, "nick") != "Bob" {
		t.Fatalf("fallback %s", p)
	}
	wantStoredContact(t, st, "bob@test.example.org", store.Contact{Name: "Bob", Group: "test", State: store.ContactAsked})
	if c.grant("alice@example.org").Roster != "" {
		t.Fatal("the roster permission is still used after the server failed it")
	}
}

// Without the roster permission (revoked since the items were added) the
// gateway does not try to remove them, and unregistering completes.
func TestUnregisterWithoutPermissionLeavesContacts(t *testing.T) {
	_, fc, st := privilegedComponent(t, "", "")
	ctx := context.Background()
	if err := st.PutContact(ctx, store.Contact{Domain: "test.example.org", JID: "alice@example.org", Contact: "bob@test.example.org", Name: "Bob", State: store.ContactAdded}); err != nil {
		t.Fatal(err)
	}
	fc.send(t, `<iq type='set' id='unreg' from='alice@example.org/res' to='test.example.org'><query xmlns='jabber:iq:register'><remove/></query></iq>`)
	r := fc.expect(t, "a roster request or the answer", func(e *xmlel.Element) bool {
		return e.Attr("id") == "unreg" || e.Child(stanza.NSRoster, "query") != nil
	})
	if r.Attr("id") != "unreg" || r.Attr("type") != "result" {
		t.Fatalf("unregistering without the permission: %s", r)
	}
}
