package email

import (
	"context"
	"database/sql"
	"errors"
)

// imapPos is how far a user's INBOX has been forwarded.
type imapPos struct {
	UIDValidity uint32
	LastUID     uint32
}

func (b *Bridge) loadPos(ctx context.Context, user string) (imapPos, bool, error) {
	var p imapPos
	err := b.host.Store().DB().QueryRowContext(ctx, `SELECT uidvalidity, last_uid FROM imap_state
		WHERE domain = ? AND jid = ? AND mailbox = 'INBOX'`, b.host.Domain(), user).Scan(&p.UIDValidity, &p.LastUID)
	if errors.Is(err, sql.ErrNoRows) {
		return p, false, nil
	}
	return p, err == nil, err
}

func (b *Bridge) savePos(ctx context.Context, user string, p imapPos) error {
	_, err := b.host.Store().DB().ExecContext(ctx, `INSERT INTO imap_state (domain, jid, mailbox, uidvalidity, last_uid)
		VALUES (?, ?, 'INBOX', ?, ?)
		ON CONFLICT (domain, jid, mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid`,
		b.host.Domain(), user, p.UIDValidity, p.LastUID)
	return err
}

func (b *Bridge) deletePos(ctx context.Context, user string) error {
	_, err := b.host.Store().DB().ExecContext(ctx, `DELETE FROM imap_state WHERE domain = ? AND jid = ?`, b.host.Domain(), user)
	return err
}
