package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"
)

// Of many concurrent deliveries with one key, one commits its link and
// stanzas; the others commit nothing and say so, without an error.
func TestDeliverOnceConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	const n = 20
	d := Delivery{Key: "SMonce",
		Links:   []MessageID{{Domain: "d", JID: "u@x", XMPPID: "SMonce", ForeignID: "SMonce", Peer: "+15551234567"}},
		Stanzas: []string{"<message id='SMonce'/>"}}
	var wg sync.WaitGroup
	delivered := make([]bool, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			delivered[i], errs[i] = s.Deliver(ctx, "d", d)
		})
	}
	close(start)
	wg.Wait()
	got := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("delivery %d: %v", i, errs[i])
		}
		if delivered[i] {
			got++
		}
	}
	if got != 1 {
		t.Fatalf("%d of %d concurrent deliveries with one key committed, want 1", got, n)
	}
	if c, _ := s.CountStanzas(ctx, "d"); c != 1 {
		t.Fatalf("outbox holds %d stanzas, want 1", c)
	}
	if m, err := s.MessageByForeignID(ctx, "d", "SMonce"); err != nil || m.JID != "u@x" || m.Peer != "+15551234567" {
		t.Fatalf("link: %+v %v", m, err)
	}

	// The key is per domain, and another key is another event.
	for _, c := range []struct{ domain, key string }{{"other", "SMonce"}, {"d", "SMonce done"}} {
		if ok, err := s.Deliver(ctx, c.domain, Delivery{Key: c.key, Stanzas: []string{"<x/>"}}); !ok || err != nil {
			t.Errorf("delivery %q in %s: %v %v, want committed", c.key, c.domain, ok, err)
		}
	}
	// No key: no check.
	for range 2 {
		if ok, err := s.Deliver(ctx, "d", Delivery{Stanzas: []string{"<y/>"}}); !ok || err != nil {
			t.Fatalf("delivery without a key: %v %v", ok, err)
		}
	}
	if c, _ := s.CountStanzas(ctx, "d"); c != 4 {
		t.Fatalf("outbox holds %d stanzas, want 4", c)
	}
}

// A delivery that fails leaves neither its key, nor its links, nor any of
// its stanzas: the foreign side's retry is delivered.
func TestDeliverAllOrNone(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	refuseStanza(t, s, "<bad/>")
	d := Delivery{Key: "SMfail", Links: []MessageID{{Domain: "d", JID: "u@x", XMPPID: "SMfail", ForeignID: "SMfail"}},
		Stanzas: []string{"<good/>", "<bad/>"}}
	if ok, err := s.Deliver(ctx, "d", d); err == nil || ok {
		t.Fatalf("a failed delivery reported %v, %v", ok, err)
	}
	if c, _ := s.CountStanzas(ctx, "d"); c != 0 {
		t.Fatalf("outbox holds %d stanzas after a failed delivery", c)
	}
	if _, err := s.MessageByXMPPID(ctx, "d", "u@x", "SMfail"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the link of a failed delivery: %v", err)
	}
	d.Stanzas = []string{"<good/>"}
	if ok, err := s.Deliver(ctx, "d", d); !ok || err != nil {
		t.Fatalf("the retry of a failed delivery: %v %v, want committed", ok, err)
	}
	s.Close()
	if _, err := s.Deliver(ctx, "d", Delivery{Key: "SMclosed"}); err == nil {
		t.Fatal("a delivery on a closed store reported no error")
	}
}

