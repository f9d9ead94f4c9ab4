package bridges

import (
	"context"
	"log/slog"
	"time"
)

// PruneLoop runs prune at once and then every every, until ctx ends. It
// logs what prune deleted (as "pruned <what>", with attrs) and its
// failures (as "cannot prune <what>"); a failure is tried again at the
// next tick.
func PruneLoop(ctx context.Context, log *slog.Logger, every time.Duration, what string,
	prune func(context.Context) (int64, error), attrs ...any) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := prune(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("cannot prune "+what, append([]any{"err", err, "deleted", n}, attrs...)...)
		case n > 0:
			log.Info("pruned "+what, append([]any{"deleted", n}, attrs...)...)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
