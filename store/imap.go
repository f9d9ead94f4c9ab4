package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// IMAPPos is how far a user's mailbox has been forwarded: its UIDVALIDITY
// and the last UID taken, so that new mail is forwarded once, with no
// gaps, across restarts.
type IMAPPos struct {
	UIDValidity uint32
	LastUID     uint32
}

// IMAPPosition returns the position of jid's mailbox, or ErrNotFound.
func (s *Store) IMAPPosition(ctx context.Context, domain, jid, mailbox string) (IMAPPos, error) {
	var p IMAPPos
	err := s.db.QueryRowContext(ctx, `SELECT uidvalidity, last_uid FROM imap_state
		WHERE domain = ? AND jid = ? AND mailbox = ?`, domain, jid, mailbox).Scan(&p.UIDValidity, &p.LastUID)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("failed to read the position of a mailbox: %w", err)
	}
	return p, nil
}

// SetIMAPPosition stores the position of jid's mailbox.
func (s *Store) SetIMAPPosition(ctx context.Context, domain, jid, mailbox string, p IMAPPos) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO imap_state (domain, jid, mailbox, uidvalidity, last_uid)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (domain, jid, mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid`,
		domain, jid, mailbox, p.UIDValidity, p.LastUID)
	if err != nil {
		return fmt.Errorf("failed to store the position of a mailbox: %w", err)
	}
	return nil
}

// ForgetIMAPPositions deletes the positions of all jid's mailboxes.
func (s *Store) ForgetIMAPPositions(ctx context.Context, domain, jid string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM imap_state WHERE domain = ? AND jid = ?`, domain, jid); err != nil {
		return fmt.Errorf("failed to forget the positions of a user's mailboxes: %w", err)
	}
	return nil
}
