package email

import (
	"context"
	"errors"

	"passerelle/store"
)

// imapPos is how far a user's INBOX has been forwarded.
type imapPos = store.IMAPPos

func (b *Bridge) loadPos(ctx context.Context, user string) (imapPos, bool, error) {
	p, err := b.host.Store().IMAPPosition(ctx, b.host.Domain(), user, "INBOX")
	if errors.Is(err, store.ErrNotFound) {
		return p, false, nil
	}
	return p, err == nil, err
}

func (b *Bridge) savePos(ctx context.Context, user string, p imapPos) error {
	return b.host.Store().SetIMAPPosition(ctx, b.host.Domain(), user, "INBOX", p)
}

func (b *Bridge) deletePos(ctx context.Context, user string) error {
	return b.host.Store().ForgetIMAPPositions(ctx, b.host.Domain(), user)
}
