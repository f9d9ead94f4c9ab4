package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(testDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestUpgradeFromFirstSchema(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	old, err := open(path, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := old.Version(); v != 1 {
		t.Fatalf("version = %d, want 1", v)
	}
	// Data written by the first schema must survive the upgrade.
	if err := old.PutRegistration(ctx, "sms.example.org", "a@example.org", map[string]string{"number": "+15550001111"}, []string{"+15550001111"}); err != nil {
		t.Fatal(err)
	}
	// As the first schema's code wrote it (today's writes an owner on
	// PostgreSQL, a column of version 14).
	if _, err := old.db.ExecContext(ctx, `INSERT INTO outbox (domain, stanza, created) VALUES (?, ?, ?)`, "sms.example.org", "<message/>", now()); err != nil {
		t.Fatal(err)
	}
	old.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.Version(); v != LatestVersion() {
		t.Fatalf("version = %d, want %d", v, LatestVersion())
	}
	r, err := s.GetRegistration(ctx, "sms.example.org", "a@example.org")
	if err != nil || r.Fields["number"] != "+15550001111" || len(r.Claims) != 1 {
		t.Fatalf("registration after upgrade: %+v, %v", r, err)
	}
	if n, _ := s.CountStanzas(ctx, "sms.example.org"); n != 1 {
		t.Fatalf("queued stanzas after upgrade = %d", n)
	}
	// On PostgreSQL a stanza queued before instances were recorded is
	// adopted by the first instance that looks; on SQLite it is the
	// process's already.
	if n, err := s.AdoptStanzas(ctx, "sms.example.org"); err != nil {
		t.Fatal(err)
	} else if cluster != nil && n != 1 {
		t.Fatalf("adopted %d stanzas queued before the upgrade, want 1", n)
	}
	if items, _ := s.PendingStanzas(ctx, "sms.example.org", 10); len(items) != 1 {
		t.Fatalf("pending after upgrade: %v", items)
	}
	// Tables of version 2 work.
	if err := s.SetSetting(ctx, "sms.example.org", "a@example.org", "k", "v"); err != nil {
		t.Fatal(err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := testDB(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := s.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.setSchemaVersion(context.Background(), tx, 999); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(path)
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open of a newer database: err = %v, want ErrNewerSchema", err)
	}
}

func TestRegistrationClaims(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	d := "mail.example.org"
	if err := s.PutRegistration(ctx, d, "alice@example.org", map[string]string{"address": "alice"}, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	err := s.PutRegistration(ctx, d, "bob@example.org", map[string]string{"address": "alice"}, []string{"alice"})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("second claim: err = %v, want ErrConflict", err)
	}
	if _, err := s.GetRegistration(ctx, d, "bob@example.org"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed registration was stored: %v", err)
	}
	if owner, _ := s.ClaimOwner(ctx, d, "alice"); owner != "alice@example.org" {
		t.Fatalf("owner = %q", owner)
	}
	// Re-registering with another claim frees the old one.
	if err := s.PutRegistration(ctx, d, "alice@example.org", map[string]string{"address": "al"}, []string{"al"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimOwner(ctx, d, "alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old claim kept: %v", err)
	}
	s.SetSetting(ctx, d, "alice@example.org", "hold", "true")
	s.EnqueueJob(ctx, d, "alice@example.org", "mail", []byte("x"))
	ok, err := s.DeleteRegistration(ctx, d, "alice@example.org")
	if !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if _, err := s.ClaimOwner(ctx, d, "al"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("claim kept after delete: %v", err)
	}
	if n, _ := s.CountJobs(ctx, d); n != 0 {
		t.Fatalf("jobs kept after delete: %d", n)
	}
	if m, _ := s.Settings(ctx, d, "alice@example.org"); len(m) != 0 {
		t.Fatalf("settings kept after delete: %v", m)
	}
	// Now bob may take it.
	if err := s.PutRegistration(ctx, d, "bob@example.org", nil, []string{"al"}); err != nil {
		t.Fatal(err)
	}
	ok, _ = s.DeleteRegistration(ctx, d, "nobody@example.org")
	if ok {
		t.Fatal("deleting a missing registration reported true")
	}
}

func TestOutboxAndJobs(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for _, st := range []string{"<a/>", "<b/>", "<c/>"} {
		if err := s.EnqueueStanzas(ctx, "d", []string{st}); err != nil {
			t.Fatal(err)
		}
	}
	s.EnqueueStanzas(ctx, "other", []string{"<x/>"})
	items, _ := s.PendingStanzas(ctx, "d", 2)
	if len(items) != 2 || items[0].Stanza != "<a/>" || items[1].Stanza != "<b/>" {
		t.Fatalf("pending = %+v", items)
	}
	if err := s.StanzasSentThrough(ctx, "d", items[0].ID); err != nil {
		t.Fatal(err)
	}
	items, _ = s.PendingStanzas(ctx, "d", 10)
	if len(items) != 2 || items[0].Stanza != "<b/>" {
		t.Fatalf("pending after send = %+v", items)
	}

	id, _ := s.EnqueueJob(ctx, "d", "u@x", "sms", []byte(`{}`))
	due, _ := s.DueJobs(ctx, "d", time.Now().Add(time.Second), 10)
	if len(due) != 1 || due[0].ID != id {
		t.Fatalf("due = %+v", due)
	}
	s.RetryJob(ctx, id, time.Now().Add(time.Hour), "451 busy")
	if due, _ := s.DueJobs(ctx, "d", time.Now(), 10); len(due) != 0 {
		t.Fatalf("job due before its retry time: %+v", due)
	}
	j, _ := s.GetJob(ctx, id)
	if j.Attempts != 1 || j.LastError != "451 busy" {
		t.Fatalf("job = %+v", j)
	}
	next, ok, _ := s.NextJobTime(ctx, "d")
	if !ok || next.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("next = %v %v", next, ok)
	}
	// Delaying moves the next try without counting an attempt.
	at := time.Now().Add(2 * time.Hour).Truncate(time.Millisecond)
	if err := s.DelayJob(ctx, id, at); err != nil {
		t.Fatal(err)
	}
	if j, _ := s.GetJob(ctx, id); j.Attempts != 1 || !j.NextTry.Equal(at) || j.LastError != "451 busy" {
		t.Fatalf("delayed job = %+v", j)
	}
	// A user's jobs, due or not, oldest first; nobody else's.
	id2, _ := s.EnqueueJob(ctx, "d", "u@x", "sms", []byte(`{"n":2}`))
	s.EnqueueJob(ctx, "d", "v@x", "sms", []byte(`{}`))
	s.EnqueueJob(ctx, "e", "u@x", "sms", []byte(`{}`))
	if js, err := s.UserJobs(ctx, "d", "u@x"); err != nil || len(js) != 2 || js[0].ID != id || js[1].ID != id2 ||
		string(js[1].Payload) != `{"n":2}` || js[1].JID != "u@x" || js[1].Domain != "d" {
		t.Fatalf("user jobs = %+v %v", js, err)
	}
	s.DeleteJob(ctx, id)
	if _, err := s.GetJob(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted job: %v", err)
	}
	if js, _ := s.UserJobs(ctx, "d", "nobody@x"); len(js) != 0 {
		t.Fatalf("jobs of nobody = %+v", js)
	}

	// Several jobs at once: in order, all due now; or none of them.
	if err := s.EnqueueJobs(ctx, "d", "w@x", "sms", [][]byte{[]byte("1"), []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if js, err := s.UserJobs(ctx, "d", "w@x"); err != nil || len(js) != 2 || string(js[0].Payload) != "1" || string(js[1].Payload) != "2" ||
		js[0].NextTry.After(time.Now()) || js[1].Kind != "sms" {
		t.Fatalf("jobs queued together = %+v %v", js, err)
	}
	sqliteOnly(t) // a trigger in SQLite's dialect
	if _, err := s.DB().Exec(`CREATE TRIGGER sabotage BEFORE INSERT ON jobs WHEN CAST(NEW.payload AS TEXT) = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueJobs(ctx, "d", "z@x", "sms", [][]byte{[]byte("ok"), []byte("bad")}); err == nil {
		t.Fatal("queued a job the database refused")
	}
	if js, _ := s.UserJobs(ctx, "d", "z@x"); len(js) != 0 {
		t.Fatalf("part of a refused batch queued: %+v", js)
	}
}

func TestIdentityAndMessageIDs(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	s.PutIdentity(ctx, "d", "bob%example.com", "Bob@Example.com")
	if f, _ := s.Identity(ctx, "d", "bob%example.com"); f != "Bob@Example.com" {
		t.Fatalf("identity = %q", f)
	}
	if _, err := s.Identity(ctx, "d", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	s.PutMessageID(ctx, MessageID{Domain: "d", JID: "u@x", XMPPID: "m1", ForeignID: "<a@b>", Thread: "t1"})
	s.PutMessageID(ctx, MessageID{Domain: "d", JID: "u@x", XMPPID: "m2", ForeignID: "<c@b>", Thread: "t1"})
	m, err := s.MessageByForeignID(ctx, "d", "<a@b>")
	if err != nil || m.XMPPID != "m1" {
		t.Fatalf("by foreign: %+v %v", m, err)
	}
	if m, _ := s.MessageByXMPPID(ctx, "d", "u@x", "m2"); m == nil || m.ForeignID != "<c@b>" {
		t.Fatalf("by xmpp id: %+v", m)
	}
	if m, _ := s.MessageByThread(ctx, "d", "u@x", "t1"); m == nil || m.XMPPID != "m2" {
		t.Fatalf("latest in thread: %+v", m)
	}
}

// PruneMessageIDs deletes the links older than its limit, in batches, and
// keeps the newer ones.
func TestPruneMessageIDs(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	const old = 2*pruneBatch + 5
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range old {
		if _, err := tx.ExecContext(ctx, `INSERT INTO message_ids (domain, jid, xmpp_id, foreign_id, created) VALUES ('d', 'u@x', ?, ?, ?)`,
			fmt.Sprintf("old%d", i), fmt.Sprintf("<old%d@b>", i), time.Now().Add(-48*time.Hour).Unix()); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	s.PutMessageID(ctx, MessageID{Domain: "d", JID: "u@x", XMPPID: "new", ForeignID: "<new@b>"})

	n, err := s.PruneMessageIDs(ctx, time.Now().Add(-24*time.Hour))
	if err != nil || n != old {
		t.Fatalf("pruned %d (%v), want %d", n, err, old)
	}
	if m, err := s.MessageByXMPPID(ctx, "d", "u@x", "new"); err != nil || m.ForeignID != "<new@b>" {
		t.Fatalf("the new link: %+v %v", m, err)
	}
	if _, err := s.MessageByForeignID(ctx, "d", "<old0@b>"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an old link is still there: %v", err)
	}
	if n, err := s.PruneMessageIDs(ctx, time.Now().Add(-24*time.Hour)); n != 0 || err != nil {
		t.Fatalf("second prune: %d %v", n, err)
	}
	s.Close()
	if _, err := s.PruneMessageIDs(ctx, time.Now()); err == nil || !strings.Contains(err.Error(), "failed to prune message ids") {
		t.Fatalf("prune on a closed store: %v", err)
	}
}
