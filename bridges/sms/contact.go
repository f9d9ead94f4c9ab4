package sms

import (
	"context"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/mapping"
)

// Profile implements bridges.Profiler: a correspondent's number.
func (b *Bridge) Profile(ctx context.Context, local string) (*bridges.Profile, error) {
	n, err := mapping.NumberFromLocal(local)
	if err != nil {
		return nil, stanza.Errorf("jid-malformed", "“"+local+"” is not a phone number in international format.")
	}
	return &bridges.Profile{Phone: n}, nil
}
