package main

import (
	"context"
	"errors"
	"log/slog"
)

// cancelledAtDebug passes records to next, except that a warning or error
// whose "err" is context.Canceled is logged at debug level: it is work
// stopped by a shutdown (a start-up that failed, SIGTERM), not a fault, and
// would otherwise print a spurious error before a clean or explained exit.
type cancelledAtDebug struct{ next slog.Handler }

func (h cancelledAtDebug) Enabled(ctx context.Context, l slog.Level) bool {
	// Leveled down later if need be: Enabled cannot see the attributes.
	return h.next.Enabled(ctx, l)
}

func (h cancelledAtDebug) Handle(ctx context.Context, r slog.Record) error {
	if r.Level > slog.LevelDebug && cancelled(r) {
		if !h.next.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		d := slog.NewRecord(r.Time, slog.LevelDebug, r.Message+" (cancelled by shutdown)", r.PC)
		r.Attrs(func(a slog.Attr) bool { d.AddAttrs(a); return true })
		r = d
	}
	return h.next.Handle(ctx, r)
}

func (h cancelledAtDebug) WithAttrs(as []slog.Attr) slog.Handler {
	return cancelledAtDebug{h.next.WithAttrs(as)}
}

func (h cancelledAtDebug) WithGroup(name string) slog.Handler {
	return cancelledAtDebug{h.next.WithGroup(name)}
}

func cancelled(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			if err, ok := a.Value.Any().(error); ok && errors.Is(err, context.Canceled) {
				found = true
			}
			return false
		}
		return true
	})
	return found
}
