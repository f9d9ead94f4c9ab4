package store

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// foldRFC1459 folds like the rfc1459 case mapping.
func foldRFC1459(s string) string {
	return strings.NewReplacer("[", "{", "]", "}", "\\", "|", "~", "^").Replace(strings.ToLower(s))
}

// column returns the values of a query's one column, sorted, joined by
// spaces.
func column(t *testing.T, s *Store, query string) string {
	t.Helper()
	rows, err := s.db.Query(query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// From ascii to rfc1459, #A[b and #a{b merge, for every user: persistent
// or recording if either was, both archives kept; rows written before
// the spelling was kept, and archives without settings, move too; other
// servers' rows stay.
func TestRekeyIRCServer(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := s.IRCCasemap(ctx, "localhost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no mapping yet: %v", err)
	}
	if m, err := s.RekeyIRCServer(ctx, "localhost", "ascii", strings.ToLower); err != nil || len(m) != 0 {
		t.Fatalf("re-keying no rows: %v, %v", m, err)
	}
	if cm, err := s.IRCCasemap(ctx, "localhost"); err != nil || cm != "ascii" {
		t.Fatalf("mapping: %q, %v", cm, err)
	}
	for _, r := range []struct {
		jid, key, name, nick string
		persistent, record   int
	}{
		{"u@example.org", "#a[b", "#A[b", "", 1, 0},
		{"u@example.org", "#a{b", "#a{b", "", 0, 1},
		{"v@example.org", "#a[b", "#a[b", "v", 0, 0},
		{"v@example.org", "#q[r", "", "v", 0, 0}, // before version 6
		{"v@example.org", "#q{r", "#q{r", "", 1, 1},
		{"v@example.org", "#z[z", "", "", 0, 0},
	} {
		if _, err := s.db.Exec(`INSERT INTO irc_channels (jid, server, channel, name, nick, persistent, record_history) VALUES (?, 'localhost', ?, ?, ?, ?, ?)`,
			r.jid, r.key, r.name, r.nick, r.persistent, r.record); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []struct{ jid, server, key, body string }{
		{"u@example.org", "localhost", "#a[b", "s1"}, {"u@example.org", "localhost", "#a{b", "c1"}, {"u@example.org", "localhost", "#a[b", "s2"},
		{"u@example.org", "localhost", "#o[p", "o1"}, // no settings row
		{"v@example.org", "localhost", "#a[b", "v1"}, {"v@example.org", "localhost", "#q[r", "q1"}, {"v@example.org", "localhost", "#q{r", "q2"},
		{"v@example.org", "irc.other", "#a[b", "elsewhere"},
	} {
		if _, err := s.ArchiveIRCMessage(ctx, IRCMessage{User: r.jid, Server: r.server, Channel: r.key, Nick: "bob", Body: r.body}); err != nil {
			t.Fatal(err)
		}
	}
	merged, err := s.RekeyIRCServer(ctx, "localhost", "rfc1459", foldRFC1459)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[IRCChannelRef]IRCChannelSettings{
		{"u@example.org", "#a{b"}: {Persistent: true, Record: true},
		{"v@example.org", "#a{b"}: {},
		{"v@example.org", "#q{r"}: {Persistent: true, Record: true},
		{"v@example.org", "#z{z"}: {},
	}; !reflect.DeepEqual(merged, want) {
		t.Errorf("merged settings: %v", merged)
	}
	if got := column(t, s, `SELECT jid || ' ' || channel || '=' || name || ' ' || nick || ' ' || persistent || record_history FROM irc_channels`); got !=
		"u@example.org #a{b=#A[b  11 v@example.org #a{b=#a[b v 00 v@example.org #q{r=#q{r v 11 v@example.org #z{z=#z[z  00" {
		t.Errorf("stored channels: %q", got)
	}
	if got := column(t, s, `SELECT jid || ' ' || server || ' ' || channel || ' ' || body FROM irc_history`); got !=
		"u@example.org localhost #a{b c1 u@example.org localhost #a{b s1 u@example.org localhost #a{b s2 u@example.org localhost #o{p o1 "+
			"v@example.org irc.other #a[b elsewhere v@example.org localhost #a{b v1 v@example.org localhost #q{r q1 v@example.org localhost #q{r q2" {
		t.Errorf("archives: %q", got)
	}
	if cm, err := s.IRCCasemap(ctx, "localhost"); err != nil || cm != "rfc1459" {
		t.Errorf("mapping: %q, %v", cm, err)
	}
	if cm, err := s.IRCCasemap(ctx, "irc.other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("mapping of another server: %q, %v", cm, err)
	}
}

// A chain of moves, x to y and y to z: each archive moves once.
func TestRekeyIRCServerChain(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for _, key := range []string{"x", "y"} {
		if err := s.PutIRCChannelSettings(ctx, "u@example.org", "localhost", key, key, IRCChannelSettings{Record: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ArchiveIRCMessage(ctx, IRCMessage{User: "u@example.org", Server: "localhost", Channel: key, Nick: "bob", Body: "in " + key}); err != nil {
			t.Fatal(err)
		}
	}
	fold := func(name string) string { return map[string]string{"x": "y", "y": "z"}[name] }
	if _, err := s.RekeyIRCServer(ctx, "localhost", "other", fold); err != nil {
		t.Fatal(err)
	}
	if got := column(t, s, `SELECT channel || '=' || name FROM irc_channels`); got != "y=x z=y" {
		t.Errorf("stored channels: %q", got)
	}
	if got := column(t, s, `SELECT channel || ': ' || body FROM irc_history`); got != "y: in x z: in y" {
		t.Errorf("archives: %q", got)
	}
}

// The channels' lines move too, when two channels become one (each with
// its first line) and along a chain of moves; the next line of a merged
// channel is written after the newest of both.
func TestRekeyIRCServerLines(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	var after int64
	for _, key := range []string{"#a[b", "#a{b", "x", "y"} {
		a, err := s.ArchiveIRCLine(ctx, IRCLine{Server: "localhost", Channel: key, Nick: "bob", Body: "in " + key, Stamp: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if key == "#a{b" {
			after = a.ID
		}
	}
	fold := func(name string) string {
		if k, ok := map[string]string{"x": "y", "y": "z"}[name]; ok {
			return k
		}
		return foldRFC1459(name)
	}
	if _, err := s.RekeyIRCServer(ctx, "localhost", "other", fold); err != nil {
		t.Fatal(err)
	}
	if got := column(t, s, `SELECT channel || ': ' || body FROM irc_history`); got != "#a{b: in #a[b #a{b: in #a{b y: in x z: in y" {
		t.Errorf("archives: %q", got)
	}
	for _, body := range []string{"next", "next"} {
		a, err := s.ArchiveIRCLine(ctx, IRCLine{Server: "localhost", Channel: "#a{b", Nick: "bob", Body: body, Stamp: time.Now(), After: after})
		if err != nil {
			t.Fatal(err)
		}
		after = a.ID
	}
	if got := column(t, s, `SELECT body FROM irc_history WHERE channel = '#a{b'`); got != "in #a[b in #a{b next next" {
		t.Errorf("the merged channel's lines: %q", got)
	}
}

// Whichever step fails, nothing changes; once repaired, the next try
// re-keys.
func TestRekeyIRCServerFailures(t *testing.T) {
	sqliteOnly(t) // triggers in SQLite's dialect, SQLite's json()
	ctx := context.Background()
	trigger := func(table, op string) [2]string {
		return [2]string{`CREATE TRIGGER sabotage BEFORE ` + op + ` ON ` + table + ` BEGIN SELECT RAISE(ABORT, 'refused'); END`,
			`DROP TRIGGER sabotage`}
	}
	for _, c := range []struct {
		name string
		sql  [2]string // sabotage, repair
	}{
		{"read the channels", [2]string{`ALTER TABLE irc_channels RENAME TO away`, `ALTER TABLE away RENAME TO irc_channels`}},
		{"a bad row", [2]string{`UPDATE irc_channels SET persistent = 'x'`, `UPDATE irc_channels SET persistent = 1`}},
		{"a failing row", [2]string{`ALTER TABLE irc_channels RENAME TO away; CREATE VIEW irc_channels AS SELECT * FROM away UNION ALL SELECT 'u', 'localhost', json('not json'), 0, 1, '', '' WHERE (SELECT count(*) FROM away) > 0`,
			`DROP VIEW irc_channels; ALTER TABLE away RENAME TO irc_channels`}},
		{"read the archive", [2]string{`ALTER TABLE irc_history RENAME TO away`, `ALTER TABLE away RENAME TO irc_history`}},
		{"a bad archive row", [2]string{`ALTER TABLE irc_history RENAME TO away; CREATE VIEW irc_history AS SELECT jid, NULL AS channel, server FROM away`,
			`DROP VIEW irc_history; ALTER TABLE away RENAME TO irc_history`}},
		{"a failing archive row", [2]string{`ALTER TABLE irc_history RENAME TO away; CREATE VIEW irc_history AS SELECT jid, channel, server FROM away UNION ALL SELECT 'u', json('not json'), 'localhost'`,
			`DROP VIEW irc_history; ALTER TABLE away RENAME TO irc_history`}},
		{"move the archive", trigger("irc_history", "UPDATE")},
		{"delete the channels", trigger("irc_channels", "DELETE")},
		{"insert the channels", trigger("irc_channels", "INSERT")},
		{"store the mapping", trigger("irc_servers", "INSERT")},
		{"commit", [2]string{`CREATE TABLE parent (id INTEGER PRIMARY KEY);
			CREATE TABLE child (ref INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
			CREATE TRIGGER sabotage AFTER INSERT ON irc_servers BEGIN INSERT INTO child VALUES (1); END`,
			`DROP TRIGGER sabotage`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openTest(t)
			mustExec(t, s, `INSERT INTO irc_channels (jid, server, channel, name, persistent) VALUES ('u@example.org', 'localhost', '#a{b', '#A[b', 1)`,
				`INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES ('u@example.org', 'localhost', '#a{b', 'bob', 'm', 0)`)
			mustExec(t, s, c.sql[0])
			if merged, err := s.RekeyIRCServer(ctx, "localhost", "ascii", strings.ToLower); err == nil {
				t.Fatalf("re-keyed despite the failure: %v", merged)
			}
			mustExec(t, s, c.sql[1])
			if got := column(t, s, `SELECT channel FROM irc_channels UNION ALL SELECT channel FROM irc_history UNION ALL SELECT server FROM irc_servers`); got != "#a{b #a{b" {
				t.Errorf("rows after the failure: %q", got)
			}
			if _, err := s.RekeyIRCServer(ctx, "localhost", "ascii", strings.ToLower); err != nil {
				t.Fatalf("the second try: %v", err)
			}
			if got := column(t, s, `SELECT channel FROM irc_channels UNION ALL SELECT channel FROM irc_history UNION ALL SELECT casemapping FROM irc_servers`); got != "#a[b #a[b ascii" {
				t.Errorf("rows after the second try: %q", got)
			}
		})
	}
}

func TestIRCCasemapClosedStore(t *testing.T) {
	ctx := context.Background()
	s := closedStore(t)
	if cm, err := s.IRCCasemap(ctx, "localhost"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("mapping of a closed store: %q, %v", cm, err)
	}
	if m, err := s.RekeyIRCServer(ctx, "localhost", "ascii", strings.ToLower); err == nil {
		t.Errorf("re-keyed a closed store: %v", m)
	}
}

// A merged channel takes the spelling and nick of its persistent row,
// else of a row joined with a nick, else of the row already under its
// key, else the first spelling; a row that keeps its key is left alone.
func TestPlanRekeySpelling(t *testing.T) {
	row := func(key, name, nick string, persistent bool) ircChannelRow {
		return ircChannelRow{user: "u", key: key, name: name, nick: nick, persistent: persistent}
	}
	for _, c := range []struct {
		name string
		rows []ircChannelRow
		want string // the row written: key=name nick, or none
	}{
		{"persistent", []ircChannelRow{row("#A", "#A", "a", false), row("#a", "#a", "", true)}, "#a=#a a"},
		{"joined with a nick", []ircChannelRow{row("#a", "#a", "", false), row("#A", "#A", "n", false)}, "#a=#A n"},
		{"under the key", []ircChannelRow{row("#B", "#b", "", false), row("#a", "#A", "", false)}, "#a=#A "},
		{"the first spelling", []ircChannelRow{row("#B", "#b", "", false), row("#C", "#a", "", false)}, "#a=#a "},
		{"unchanged", []ircChannelRow{row("#a", "#a", "n", true)}, "none"},
	} {
		fold := func(string) string { return "#a" }
		p := planRekey(c.rows, nil, fold)
		got := "none"
		if len(p.inserts) == 1 {
			got = p.inserts[0].key + "=" + p.inserts[0].name + " " + p.inserts[0].nick
		}
		if got != c.want || len(p.inserts) > 1 {
			t.Errorf("%s: %s (%+v)", c.name, got, p.inserts)
		}
	}
}
