package store

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"
)

// echoOf is an echo of two stanzas, each naming the line by its id.
func echoOf(name string) *IRCEcho {
	return &IRCEcho{Domain: "irc.example", Stanzas: [][2]string{
		{`<m to="r1">` + name + " ", "</m>"},
		{`<m to="r2">` + name + " ", "</m>"},
	}}
}

// echoed is the stanzas of echoOf(name) for the line id.
func echoed(name string, id int64) []string {
	sid := strconv.FormatInt(id, 10)
	return []string{`<m to="r1">` + name + " " + sid + "</m>", `<m to="r2">` + name + " " + sid + "</m>"}
}

// queued returns s's queued stanzas (on PostgreSQL, this instance's).
func queued(t *testing.T, s *Store) []string {
	t.Helper()
	items, err := s.PendingStanzas(context.Background(), "irc.example", 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range items {
		out = append(out, it.Stanza)
	}
	return out
}

// echo archives the user's own line body with its echo, as the IRC
// bridge does.
func (w *lineWriter) echo(t *testing.T, nick, body string) ArchivedLine {
	t.Helper()
	stamp := time.Now()
	a, err := w.s.ArchiveIRCLine(context.Background(), IRCLine{Server: "srv", Channel: "#c", Nick: nick, Body: body, Stamp: stamp,
		After: w.after, Since: stamp.Add(-time.Minute), Joined: w.joined, Echo: echoOf(body)})
	if err != nil {
		t.Fatal(err)
	}
	w.after = max(w.after, a.ID)
	return a
}

// A line's echo is queued with the line, in order, each stanza with the
// line's id; a line without an echo queues nothing.
func TestIRCEcho(t *testing.T) {
	w := &lineWriter{s: openTest(t)}
	if _, err := w.s.OpenIRCWindow(context.Background(), "a@x", "srv", "#c"); err != nil {
		t.Fatal(err)
	}
	w.put(t, "bob", "before")
	a := w.echo(t, "ua", "mine")
	if !a.Queued {
		t.Error("an echo written with its line: not queued")
	}
	w.put(t, "bob", "after")
	if got, want := queued(t, w.s), echoed("mine", a.ID); !slices.Equal(got, want) {
		t.Errorf("queued %q, want %q", got, want)
	}
	if got := archived(t, w.s, "a@x"); got != "before mine after" {
		t.Errorf("a@x sees %q", got)
	}
}

// A line and its echo are written in one transaction, or neither: an
// outbox that refuses the echo leaves the line unarchived; then the
// next line and its echo are written.
func TestIRCEchoFails(t *testing.T) {
	w := &lineWriter{s: openTest(t)}
	if _, err := w.s.OpenIRCWindow(context.Background(), "a@x", "srv", "#c"); err != nil {
		t.Fatal(err)
	}
	refuseStanza(t, w.s, echoed("refused", 1)[1])
	stamp := time.Now()
	if _, err := w.s.ArchiveIRCLine(context.Background(), IRCLine{Server: "srv", Channel: "#c", Nick: "ua", Body: "refused", Stamp: stamp,
		Since: stamp.Add(-time.Minute), Echo: echoOf("refused")}); err == nil {
		t.Fatal("a line whose echo was refused: archived")
	}
	if got := queued(t, w.s); len(got) != 0 {
		t.Errorf("queued %q after a refusal", got)
	}
	if got := archived(t, w.s, "a@x"); got != "" {
		t.Errorf("a line whose echo was refused: a@x sees %q", got)
	}
	a := w.echo(t, "ua", "next")
	if got, want := queued(t, w.s), echoed("next", a.ID); !slices.Equal(got, want) {
		t.Errorf("queued %q, want %q", got, want)
	}
	if got := archived(t, w.s, "a@x"); got != "next" {
		t.Errorf("a@x sees %q", got)
	}
}

// On PostgreSQL, with another instance: a user's line that instance
// archived first (it got it from IRC) is found, its echo left to the
// caller (not queued); one written after the other instance's lines
// (the archive's second write) is queued with it.
func TestIRCEchoAcrossInstances(t *testing.T) {
	if cluster == nil {
		t.Skip("PostgreSQL only: an SQLite database has one process")
	}
	ctx := context.Background()
	st := instances(t, 2)
	a, b := &lineWriter{s: st[0]}, &lineWriter{s: st[1]}
	for user, s := range map[string]*Store{"ua@x": a.s, "ub@x": b.s} {
		if _, err := s.OpenIRCWindow(ctx, user, "srv", "#c"); err != nil {
			t.Fatal(err)
		}
	}
	// b gets ua's line from IRC before a archives it.
	theirs := b.put(t, "ua", "found")
	found := a.echo(t, "ua", "found")
	if found.ID != theirs.ID || found.Queued {
		t.Errorf("a line the other instance archived: %+v, want id %d, not queued", found, theirs.ID)
	}
	// b archives bob's line, which a has not got yet: a's next line is
	// written after it, with its echo.
	b.put(t, "bob", "between")
	written := a.echo(t, "ua", "written")
	if !written.Queued || written.ID <= theirs.ID {
		t.Errorf("a line written after the other instance's: %+v", written)
	}
	if got, want := queued(t, a.s), echoed("written", written.ID); !slices.Equal(got, want) {
		t.Errorf("a queued %q, want %q", got, want)
	}
	if got := queued(t, b.s); len(got) != 0 {
		t.Errorf("b queued %q", got)
	}
	for _, user := range []string{"ua@x", "ub@x"} {
		if got, want := archived(t, a.s, user), "found between written"; got != want {
			t.Errorf("%s sees %q, want %q", user, got, want)
		}
	}
}

// On PostgreSQL a line and its echo cost one round trip, as a line alone.
func TestIRCEchoRoundTrips(t *testing.T) {
	s, trips := openCounting(t)
	for range 2 { // the connection prepares the statements
		(&lineWriter{s: s}).echo(t, "bob", "warm")
	}
	w := &lineWriter{s: s}
	w.echo(t, "bob", "first")
	trips.Store(0)
	for i := range 3 {
		w.echo(t, "bob", "ok")
		if n := trips.Swap(0); n != 1 {
			t.Errorf("line %d and its echo: %d round trips, want 1", i, n)
		}
	}
}
