package main

import (
	"context"
	"log/slog"
	"time"

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
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := st.PruneMessageIDs(ctx, time.Now().Add(-keep))
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("cannot prune old message ids", "err", err, "deleted", n)
		case n > 0:
			log.Info("pruned old message ids", "deleted", n, "older_than", keep.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
