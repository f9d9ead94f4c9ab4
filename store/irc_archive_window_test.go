package store

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// archived returns the bodies of user's archive of #c on srv, oldest first.
func archived(t *testing.T, s *Store, user string) string {
	t.Helper()
	msgs, _, err := s.QueryIRCArchive(context.Background(), IRCArchiveQuery{User: user, Server: "srv", Channel: "#c", Max: 100})
	if err != nil {
		t.Fatal(err)
	}
	return bodies(msgs)
}

// A channel's lines are archived once; each user sees those archived
// while their window was open: not the lines from before they joined,
// nor those from while they were away.
func TestIRCArchiveWindows(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	line := func(body string) int64 {
		t.Helper()
		id, err := s.ArchiveIRCMessage(ctx, IRCMessage{Server: "srv", Channel: "#c", Nick: "bob", Body: body, Stamp: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	open := func(user string) int64 {
		t.Helper()
		after, err := s.OpenIRCWindow(ctx, user, "srv", "#c")
		if err != nil {
			t.Fatal(err)
		}
		return after
	}
	closeW := func(user string) {
		t.Helper()
		if err := s.CloseIRCWindow(ctx, user, "srv", "#c"); err != nil {
			t.Fatal(err)
		}
	}
	zero := line("zero") // nobody's
	if after := open("a@x"); after != zero {
		t.Errorf("a's window opens after %d, want %d (zero)", after, zero)
	}
	one := line("one")
	open("b@x") // joined later
	// Already open: the window unchanged (a sees "one"), the channel's
	// newest line returned.
	if after := open("a@x"); after != one {
		t.Errorf("a's window, opened again, returns %d, want %d (one)", after, one)
	}
	line("two")
	closeW("b@x") // parted
	closeW("b@x") // no open window: nothing
	line("three")
	open("b@x") // back
	line("four")
	// Another channel, another server: windows are per channel.
	if _, err := s.ArchiveIRCMessage(ctx, IRCMessage{Server: "srv", Channel: "#d", Nick: "bob", Body: "elsewhere", Stamp: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseIRCWindows(ctx, "irc.example.org"); err != nil { // a restart
		t.Fatal(err)
	}
	line("five") // while nobody was in the channel
	open("a@x")
	line("six")
	for user, want := range map[string]string{"a@x": "one two three four six", "b@x": "two four", "c@x": ""} {
		if got := archived(t, s, user); got != want {
			t.Errorf("%s sees %q, want %q", user, got, want)
		}
	}
	// The filters still apply, and paging by id.
	msgs, more, err := s.QueryIRCArchive(ctx, IRCArchiveQuery{User: "b@x", Server: "srv", Channel: "#c", Last: true, Max: 1})
	if err != nil || len(msgs) != 1 || msgs[0].Body != "four" || !more {
		t.Fatalf("b's last line: %+v more %v err %v", msgs, more, err)
	}

	// Pruning to the last two lines drops the windows left without a
	// line (b's first) and keeps the others.
	if _, err := s.PruneIRCArchive(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{"a@x": "six", "b@x": ""} {
		if got := archived(t, s, user); got != want {
			t.Errorf("after pruning, %s sees %q, want %q", user, got, want)
		}
	}
	var windows []string
	rows, err := s.db.QueryContext(ctx, `SELECT jid, until_id IS NULL FROM irc_history_windows ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var jid string
		var open bool
		if err := rows.Scan(&jid, &open); err != nil {
			t.Fatal(err)
		}
		windows = append(windows, jid+":"+map[bool]string{true: "open", false: "closed"}[open])
	}
	if want := []string{"a@x:open"}; !slices.Equal(windows, want) {
		t.Errorf("windows after pruning: %v, want %v", windows, want)
	}
}

// The archive of version 12 (a row per user) stays each user's own after
// the migration, ids unchanged; the lines archived after it are shared
// through the windows.
func TestUpgradeToIRCWindows(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	old, err := open(path, 12)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string][]int64{}
	for _, r := range []struct{ user, body string }{
		{"a@x", "one"}, {"b@x", "one"}, {"a@x", "two"}, {"b@x", "two"}, {"a@x", "three"},
	} {
		id, err := old.ArchiveIRCMessage(ctx, IRCMessage{User: r.user, Server: "srv", Channel: "#c", Nick: "bob", Body: r.body, Stamp: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		ids[r.user] = append(ids[r.user], id)
	}
	old.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.Version(); err != nil || v != LatestVersion() {
		t.Fatalf("version %d (%v), want %d", v, err, LatestVersion())
	}
	for user, want := range map[string]string{"a@x": "one two three", "b@x": "one two", "c@x": ""} {
		if got := archived(t, s, user); got != want {
			t.Errorf("%s sees %q after the migration, want %q", user, got, want)
		}
		msgs, _, err := s.QueryIRCArchive(ctx, IRCArchiveQuery{User: user, Server: "srv", Channel: "#c", Max: 100})
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range msgs {
			if m.ID != ids[user][i] {
				t.Errorf("%s's message %d has id %d, had %d", user, i, m.ID, ids[user][i])
			}
		}
	}
	if _, err := s.OpenIRCWindow(ctx, "b@x", "srv", "#c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ArchiveIRCMessage(ctx, IRCMessage{Server: "srv", Channel: "#c", Nick: "bob", Body: "four", Stamp: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{"a@x": "one two three", "b@x": "one two four"} {
		if got := archived(t, s, user); got != want {
			t.Errorf("%s sees %q, want %q", user, got, want)
		}
	}
}

// Re-keying a server moves the channel's lines (by the spelling of a
// user's settings row) and the users' windows with them.
func TestRekeyIRCWindows(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	// Under rfc1459, "#A[b" is kept under "#a{b".
	if err := s.PutIRCChannelSettings(ctx, "u@x", "srv", "#a{b", "#A[b", IRCChannelSettings{Record: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenIRCWindow(ctx, "u@x", "srv", "#a{b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ArchiveIRCMessage(ctx, IRCMessage{Server: "srv", Channel: "#a{b", Nick: "bob", Body: "kept", Stamp: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RekeyIRCServer(ctx, "srv", "ascii", strings.ToLower); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"#a[b": "kept", "#a{b": ""} {
		msgs, _, err := s.QueryIRCArchive(ctx, IRCArchiveQuery{User: "u@x", Server: "srv", Channel: key, Max: 10})
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(msgs); got != want {
			t.Errorf("under %s: %q, want %q", key, got, want)
		}
	}
}

// An instance starting on a shared database closes the windows left
// open by the last run of its own users only: a user another live
// instance holds is in the channel there, and keeps seeing its lines.
// On SQLite the process is alone and closes them all.
func TestCloseIRCWindowsOfOthers(t *testing.T) {
	ctx := context.Background()
	st := instances(t, 2)
	a, b := st[0], st[1]
	if !claim(t, b, "irc.example.org", "held@x") {
		t.Fatal("a free user was not claimed")
	}
	for _, u := range []string{"held@x", "free@x"} {
		if _, err := b.OpenIRCWindow(ctx, u, "srv", "#c"); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.CloseIRCWindows(ctx, "irc.example.org"); err != nil { // a starts
		t.Fatal(err)
	}
	if _, err := a.ArchiveIRCMessage(ctx, IRCMessage{Server: "srv", Channel: "#c", Nick: "bob", Body: "after", Stamp: time.Now()}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"held@x": "after", "free@x": ""}
	if !a.Shared() {
		want["held@x"] = ""
	}
	for user, w := range want {
		if got := archived(t, a, user); got != w {
			t.Errorf("%s sees %q, want %q", user, got, w)
		}
	}
}
