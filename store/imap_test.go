package store

import (
	"context"
	"errors"
	"testing"
)

// A mailbox's position is per domain, user and mailbox; it is replaced by
// the next, and all of a user's go together.
func TestIMAPPosition(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := s.IMAPPosition(ctx, "mail.example.org", "alice@example.org", "INBOX"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no position yet: %v", err)
	}
	set := func(domain, jid, mailbox string, p IMAPPos) {
		t.Helper()
		if err := s.SetIMAPPosition(ctx, domain, jid, mailbox, p); err != nil {
			t.Fatal(err)
		}
	}
	set("mail.example.org", "alice@example.org", "INBOX", IMAPPos{UIDValidity: 7, LastUID: 1})
	set("mail.example.org", "alice@example.org", "INBOX", IMAPPos{UIDValidity: 7, LastUID: 3})
	set("mail.example.org", "alice@example.org", "Archive", IMAPPos{UIDValidity: 9, LastUID: 1})
	set("mail.example.org", "bob@example.org", "INBOX", IMAPPos{UIDValidity: 8, LastUID: 2})
	set("other.example.org", "alice@example.org", "INBOX", IMAPPos{UIDValidity: 5, LastUID: 5})
	if p, err := s.IMAPPosition(ctx, "mail.example.org", "alice@example.org", "INBOX"); err != nil || p != (IMAPPos{UIDValidity: 7, LastUID: 3}) {
		t.Fatalf("position: %+v, %v", p, err)
	}
	if err := s.ForgetIMAPPositions(ctx, "mail.example.org", "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	for _, mailbox := range []string{"INBOX", "Archive"} {
		if _, err := s.IMAPPosition(ctx, "mail.example.org", "alice@example.org", mailbox); !errors.Is(err, ErrNotFound) {
			t.Errorf("forgotten position of %s: %v", mailbox, err)
		}
	}
	if p, err := s.IMAPPosition(ctx, "mail.example.org", "bob@example.org", "INBOX"); err != nil || p.LastUID != 2 {
		t.Errorf("another user's position: %+v, %v", p, err)
	}
	if p, err := s.IMAPPosition(ctx, "other.example.org", "alice@example.org", "INBOX"); err != nil || p.LastUID != 5 {
		t.Errorf("another domain's position: %+v, %v", p, err)
	}

	if _, err := s.db.Exec(`DROP TABLE imap_state`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IMAPPosition(ctx, "mail.example.org", "bob@example.org", "INBOX"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("reading a position from a broken store: %v", err)
	}
	if err := s.SetIMAPPosition(ctx, "mail.example.org", "bob@example.org", "INBOX", IMAPPos{}); err == nil {
		t.Error("storing a position in a broken store did not fail")
	}
	if err := s.ForgetIMAPPositions(ctx, "mail.example.org", "bob@example.org"); err == nil {
		t.Error("forgetting positions in a broken store did not fail")
	}
}