// The keys are pruned with the links: a key older than the limit is gone.
func TestPruneDeliveries(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := s.DB().ExecContext(ctx, `INSERT INTO deliveries (domain, key, created) VALUES ('d', 'SMold', ?)`,
		time.Now().Add(-48*time.Hour).Unix()); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Deliver(ctx, "d", Delivery{Key: "SMnew"}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if n, err := s.PruneMessageIDs(ctx, time.Now().Add(-24*time.Hour)); n != 1 || err != nil {
		t.Fatalf("pruned %d (%v), want 1", n, err)
	}
	if ok, _ := s.Deliver(ctx, "d", Delivery{Key: "SMold"}); !ok {
		t.Error("a pruned key still refuses a delivery")
	}
	if ok, _ := s.Deliver(ctx, "d", Delivery{Key: "SMnew"}); ok {
		t.Error("a recent key was pruned")
	}
}

// Version 8 knows the inbound texts taken before it by their links: a
// retry of one after the upgrade is not delivered again.
func TestUpgradeToDeliveries(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	old, err := open(path, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []MessageID{
		{Domain: "sms.x", JID: "u@x", XMPPID: "SMin", ForeignID: "SMin", Peer: "+15551234567", Extra: `{"in":true}`},
		// The same text for a later owner of the number.
		{Domain: "sms.x", JID: "v@x", XMPPID: "SMin", ForeignID: "SMin", Peer: "+15551234567", Extra: `{"in":true}`},
		{Domain: "sms.x", JID: "u@x", XMPPID: "m1", ForeignID: "SMout", Peer: "+15551234567", Extra: `{"user":"u@x/r"}`},
	} {
		if err := old.PutMessageID(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, err := s.Deliver(ctx, "sms.x", Delivery{Key: "SMin", Stanzas: []string{"<again/>"}}); ok || err != nil {
		t.Errorf("a text taken before the upgrade: %v %v, want not delivered again", ok, err)
	}
	if ok, err := s.Deliver(ctx, "sms.x", Delivery{Key: "SMout", Stanzas: []string{"<x/>"}}); !ok || err != nil {
		t.Errorf("an outbound text's sid: %v %v, want no key recorded", ok, err)
	}
}

// Deliveries queued while another commits are committed together; one that
// fails is rolled back alone and reports its error; the others of its
// group are committed (on PostgreSQL too, where a group is one pipeline
// that fails as a whole).
func TestDeliverGroupFailsAlone(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	refuseStanza(t, s, "<bad/>")
	// Another connection holds the outbox: the first delivery waits for
	// it, and the others queue behind that one.
	release := holdOutbox(t, s, path)
	const n = 20
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	wg.Go(func() { _, errs[n] = s.Deliver(ctx, "d", Delivery{Stanzas: []string{"<first/>"}}) })
	queued := func(want int) bool {
		s.group.mu.Lock()
		defer s.group.mu.Unlock()
		return s.group.running && len(s.group.queue) == want
	}
	for !queued(0) {
		time.Sleep(time.Millisecond)
	}
	for i := range n {
		st := "<good/>"
		if i == n/2 {
			st = "<bad/>"
		}
		wg.Go(func() { _, errs[i] = s.Deliver(ctx, "d", Delivery{Stanzas: []string{st}}) })
	}
	for !queued(n) {
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	for i, err := range errs {
		if (i == n/2) != (err != nil) {
			t.Errorf("delivery %d: %v", i, err)
		}
	}
	if c, err := s.CountStanzas(ctx, "d"); err != nil || c != n {
		t.Fatalf("outbox holds %d stanzas (%v), want %d", c, err, n)
	}
}

// refuseStanza makes the outbox refuse the stanza bad (a trigger in the
// engine's dialect).
func refuseStanza(t *testing.T, s *Store, bad string) {
	t.Helper()
	stmts := []string{`CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.stanza = '` + bad + `'
		BEGIN SELECT RAISE(ABORT, 'refused'); END`}
	if s.pg {
		stmts = []string{`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF NEW.stanza = '` + bad + `' THEN RAISE EXCEPTION 'refused'; END IF;
				RETURN NEW;
			END $$`,
			`CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse()`}
	}
	for _, q := range stmts {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
}

// holdOutbox makes writes to the outbox of s (at path) wait, from another
// connection, until release is called.
func holdOutbox(t *testing.T, s *Store, path string) (release func()) {
	t.Helper()
	var lock *sql.Tx
	var err error
	if s.pg {
		lock, err = s.db.Begin()
		if err == nil {
			_, err = lock.Exec(`LOCK TABLE outbox IN EXCLUSIVE MODE`)
		}
	} else {
		var other *sql.DB
		other, err = sql.Open("sqlite3", dsn(path))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { other.Close() })
		lock, err = other.Begin() // immediate: SQLite's write lock
	}
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := lock.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
}

// More concurrent deliveries than a group holds are all committed, each
// once.
func TestDeliverMoreThanAGroup(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	const n = 3*maxGroup + 1
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = s.Deliver(ctx, "d", Delivery{Stanzas: []string{"<m/>"}}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if c, err := s.CountStanzas(ctx, "d"); err != nil || c != n {
		t.Fatalf("outbox holds %d stanzas (%v), want %d", c, err, n)
	}
}

// A delivery with a key and two links of one message id keeps the last,
// as when they are written one after the other (on PostgreSQL they are
// written by one statement, which may not update a row twice).
func TestDeliverLinksOfOneID(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	d := Delivery{Key: "SMtwice", Links: []MessageID{
		{Domain: "d", JID: "u@x", XMPPID: "m1", ForeignID: "first"},
		{Domain: "d", JID: "v@x", XMPPID: "m1", ForeignID: "other user"},
		{Domain: "d", JID: "u@x", XMPPID: "m1", ForeignID: "last"},
	}, Stanzas: []string{"<a/>", "<b/>"}}
	if ok, err := s.Deliver(ctx, "d", d); !ok || err != nil {
		t.Fatalf("delivery: %v %v", ok, err)
	}
	for jid, want := range map[string]string{"u@x": "last", "v@x": "other user"} {
		if m, err := s.MessageByXMPPID(ctx, "d", jid, "m1"); err != nil || m.ForeignID != want {
			t.Errorf("link of %s: %+v %v, want foreign id %q", jid, m, err, want)
		}
	}
	items, err := s.PendingStanzas(ctx, "d", 10)
	if err != nil || len(items) != 2 || items[0].Stanza != "<a/>" || items[1].Stanza != "<b/>" {
		t.Fatalf("outbox: %+v %v, want <a/> then <b/>", items, err)
	}
}
