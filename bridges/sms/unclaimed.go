package sms

import (
	"context"
	"errors"
	"time"

	"passerelle/store"
)

// keepUnclaimed stores an inbound text for a gateway number nobody has
// claimed, so that it is not lost.
func (b *Bridge) keepUnclaimed(ctx context.Context, in *Inbound) error {
	return b.host.Store().KeepUnclaimedText(ctx, store.UnclaimedText{To: in.To, From: in.From, Body: in.Body,
		SID: in.SID, Media: in.Media, Received: time.Now()})
}

// keepEarlyStatus stores a delivery report for a SID not known yet.
func (b *Bridge) keepEarlyStatus(ctx context.Context, s *Status) error {
	return b.host.Store().KeepEarlyStatus(ctx, store.EarlyStatus(*s), time.Now())
}

// takeEarlyStatus returns (and forgets) the report kept for sid, or nil.
func (b *Bridge) takeEarlyStatus(ctx context.Context, sid string) (*Status, error) {
	r, err := b.host.Store().TakeEarlyStatus(ctx, sid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s := Status(*r)
	return &s, nil
}
