package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestCancelledWorkIsNotAnError(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf bytes.Buffer
		log := slog.New(cancelledAtDebug{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})}).With("component", "irc.localhost")
		log.Error("cannot read the persistent irc channels", "err", fmt.Errorf("failed to query: %w", context.Canceled))
		log.Warn("cannot read the SMS queue", "err", context.Canceled)
		log.Error("cannot store a registration", "err", errors.New("disk full"))
		log.Error("cannot reach the server", "err", context.DeadlineExceeded)
		out := buf.String()
		if strings.Contains(out, "level=ERROR msg=\"cannot read the persistent") || strings.Contains(out, "level=WARN") {
			t.Errorf("level %v: cancelled work logged as a warning or an error:\n%s", level, out)
		}
		for _, want := range []string{`level=ERROR msg="cannot store a registration" component=irc.localhost err="disk full"`, `level=ERROR msg="cannot reach the server"`} {
			if !strings.Contains(out, want) {
				t.Errorf("level %v: %q missing:\n%s", level, want, out)
			}
		}
		debug := strings.Contains(out, `level=DEBUG msg="cannot read the persistent irc channels (cancelled by shutdown)" component=irc.localhost`)
		if debug != (level == slog.LevelDebug) {
			t.Errorf("level %v: the cancelled work at debug level shown=%v:\n%s", level, debug, out)
		}
	}
}
