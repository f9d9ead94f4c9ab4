package store

import (
	"context"
	"fmt"
)

// ContactState says how a contact came to be known.
type ContactState string

const (
	// ContactAdded: the gateway put the item in the user's roster (it
	// removes it when the user unregisters).
	ContactAdded ContactState = "added"
	// ContactAsked: without roster permission, the gateway sent a
	// subscription request from the contact.
	ContactAsked ContactState = "asked"
	// ContactFound: the item was in the roster before the gateway saw the
	// contact; it is the user's, and left alone.
	ContactFound ContactState = "found"
)

// Contact is a foreign contact of a user, as one bridge (domain) knows it.
type Contact struct {
	Domain  string
	JID     string // the local user's bare JID
	Contact string // the contact's bare JID at Domain
	Name    string // the name the gateway gave
	Group   string
	State   ContactState
	Renamed bool // the user gave the item another name
}

// PutContact creates or replaces a contact.
func (s *Store) PutContact(ctx context.Context, c Contact) error {
	t := now()
	_, err := s.db.ExecContext(ctx, `INSERT INTO contacts (domain, jid, contact, name, grp, state, renamed, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (domain, jid, contact) DO UPDATE SET name = excluded.name, grp = excluded.grp,
			state = excluded.state, renamed = excluded.renamed, updated = excluded.updated`,
		c.Domain, c.JID, c.Contact, c.Name, c.Group, string(c.State), c.Renamed, t, t)
	if err != nil {
		return fmt.Errorf("failed to store the contact %s of %s: %w", c.Contact, c.JID, err)
	}
	return nil
}

// GetContact returns jid's contact at domain, or ErrNotFound.
func (s *Store) GetContact(ctx context.Context, domain, jid, contact string) (*Contact, error) {
	cs, err := s.contacts(ctx, `AND contact = ?`, domain, jid, contact)
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, ErrNotFound
	}
	return &cs[0], nil
}

// Contacts lists jid's contacts at domain, sorted by contact.
func (s *Store) Contacts(ctx context.Context, domain, jid string) ([]Contact, error) {
	return s.contacts(ctx, ``, domain, jid)
}

// DeleteContact forgets one contact.
func (s *Store) DeleteContact(ctx context.Context, domain, jid, contact string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM contacts WHERE domain = ? AND jid = ? AND contact = ?`, domain, jid, contact)
	if err != nil {
		return fmt.Errorf("failed to delete the contact %s of %s: %w", contact, jid, err)
	}
	return nil
}

func (s *Store) contacts(ctx context.Context, and string, args ...any) ([]Contact, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT domain, jid, contact, name, grp, state, renamed FROM contacts
		WHERE domain = ? AND jid = ? `+and+` ORDER BY contact`, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to read contacts: %w", err)
	}
	defer rows.Close()
	var out []Contact
	for rows.Next() {
		var c Contact
		var state string
		if err := rows.Scan(&c.Domain, &c.JID, &c.Contact, &c.Name, &c.Group, &state, &c.Renamed); err != nil {
			return nil, fmt.Errorf("failed to read a contact: %w", err)
		}
		c.State = ContactState(state)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to read contacts: %w", err)
	}
	return out, nil
}
