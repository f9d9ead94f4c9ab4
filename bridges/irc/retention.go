package irc

import (
	"context"
	"fmt"
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
//
// It takes the stored keys as they are, without b.keys: each DELETE
// counts the limit in its own statement, so a re-keying for a new case
// mapping between the two queries only makes it trim whichever channel
// the key names by then (two merged channels count as one).
func (b *Bridge) prune(ctx context.Context) (int64, error) {
	limit := b.opts.HistoryLimit
	if limit <= 0 {
		limit = defaultHistoryLimit
	}
	db := b.host.Store().DB()
	rows, err := db.QueryContext(ctx,
		`SELECT jid, server, channel FROM irc_history GROUP BY jid, server, channel HAVING COUNT(*) > ?`, limit)
	if err != nil {
		return 0, fmt.Errorf("failed to count the irc archive: %w", err)
	}
	type key struct{ jid, server, channel string }
	var over []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.jid, &k.server, &k.channel); err != nil {
			rows.Close()
			return 0, fmt.Errorf("failed to read the irc archive: %w", err)
		}
		over = append(over, k)
	}
	rows.Close()
	var total int64
	for _, k := range over {
		res, err := db.ExecContext(ctx,
			`DELETE FROM irc_history WHERE jid = ? AND server = ? AND channel = ? AND id <=
			 (SELECT id FROM irc_history WHERE jid = ? AND server = ? AND channel = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
			k.jid, k.server, k.channel, k.jid, k.server, k.channel, limit)
		if err != nil {
			return total, fmt.Errorf("failed to prune the irc archive: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}
