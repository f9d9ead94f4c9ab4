package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"passerelle/cmd/internal/harness"
)

// Profiles are served on a loopback HTTP listener only: a listener on
// every address (or a public one) serves /healthz and /metrics without them.
func TestProfilesOnLoopbackOnly(t *testing.T) {
	for _, c := range []struct {
		host string
		want int
	}{{"127.0.0.1", http.StatusOK}, {"0.0.0.0", http.StatusNotFound}} {
		port := harness.FreePort(t)
		srv, err := serveHTTP(fmt.Sprintf("%s:%d", c.host, port), nil, nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", port))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.Shutdown(context.Background())
		if resp.StatusCode != c.want {
			t.Errorf("listening on %s: /debug/pprof/ answered %d, want %d", c.host, resp.StatusCode, c.want)
		}
	}
}
