package store

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"
)

// archive adds messages to u@example.org's archive of #a on
// irc.example.net, one a second from t0, and returns their ids.
func archive(t *testing.T, s *Store, t0 time.Time, msgs ...string) []int64 {
	t.Helper()
	var ids []int64
	for i, m := range msgs {
		nick, body, _ := strings.Cut(m, ":")
		id, err := s.ArchiveIRCMessage(context.Background(), IRCMessage{User: "u@example.org", Server: "irc.example.net", Channel: "#a",
			Nick: nick, Body: body, Stamp: t0.Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 0 && id <= ids[len(ids)-1] {
			t.Fatalf("ids %v then %d", ids, id)
		}
		ids = append(ids, id)
	}
	return ids
}

// bodies returns the bodies of msgs, space-separated.
func bodies(msgs []IRCMessage) string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Body)
	}
	return strings.Join(out, " ")
}

// A query selects by stamp, id and nick, pages from either end, and
// tells whether there is more.
func TestQueryIRCArchive(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	t0 := time.UnixMilli(1_800_000_000_123)
	ids := archive(t, s, t0, "bob:1", "carol:2", "Bob:3", "dave:4", "bob:5")
	// Elsewhere: another user, server, channel.
	for _, m := range []IRCMessage{
		{User: "v@example.org", Server: "irc.example.net", Channel: "#a"},
		{User: "u@example.org", Server: "irc.other.net", Channel: "#a"},
		{User: "u@example.org", Server: "irc.example.net", Channel: "#b"},
	} {
		m.Nick, m.Body, m.Stamp = "bob", "elsewhere", t0
		if _, err := s.ArchiveIRCMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	at := func(i int) *time.Time { v := t0.Add(time.Duration(i) * time.Second); return &v }
	id := func(i int) *int64 { return &ids[i] }
	zero := int64(0)
	for _, c := range []struct {
		name string
		q    IRCArchiveQuery
		want string
		more bool
	}{
		{"all", IRCArchiveQuery{Max: 10}, "1 2 3 4 5", false},
		{"first page", IRCArchiveQuery{Max: 2}, "1 2", true},
		{"exactly", IRCArchiveQuery{Max: 5}, "1 2 3 4 5", false},
		{"last page", IRCArchiveQuery{Max: 2, Last: true}, "4 5", true},
		{"no page", IRCArchiveQuery{Max: 0}, "", true},
		{"a negative page", IRCArchiveQuery{Max: -1}, "", true},
		{"no limit", IRCArchiveQuery{Max: math.MaxInt, Last: true}, "1 2 3 4 5", false},
		{"from start", IRCArchiveQuery{Max: 10, Start: at(1)}, "2 3 4 5", false},
		{"up to end", IRCArchiveQuery{Max: 10, End: at(1)}, "1 2", false},
		{"between", IRCArchiveQuery{Max: 10, Start: at(1), End: at(3)}, "2 3 4", false},
		{"after", IRCArchiveQuery{Max: 2, After: id(1)}, "3 4", true},
		{"before", IRCArchiveQuery{Max: 2, Before: id(3), Last: true}, "2 3", true},
		{"before the first", IRCArchiveQuery{Max: 2, Before: id(0), Last: true}, "", false},
		{"before id 0", IRCArchiveQuery{Max: 2, Before: &zero}, "", false},
		{"between ids", IRCArchiveQuery{Max: 10, After: id(0), Before: id(4)}, "2 3 4", false},
		{"a nick in any case", IRCArchiveQuery{Max: 10, Nick: "BOB"}, "1 3 5", false},
		{"a nick, last", IRCArchiveQuery{Max: 1, Nick: "bob", Last: true}, "5", true},
		{"nobody", IRCArchiveQuery{Max: 10, Nick: "eve"}, "", false},
	} {
		c.q.User, c.q.Server, c.q.Channel = "u@example.org", "irc.example.net", "#a"
		got, more, err := s.QueryIRCArchive(ctx, c.q)
		if err != nil || bodies(got) != c.want || more != c.more {
			t.Errorf("%s: %q, more %v, %v; want %q, more %v", c.name, bodies(got), more, err, c.want, c.more)
		}
	}
	got, _, _ := s.QueryIRCArchive(ctx, IRCArchiveQuery{User: "u@example.org", Server: "irc.example.net", Channel: "#a", Max: 1, Last: true})
	if want := (IRCMessage{ID: ids[4], User: "u@example.org", Server: "irc.example.net", Channel: "#a", Nick: "bob", Body: "5"}); len(got) != 1 ||
		!got[0].Stamp.Equal(t0.Add(4*time.Second)) || func() IRCMessage { m := got[0]; m.Stamp = time.Time{}; return m }() != want {
		t.Errorf("message read back: %+v", got)
	}
}

func TestIRCArchiveFailures(t *testing.T) {
	ctx := context.Background()
	s := closedStore(t)
	if _, err := s.ArchiveIRCMessage(ctx, IRCMessage{User: "u@example.org", Server: "irc.example.net", Channel: "#a"}); err == nil {
		t.Error("archived in a closed store")
	}
	q := IRCArchiveQuery{User: "u@example.org", Server: "irc.example.net", Channel: "#a", Max: 10}
	if got, _, err := s.QueryIRCArchive(ctx, q); err == nil {
		t.Errorf("query on a closed store: %+v", got)
	}
	if _, err := s.PruneIRCArchive(ctx, 1); err == nil {
		t.Error("pruned a closed store")
	}

	sqliteOnly(t) // untyped columns, SQLite's json()
	s = openTest(t)
	looseTable(t, s, "irc_history", "id INTEGER PRIMARY KEY, jid, server, channel, nick, body, stamp")
	mustExec(t, s, `INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES ('u@example.org', 'irc.example.net', '#a', NULL, 'b', 0)`)
	if got, _, err := s.QueryIRCArchive(ctx, q); err == nil {
		t.Errorf("a NULL nick read: %+v", got)
	}
	// The second row fails once the first was read.
	s = openTest(t)
	mustExec(t, s, `ALTER TABLE irc_history RENAME TO stored`,
		`CREATE VIEW irc_history AS SELECT id, jid, server, channel, nick, CASE id WHEN 1 THEN body ELSE json(body) END AS body, stamp FROM stored`,
		`INSERT INTO stored (jid, server, channel, nick, body, stamp) VALUES ('u@example.org', 'irc.example.net', '#a', 'bob', 'x', 0), ('u@example.org', 'irc.example.net', '#a', 'bob', 'not json', 0)`)
	if got, _, err := s.QueryIRCArchive(ctx, q); err == nil || got != nil {
		t.Errorf("a failing read: %+v, %v", got, err)
	}
}

// Pruning keeps the newest messages of each user's archive of each
// channel.
func TestPruneIRCArchive(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	t0 := time.UnixMilli(0)
	archive(t, s, t0, "bob:1", "bob:2", "bob:3", "bob:4", "bob:5")
	for _, m := range []IRCMessage{
		{User: "v@example.org", Server: "irc.example.net", Channel: "#a", Body: "v1"},
		{User: "u@example.org", Server: "irc.other.net", Channel: "#a", Body: "o1"},
		{User: "u@example.org", Server: "irc.example.net", Channel: "#b", Body: "b1"},
		{User: "u@example.org", Server: "irc.example.net", Channel: "#b", Body: "b2"},
		{User: "u@example.org", Server: "irc.example.net", Channel: "#b", Body: "b3"},
	} {
		if _, err := s.ArchiveIRCMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	archive(t, s, t0, "bob:6")
	n, err := s.PruneIRCArchive(ctx, 2)
	if err != nil || n != 5 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	for _, c := range []struct{ user, server, channel, want string }{
		{"u@example.org", "irc.example.net", "#a", "5 6"},
		{"u@example.org", "irc.example.net", "#b", "b2 b3"},
		{"v@example.org", "irc.example.net", "#a", "v1"},
		{"u@example.org", "irc.other.net", "#a", "o1"},
	} {
		got, _, err := s.QueryIRCArchive(ctx, IRCArchiveQuery{User: c.user, Server: c.server, Channel: c.channel, Max: 10})
		if err != nil || bodies(got) != c.want {
			t.Errorf("%s %s %s: %q, %v", c.user, c.server, c.channel, bodies(got), err)
		}
	}
	if n, err := s.PruneIRCArchive(ctx, 2); err != nil || n != 0 {
		t.Errorf("pruned again: %d, %v", n, err)
	}
}
