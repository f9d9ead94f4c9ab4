package main

import (
	"context"
	"log/slog"
	"time"

	"passerelle/bridges"
	"passerelle/store"
)

// The links between XMPP and foreign message ids serve delivery reports,
// duplicate inbound texts and the threads of mail replies, which come
// within days; they are kept messageIDsKept, and the older ones are
// deleted every pruneEvery. Past that, a mail reply gets the thread derived
// from its conversation's first mail, which is a new thread when the
// conversation began in XMPP.
const (
	messageIDsKept = 180 * 24 * time.Hour
	pruneEvery     = 6 * time.Hour
)

// pruneMessageIDs deletes the links older than keep at once and then
// every every, until ctx ends. A failure is logged and tried again at the
// next tick.
func pruneMessageIDs(ctx context.Context, st *store.Store, log *slog.Logger, every, keep time.Duration) {
	bridges.PruneLoop(ctx, log, every, "old message ids", func(ctx context.Context) (int64, error) {
		return st.PruneMessageIDs(ctx, time.Now().Add(-keep))
	}, "older_than", keep.String())
}
