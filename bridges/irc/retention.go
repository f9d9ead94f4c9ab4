package irc

import (
	"context"
	"time"

	"passerelle/bridges"
)

const (
	// defaultHistoryLimit is how many messages the archive keeps per user
	// and channel when Options.HistoryLimit is zero.
	defaultHistoryLimit = 10000
	// pruneEvery is how often the archive is pruned.
	pruneEvery = 10 * time.Minute
)

// pruneLoop trims the archive at start and then every b.pruneEvery,
// until ctx ends.
func (b *Bridge) pruneLoop(ctx context.Context) {
	bridges.PruneLoop(ctx, b.host.Log(), b.pruneEvery, "the irc archive", b.prune)
}

// prune deletes, in every channel archive holding more than the limit,
// the oldest messages beyond it. It returns how many were deleted.
func (b *Bridge) prune(ctx context.Context) (int64, error) {
	limit := b.opts.HistoryLimit
	if limit <= 0 {
		limit = defaultHistoryLimit
	}
	return b.db.PruneIRCArchive(ctx, limit)
}
