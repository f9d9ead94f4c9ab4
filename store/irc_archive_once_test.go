package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineWriter archives a channel's lines as an instance's IRC bridge does:
// in order, each after the last one it archived or found.
type lineWriter struct {
	s      *Store
	after  int64
	joined int64 // the channel's newest line at its join (IRCLine.Joined)
}

func (w *lineWriter) put(t *testing.T, nick, body string, lines ...string) ArchivedLine {
	t.Helper()
	a, err := w.try(context.Background(), nick, body, time.Now(), lines...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (w *lineWriter) try(ctx context.Context, nick, body string, stamp time.Time, lines ...string) (ArchivedLine, error) {
	a, err := w.s.ArchiveIRCLine(ctx, IRCLine{Server: "srv", Channel: "#c", Nick: nick, Body: body, Stamp: stamp,
		Lines: lines, After: w.after, Since: stamp.Add(-time.Minute), Joined: w.joined})
	if err == nil {
		w.after = max(w.after, a.ID)
	}
	return a, err
}

// Lines archived one after the other are as many lines, on both
// engines: a line said twice (the same nick, the same text, within the
// same second) is two lines.
func TestIRCLineRepeated(t *testing.T) {
	w := &lineWriter{s: openTest(t)}
	if _, err := w.s.OpenIRCWindow(context.Background(), "a@x", "srv", "#c"); err != nil {
		t.Fatal(err)
	}
	ids := map[int64]bool{}
	for _, body := range []string{"ok", "ok", "fine", "ok"} {
		ids[w.put(t, "bob", body).ID] = true
	}
	if len(ids) != 4 {
		t.Errorf("4 lines archived under %d ids", len(ids))
	}
	if got := archived(t, w.s, "a@x"); got != "ok ok fine ok" {
		t.Errorf("a@x sees %q", got)
	}
}

// Two instances on one PostgreSQL database, each with a user in the
// channel, archive each line once: the second finds the first's, the
// same line said twice is two lines, a message sent as two IRC lines is
// found by its first, a line an instance missed is skipped, and each
// user sees each line of their window once.
func TestIRCLineOnceAcrossInstances(t *testing.T) {
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
	same := func(what string, x, y ArchivedLine) {
		t.Helper()
		if x.ID != y.ID {
			t.Errorf("%s: archived as %d and %d", what, x.ID, y.ID)
		}
	}
	same("one", a.put(t, "bob", "one"), b.put(t, "bob", "one"))
	ok1, ok2 := a.put(t, "bob", "ok"), a.put(t, "bob", "ok")
	if ok1.ID == ok2.ID {
		t.Fatal("ok said twice: one line")
	}
	same("first ok", ok1, b.put(t, "bob", "ok"))
	same("second ok", ok2, b.put(t, "bob", "ok"))
	two := b.put(t, "bob", "two") // b first this time
	same("two", two, a.put(t, "bob", "two"))
	// A's user's own message, sent as two IRC lines: b gets them from
	// IRC, and finds the message by its first, with its lines.
	own := a.put(t, "ua", "six\nseven", "six", "seven")
	six := b.put(t, "ua", "six")
	same("six", own, six)
	if strings.Join(six.Lines, "|") != "six|seven" {
		t.Errorf("six: lines %q, want six, seven", six.Lines)
	}
	// b's connection was away for "x": it finds "y" beyond it.
	a.put(t, "bob", "x")
	same("y", a.put(t, "bob", "y"), b.put(t, "bob", "y"))
	// A copy older than Since is another line.
	z, err := a.try(ctx, "bob", "z", time.Now().Add(-2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if z2 := b.put(t, "bob", "z"); z2.ID == z.ID {
		t.Error("z: a line from two minutes before taken for this one")
	}
	for _, user := range []string{"ua@x", "ub@x"} {
		if got, want := archived(t, a.s, user), "one ok ok two six\nseven x y z z"; got != want {
			t.Errorf("%s sees %q, want %q", user, got, want)
		}
	}
}

// After a restart, an instance knows no line of the channel: a line it
// gets is not taken for the same text said before its users joined (a
// line it could not have got), alone or beside another instance.
func TestIRCLineAfterRestart(t *testing.T) {
	if cluster == nil {
		t.Skip("PostgreSQL only: SQLite writes every line")
	}
	ctx := context.Background()
	st := instances(t, 2)
	a, b := &lineWriter{s: st[0]}, &lineWriter{s: st[1]}
	old := a.put(t, "bob", "ok")
	restart := func(w *lineWriter, user string) *lineWriter {
		t.Helper()
		joined, err := w.s.OpenIRCWindow(ctx, user, "srv", "#c")
		if err != nil {
			t.Fatal(err)
		}
		return &lineWriter{s: w.s, joined: joined}
	}
	a = restart(a, "ua@x")
	if again := a.put(t, "bob", "ok"); again.ID == old.ID {
		t.Error("ok said again after a restart: taken for the one before")
	}
	b = restart(b, "ub@x")
	x := a.put(t, "bob", "ok")
	if y := b.put(t, "bob", "ok"); y.ID != x.ID {
		t.Errorf("ok after b's restart: archived as %d and %d", x.ID, y.ID)
	}
	if got := archived(t, a.s, "ua@x"); got != "ok ok" {
		t.Errorf("ua@x sees %q, want %q", got, "ok ok")
	}
}

// A user taken over by another instance (their window still open: the
// instance that held them may still be live, see CloseIRCWindows) joins
// anew there: a line that instance gets is not taken for the same text
// archived before its connection joined, though the window opened
// before it. OpenIRCWindow returns the channel's newest line, not the
// window's start nor another channel's line.
func TestIRCLineAfterTakeover(t *testing.T) {
	if cluster == nil {
		t.Skip("PostgreSQL only: SQLite writes every line")
	}
	ctx := context.Background()
	st := instances(t, 2)
	joined, err := st[0].OpenIRCWindow(ctx, "u@x", "srv", "#c")
	if err != nil {
		t.Fatal(err)
	}
	a := &lineWriter{s: st[0], joined: joined}
	ping := a.put(t, "bot", "ping")
	if _, err := st[0].ArchiveIRCMessage(ctx, IRCMessage{Server: "srv", Channel: "#d", Nick: "bot", Body: "elsewhere", Stamp: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// B takes u over: its connection joins #c, u's window still open.
	joined, err = st[1].OpenIRCWindow(ctx, "u@x", "srv", "#c")
	if err != nil {
		t.Fatal(err)
	}
	if joined != ping.ID {
		t.Errorf("the window opened again on #c returns %d, want %d (ping, #c's newest)", joined, ping.ID)
	}
	b := &lineWriter{s: st[1], joined: joined}
	if again := b.put(t, "bot", "ping"); again.ID == ping.ID {
		t.Error("ping said again after the takeover: taken for the one before")
	}
	if got, want := archived(t, st[1], "u@x"), "ping ping"; got != want {
		t.Errorf("u@x sees %q, want %q", got, want)
	}
}

// Two instances writing the same lines at once, each in order, write
// each line once: the second to write a line after the same one finds
// the first's.
func TestIRCLineOnceConcurrent(t *testing.T) {
	if cluster == nil {
		t.Skip("PostgreSQL only: an SQLite database has one process")
	}
	st := instances(t, 2)
	const n = 60
	ids := make([][]int64, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i, s := range st {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &lineWriter{s: s}
			for k := range n {
				a, err := w.try(context.Background(), "bob", fmt.Sprintf("l%d", k/3), time.Now()) // each text three times
				if err != nil {
					errs <- err
					return
				}
				ids[i] = append(ids[i], a.ID)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for k := range n {
		if ids[0][k] != ids[1][k] {
			t.Fatalf("line %d: archived as %d and %d", k, ids[0][k], ids[1][k])
		}
	}
	var rows int
	if err := st[0].db.QueryRow(`SELECT count(*) FROM irc_history`).Scan(&rows); err != nil || rows != n {
		t.Fatalf("%d rows (err %v), want %d", rows, err, n)
	}
}

// When another instance writes the line between this one's look and its
// write, this one looks again and finds it; a look or a write that fails
// fails the archive.
func TestIRCLineRace(t *testing.T) {
	if cluster == nil {
		t.Skip("PostgreSQL only: an SQLite database has one process")
	}
	st := instances(t, 2)
	a, b := &lineWriter{s: st[0]}, &lineWriter{s: st[1]}
	a.put(t, "bob", "one")
	t.Cleanup(func() { archiveRace = nil })
	var raced ArchivedLine
	archiveRace = func(step string) {
		if step == "write" {
			archiveRace = nil
			raced = a.put(t, "bob", "two")
		}
	}
	// b has not seen "one": its look finds it, not "two", which a
	// writes before b's write.
	if got := b.put(t, "bob", "two"); got.ID != raced.ID || raced.ID == 0 {
		t.Errorf("two: b archived %d, a %d", got.ID, raced.ID)
	}
	var rows int
	if err := a.s.db.QueryRow(`SELECT count(*) FROM irc_history`).Scan(&rows); err != nil || rows != 2 {
		t.Fatalf("%d rows (err %v), want 2", rows, err)
	}

	// The look, then the write, fail: ctx is cancelled before them.
	for _, step := range []string{"look", "write"} {
		a.put(t, "bob", "three "+step)
		ctx, cancel := context.WithCancel(context.Background())
		archiveRace = func(s string) {
			if s == step {
				cancel()
			}
		}
		if _, err := b.try(ctx, "bob", "four", time.Now()); !errors.Is(err, context.Canceled) {
			t.Errorf("a %s after a cancel: %v", step, err)
		}
	}
}

// With one instance, a line is written in one round trip (in a commit
// group), and the instance's first line in a channel where it knows no
// line yet looks once at the channel's lines.
func TestIRCLineRoundTrips(t *testing.T) {
	s, trips := openCounting(t)
	// The connection prepares the statements once: first, in another
	// channel, a write and a write after a look.
	for range 2 {
		if _, err := s.ArchiveIRCLine(context.Background(), IRCLine{Server: "srv", Channel: "#warm", Nick: "bob", Body: "warm", Stamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	w := &lineWriter{s: s}
	trips.Store(0)
	w.put(t, "bob", "first") // an empty channel: one statement
	if n := trips.Swap(0); n != 1 {
		t.Errorf("the first line of an empty channel: %d round trips, want 1", n)
	}
	for i := range 5 {
		w.put(t, "bob", "ok")
		if n := trips.Swap(0); n != 1 {
			t.Errorf("line %d: %d round trips, want 1", i, n)
		}
	}
	fresh := &lineWriter{s: s} // a restart: the last line is not known
	fresh.put(t, "bob", "after a restart")
	if n := trips.Swap(0); n != 3 {
		t.Errorf("the first line after a restart: %d round trips, want 3 (the write, the look, the write)", n)
	}
	fresh.put(t, "bob", "next")
	if n := trips.Swap(0); n != 1 {
		t.Errorf("the next line: %d round trips, want 1", n)
	}
}
