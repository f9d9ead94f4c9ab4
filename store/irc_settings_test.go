package store

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// mustExec runs statements on s's database, failing t on error.
func mustExec(t *testing.T, s *Store, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// looseTable replaces table by one without constraints, with the columns
// given, holding no rows: tests write there values the schema refuses.
func looseTable(t *testing.T, s *Store, table, columns string) {
	t.Helper()
	mustExec(t, s, `DROP TABLE `+table, `CREATE TABLE `+table+` (`+columns+`)`)
}

// failing is an SQL expression for a column of failingView: 'x' in its
// first row, an error in the second.
const failing = `CASE n WHEN 1 THEN 'x' ELSE json('not json') END`

// failingView replaces table by a view of two rows with the columns given
// (SQL expressions AS names, one of them failing): a query on it fails
// once it read the first row.
func failingView(t *testing.T, s *Store, table, columns string) {
	t.Helper()
	mustExec(t, s, `DROP TABLE `+table, `CREATE VIEW `+table+` AS SELECT `+columns+` FROM (SELECT 1 AS n UNION ALL SELECT 2)`)
}

// closedStore returns a store already closed.
func closedStore(t *testing.T) *Store {
	t.Helper()
	s := openTest(t)
	s.Close()
	return s
}

// Network settings are kept per user and server, replaced as a whole.
func TestIRCNetworkSettings(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := s.IRCNetworkSettings(ctx, "u@example.org", "irc.example.net"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no settings yet: %v", err)
	}
	for _, c := range []struct{ user, server, settings string }{
		{"u@example.org", "irc.example.net", `{"nick":"a"}`},
		{"u@example.org", "irc.other.net", `{"nick":"b"}`},
		{"v@example.org", "irc.example.net", `{"nick":"c"}`},
		{"u@example.org", "irc.example.net", `{"nick":"d"}`},
	} {
		if err := s.PutIRCNetworkSettings(ctx, c.user, c.server, []byte(c.settings)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ user, server, want string }{
		{"u@example.org", "irc.example.net", `{"nick":"d"}`},
		{"u@example.org", "irc.other.net", `{"nick":"b"}`},
		{"v@example.org", "irc.example.net", `{"nick":"c"}`},
	} {
		if got, err := s.IRCNetworkSettings(ctx, c.user, c.server); err != nil || string(got) != c.want {
			t.Errorf("%s on %s: %s, %v", c.user, c.server, got, err)
		}
	}

	s = closedStore(t)
	if _, err := s.IRCNetworkSettings(ctx, "u@example.org", "irc.example.net"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("read from a closed store: %v", err)
	}
	if err := s.PutIRCNetworkSettings(ctx, "u@example.org", "irc.example.net", []byte(`{}`)); err == nil {
		t.Error("write to a closed store succeeded")
	}
}

// A channel has the defaults until configured; its spelling is the one
// of its first settings, or of its last join.
func TestIRCChannelSettings(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	get := func(user, key string) IRCChannelSettings {
		t.Helper()
		cs, err := s.IRCChannelSettings(ctx, user, "irc.example.net", key)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	if cs := get("u@example.org", "#a"); cs != (IRCChannelSettings{Record: true}) {
		t.Fatalf("defaults: %+v", cs)
	}
	if err := s.PutIRCChannelSettings(ctx, "u@example.org", "irc.example.net", "#a", "#A", IRCChannelSettings{Persistent: true}); err != nil {
		t.Fatal(err)
	}
	if cs := get("u@example.org", "#a"); cs != (IRCChannelSettings{Persistent: true}) {
		t.Fatalf("stored: %+v", cs)
	}
	if cs := get("v@example.org", "#a"); cs != (IRCChannelSettings{Record: true}) {
		t.Fatalf("another user's: %+v", cs)
	}
	rejoins := func() string {
		t.Helper()
		rs, err := s.PersistentIRCChannels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.User+" "+r.Server+" "+r.Name+" "+r.Nick)
		}
		return strings.Join(out, ", ")
	}
	if got := rejoins(); got != "" {
		t.Fatalf("persistent but never joined: %q", got)
	}
	// A join keeps its nick and spelling, and the settings.
	if err := s.PutIRCChannelNick(ctx, "u@example.org", "irc.example.net", "#a", "#a", "nick"); err != nil {
		t.Fatal(err)
	}
	if cs := get("u@example.org", "#a"); cs != (IRCChannelSettings{Persistent: true}) {
		t.Fatalf("after the join: %+v", cs)
	}
	if got := rejoins(); got != "u@example.org irc.example.net #a nick" {
		t.Fatalf("persistent channels: %q", got)
	}
	// Settings keep the spelling they find.
	if err := s.PutIRCChannelSettings(ctx, "u@example.org", "irc.example.net", "#a", "#A", IRCChannelSettings{Persistent: true, Record: true}); err != nil {
		t.Fatal(err)
	}
	if got := rejoins(); got != "u@example.org irc.example.net #a nick" {
		t.Fatalf("persistent channels after new settings: %q", got)
	}
	// A row from before the spelling was kept gives its key, and takes
	// the spelling of the next settings.
	mustExec(t, s, `INSERT INTO irc_channels (jid, server, channel, nick, persistent) VALUES ('v@example.org', 'irc.example.net', '#old', 'v', 1)`)
	if got := rejoins(); got != "u@example.org irc.example.net #a nick, v@example.org irc.example.net #old v" {
		t.Fatalf("persistent channels with an old row: %q", got)
	}
	if err := s.PutIRCChannelSettings(ctx, "v@example.org", "irc.example.net", "#old", "#OLD", IRCChannelSettings{Persistent: true}); err != nil {
		t.Fatal(err)
	}
	if got := rejoins(); !strings.Contains(got, "#OLD v") {
		t.Fatalf("persistent channels once spelled: %q", got)
	}
	// Not persistent: not rejoined.
	if err := s.PutIRCChannelSettings(ctx, "u@example.org", "irc.example.net", "#a", "#a", IRCChannelSettings{}); err != nil {
		t.Fatal(err)
	}
	if got := rejoins(); got != "v@example.org irc.example.net #OLD v" {
		t.Fatalf("persistent channels: %q", got)
	}
}

func TestIRCChannelSettingsClosedStore(t *testing.T) {
	ctx := context.Background()
	s := closedStore(t)
	if cs, err := s.IRCChannelSettings(ctx, "u@example.org", "irc.example.net", "#a"); err == nil || cs != (IRCChannelSettings{Record: true}) {
		t.Errorf("read from a closed store: %+v, %v", cs, err)
	}
	if err := s.PutIRCChannelSettings(ctx, "u@example.org", "irc.example.net", "#a", "#a", IRCChannelSettings{}); err == nil {
		t.Error("settings written to a closed store")
	}
	if err := s.PutIRCChannelNick(ctx, "u@example.org", "irc.example.net", "#a", "#a", "nick"); err == nil {
		t.Error("nick written to a closed store")
	}
	if rs, err := s.PersistentIRCChannels(ctx); err == nil {
		t.Errorf("persistent channels of a closed store: %+v", rs)
	}
}

// A row that cannot be read, or a failure while reading, fails the list
// of persistent channels.
func TestPersistentIRCChannelsBadRows(t *testing.T) {
	sqliteOnly(t) // untyped columns, SQLite's json()
	ctx := context.Background()
	s := openTest(t)
	looseTable(t, s, "irc_channels", "jid, server, channel, name, nick, persistent, record_history")
	mustExec(t, s, `INSERT INTO irc_channels VALUES (NULL, 'irc.example.net', '#a', '#a', 'nick', 1, 1)`)
	if rs, err := s.PersistentIRCChannels(ctx); err == nil {
		t.Errorf("a NULL user read: %+v", rs)
	}
	s = openTest(t)
	failingView(t, s, "irc_channels", `'u' AS jid, 's' AS server, '#a' AS channel, `+failing+` AS name, 'n' AS nick, 1 AS persistent`)
	if rs, err := s.PersistentIRCChannels(ctx); err == nil || !reflect.DeepEqual(rs, []IRCRejoin(nil)) {
		t.Errorf("a failing read: %+v, %v", rs, err)
	}
}
