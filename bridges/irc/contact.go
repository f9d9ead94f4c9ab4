package irc

import (
	"context"

	"passerelle/bridges"
	"passerelle/mapping"
)

// Profile implements bridges.Profiler: an IRC user's nick. Channels and
// networks are left to Handle.
func (b *Bridge) Profile(ctx context.Context, local string) (*bridges.Profile, error) {
	a, err := mapping.ParseIRCLocal(local, "")
	if err != nil || a.Kind != mapping.IRCUser {
		return nil, nil
	}
	return &bridges.Profile{Nick: a.Name}, nil
}
