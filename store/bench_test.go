package store

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// The delivery path's statements, on the engine under test (TestMain runs
// them on SQLite, then on PostgreSQL).

func BenchmarkEnqueueStanzas(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("stanzas=%d", n), func(b *testing.B) {
			ctx := context.Background()
			s := openTest(b)
			stanzas := make([]string, n)
			for i := range stanzas {
				stanzas[i] = `<message from='alice%example.com@mail.example.org' to='u@example.org' id='x'><body>hello</body></message>`
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.EnqueueStanzas(ctx, "mail.example.org", stanzas); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDeliver(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		key := fmt.Sprintf("SM%d", i)
		if _, err := s.Deliver(ctx, "sms.example.org", Delivery{Key: key,
			Links:   []MessageID{{Domain: "sms.example.org", JID: "u@example.org", XMPPID: key, ForeignID: key, Extra: `{"in":true}`}},
			Stanzas: []string{`<message><body>hi</body></message>`}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPendingSent takes 10 stanzas from the queue and removes them,
// as the outbox does.
func BenchmarkPendingSent(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	stanzas := make([]string, 10)
	for i := range stanzas {
		stanzas[i] = `<message><body>hi</body></message>`
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if err := s.EnqueueStanzas(ctx, "irc.example.org", stanzas); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		items, err := s.PendingStanzas(ctx, "irc.example.org", 10)
		if err != nil || len(items) != 10 {
			b.Fatal(len(items), err)
		}
		if err := s.StanzasSentThrough(ctx, "irc.example.org", items[len(items)-1].ID); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkArchiveIRCMessage(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	m := IRCMessage{User: "u@example.org", Server: "irc.example.net", Channel: "#go", Nick: "bob", Body: "hello there", Stamp: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.ArchiveIRCMessage(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkArchiveIRCLine archives a channel's lines as one instance
// does: each after the last one it archived.
func BenchmarkArchiveIRCLine(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	l := IRCLine{Server: "irc.example.net", Channel: "#go", Nick: "bob", Body: "hello there", Stamp: time.Now()}
	l.Since = l.Stamp.Add(-time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		a, err := s.ArchiveIRCLine(ctx, l)
		if err != nil {
			b.Fatal(err)
		}
		l.After = a.ID
	}
}

// BenchmarkEnqueueStanzasConcurrent is a fan-out: 64 callers at once
// queue a stanza each, so that their writes share commit groups (on
// PostgreSQL, one round trip per group).
func BenchmarkEnqueueStanzasConcurrent(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	st := []string{`<message from='#go%irc.example.net@irc.example.org/bob' to='u@example.org' type='groupchat'><body>hello</body></message>`}
	b.ReportAllocs()
	b.SetParallelism(32) // × GOMAXPROCS callers
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.EnqueueStanzas(ctx, "irc.example.org", st); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkIRCEcho is the room's echo of a user's own line: the line
// archived, and its echo to the user's resource queued with the line's
// id as its stanza-id.
func BenchmarkIRCEcho(b *testing.B) {
	const head, tail = `<message xmlns="jabber:component:accept" from="#go%irc.example.net@irc.example.org/bob" to="u@example.org/r" type="groupchat" id="m1"><body>hello there</body><stanza-id xmlns="urn:xmpp:sid:0" by="#go%irc.example.net@irc.example.org" id="`, `"/></message>`
	b.Run("apart", func(b *testing.B) { // the archive's commit, then the outbox's
		ctx := context.Background()
		s := openTest(b)
		l := IRCLine{Server: "irc.example.net", Channel: "#go", Nick: "bob", Body: "hello there", Stamp: time.Now()}
		l.Since = l.Stamp.Add(-time.Minute)
		b.ReportAllocs()
		for b.Loop() {
			a, err := s.ArchiveIRCLine(ctx, l)
			if err != nil {
				b.Fatal(err)
			}
			l.After = a.ID
			if err := s.EnqueueStanzas(ctx, "irc.example.org", []string{head + strconv.FormatInt(a.ID, 10) + tail}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("together", func(b *testing.B) { // one commit (IRCLine.Echo)
		ctx := context.Background()
		s := openTest(b)
		l := IRCLine{Server: "irc.example.net", Channel: "#go", Nick: "bob", Body: "hello there", Stamp: time.Now(),
			Echo: &IRCEcho{Domain: "irc.example.org", Stanzas: [][2]string{{head, tail}}}}
		l.Since = l.Stamp.Add(-time.Minute)
		b.ReportAllocs()
		for b.Loop() {
			a, err := s.ArchiveIRCLine(ctx, l)
			if err != nil || !a.Queued {
				b.Fatal(a, err)
			}
			l.After = a.ID
		}
	})
}
