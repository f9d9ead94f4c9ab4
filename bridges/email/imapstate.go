package email

import (
	"context"
	"errors"

	"passerelle/store"
)

// imapPos is how far a user's mailbox has been forwarded.
type imapPos = store.IMAPPos

// loadPos returns the position of user's INBOX.
func (b *Bridge) loadPos(ctx context.Context, user string) (imapPos, bool, error) {
	return b.loadPosOf(ctx, user, "INBOX")
}

// loadPosOf returns the position of user's mailbox, and whether one is
// kept.
func (b *Bridge) loadPosOf(ctx context.Context, user, mailbox string) (imapPos, bool, error) {
	p, err := b.host.Store().IMAPPosition(ctx, b.host.Domain(), user, mailbox)
	if errors.Is(err, store.ErrNotFound) {
		return p, false, nil
	}
	return p, err == nil, err
}

func (b *Bridge) savePos(ctx context.Context, user string, p imapPos) error {
	return b.savePosOf(ctx, user, "INBOX", p)
}

func (b *Bridge) savePosOf(ctx context.Context, user, mailbox string, p imapPos) error {
	return b.host.Store().SetIMAPPosition(ctx, b.host.Domain(), user, mailbox, p)
}

func (b *Bridge) deletePos(ctx context.Context, user string) error {
	return b.host.Store().ForgetIMAPPositions(ctx, b.host.Domain(), user)
}
