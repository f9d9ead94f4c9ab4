package irc

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The archive keeps the newest HistoryLimit messages of each channel.
func TestArchivePruned(t *testing.T) {
	h := newFakeHost(t)
	b := New(Options{HistoryLimit: 3})
	b.pruneEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	db := h.st.DB()
	insert := func(channel string, bodies ...string) {
		for _, body := range bodies {
			if _, err := db.Exec(`INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES (?, 'srv', ?, 'bob', ?, 0)`,
				testUser, channel, body); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert("#big", "1", "2", "3", "4", "5")
	insert("#small", "a", "b")
	wait := start(t, ctx, b, h)
	t.Cleanup(func() { cancel(); wait() })
	bodies := func(channel string) string {
		rows, err := db.Query(`SELECT body FROM irc_history WHERE channel = ? ORDER BY id`, channel)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			rows.Scan(&s)
			out = append(out, s)
		}
		return strings.Join(out, " ")
	}
	deadline := time.After(10 * time.Second)
	for bodies("#big") != "3 4 5" {
		select {
		case <-deadline:
			t.Fatalf("not pruned at start: %q", bodies("#big"))
		case <-time.After(5 * time.Millisecond):
		}
	}
	insert("#big", "6", "7")
	for bodies("#big") != "5 6 7" {
		select {
		case <-deadline:
			t.Fatalf("not pruned in the background: %q", bodies("#big"))
		case <-time.After(5 * time.Millisecond):
		}
	}
	if got := bodies("#small"); got != "a b" {
		t.Errorf("a channel under the limit was pruned: %q", got)
	}
	// A closed database is an error, reported.
	h.st.Close()
	if _, err := b.prune(context.Background()); err == nil {
		t.Error("prune on a closed database succeeded")
	}
}
