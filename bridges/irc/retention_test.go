package irc

import (
	"context"
	"strings"
	"testing"
	"time"

	"passerelle/store"
)

// The archive keeps the newest HistoryLimit messages of each channel.
func TestArchivePruned(t *testing.T) {
	h := newFakeHost(t)
	b := New(Options{HistoryLimit: 3})
	b.pruneEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	insert := func(channel string, bodies ...string) {
		for _, body := range bodies {
			if _, err := h.St.ArchiveIRCMessage(context.Background(), store.IRCMessage{User: testUser, Server: "srv", Channel: channel,
				Nick: "bob", Body: body, Stamp: time.UnixMilli(0)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert("#big", "1", "2", "3", "4", "5")
	insert("#small", "a", "b")
	wait := start(t, ctx, b, h)
	t.Cleanup(func() { cancel(); wait() })
	bodies := func(channel string) string {
		msgs, _, err := h.St.QueryIRCArchive(context.Background(), store.IRCArchiveQuery{User: testUser, Server: "srv", Channel: channel, Max: 100})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range msgs {
			out = append(out, m.Body)
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
	h.St.Close()
	if _, err := b.prune(context.Background()); err == nil {
		t.Error("prune on a closed database succeeded")
	}
}
