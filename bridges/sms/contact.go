package sms

import (
	"context"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/mapping"
)

// Profile implements bridges.Profiler: a correspondent's number.
func (b *Bridge) Profile(ctx context.Context, u *bridges.User, local string, answer func(context.Context, *bridges.Profile, error)) {
	n, err := mapping.NumberFromLocal(local)
	if err != nil {
		answer(ctx, nil, stanza.Errorf("jid-malformed", "“"+local+"” is not a phone number in international format."))
		return
	}
	answer(ctx, &bridges.Profile{Phone: n}, nil)
}

var _ bridges.Profiler = (*Bridge)(nil)
