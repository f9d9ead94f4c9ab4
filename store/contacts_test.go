package store

import (
	"context"
	"errors"
	"testing"
)

func TestContacts(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	const d, alice = "mail.example.org", "alice@example.org"
	if _, err := s.GetContact(ctx, d, alice, "bob%example.com@"+d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown contact: %v, want ErrNotFound", err)
	}
	bob := Contact{Domain: d, JID: alice, Contact: "bob%example.com@" + d, Name: "Bob", Group: "Email", State: ContactAdded}
	carol := Contact{Domain: d, JID: alice, Contact: "carol%example.com@" + d, Name: "Carol", Group: "Email", State: ContactAsked}
	other := Contact{Domain: d, JID: "zoe@example.org", Contact: bob.Contact, Name: "B.", Group: "Email", State: ContactFound}
	for _, c := range []Contact{carol, bob, other} {
		if err := s.PutContact(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	bob.Name, bob.Renamed = "Bob Example", true
	if err := s.PutContact(ctx, bob); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetContact(ctx, d, alice, bob.Contact)
	if err != nil || *got != bob {
		t.Fatalf("GetContact = %+v, %v; want %+v", got, err, bob)
	}
	list, err := s.Contacts(ctx, d, alice)
	if err != nil || len(list) != 2 || list[0] != bob || list[1] != carol {
		t.Fatalf("Contacts = %+v, %v; want bob then carol", list, err)
	}
	if err := s.DeleteContact(ctx, d, alice, carol.Contact); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRegistration(ctx, d, alice, map[string]string{"address": "alice"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteRegistration(ctx, d, alice); err != nil {
		t.Fatal(err)
	}
	if list, err := s.Contacts(ctx, d, alice); err != nil || len(list) != 0 {
		t.Fatalf("after unregistering: %+v, %v; want none", list, err)
	}
	if list, err := s.Contacts(ctx, d, "zoe@example.org"); err != nil || len(list) != 1 || list[0] != other {
		t.Fatalf("another user's contacts: %+v, %v; want kept", list, err)
	}
}

func TestContactsReadFailure(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if _, err := s.DB().Exec(`DROP TABLE contacts`); err != nil {
		t.Fatal(err)
	}
	c := Contact{Domain: "d", JID: "a@b", Contact: "c@d", State: ContactAdded}
	if err := s.PutContact(ctx, c); err == nil {
		t.Error("PutContact without a table: no error")
	}
	if _, err := s.GetContact(ctx, "d", "a@b", "c@d"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("GetContact without a table: %v, want a read error", err)
	}
	if err := s.DeleteContact(ctx, "d", "a@b", "c@d"); err == nil {
		t.Error("DeleteContact without a table: no error")
	}
}
