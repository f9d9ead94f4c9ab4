package store

import (
	"context"
	"fmt"
)

// Delivery is what one event from a foreign network (an inbound text or
// mail, a delivery report) gives the XMPP side, committed together by
// Deliver.
type Delivery struct {
	// Key names the event, uniquely in the domain (an inbound text's
	// MessageSid): a delivery whose key was committed before commits
	// nothing. Empty: no such check.
	Key string
	// Links are the message-id links of the stanzas (each stored as
	// PutMessageID does).
	Links []MessageID
	// Stanzas go to the domain's outbox, in order.
	Stanzas []string
}

// Deliver commits d for domain's component stream in one transaction: its
// key, its links and its stanzas, all of them or, on error, none. When d.Key
// was committed before (the foreign side sent the event again, maybe at the
// same moment), it commits nothing and reports false.
func (s *Store) Deliver(ctx context.Context, domain string, d Delivery) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("failed to queue stanzas: %w", err)
	}
	defer tx.Rollback()
	created := now()
	if d.Key != "" {
		res, err := tx.ExecContext(ctx, `INSERT INTO deliveries (domain, key, created) VALUES (?, ?, ?)
			ON CONFLICT (domain, key) DO NOTHING`, domain, d.Key, created)
		if err != nil {
			return false, fmt.Errorf("failed to record a delivery: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return false, fmt.Errorf("failed to record a delivery: %w", err)
		} else if n == 0 {
			return false, nil
		}
	}
	for _, m := range d.Links {
		if _, err := tx.ExecContext(ctx, putMessageID,
			m.Domain, m.JID, m.XMPPID, m.ForeignID, m.Peer, m.Thread, m.Extra, created); err != nil {
			return false, fmt.Errorf("failed to store a message link: %w", err)
		}
	}
	for _, st := range d.Stanzas {
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (domain, stanza, created) VALUES (?, ?, ?)`, domain, st, created); err != nil {
			return false, fmt.Errorf("failed to queue stanzas: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("failed to queue stanzas: %w", err)
	}
	return true, nil
}
