package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

// Texts for unclaimed numbers are kept with their media, by number, in
// the order they came.
func TestUnclaimedTexts(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	t0 := time.Unix(1_800_000_000, 0)
	kept := []UnclaimedText{
		{To: "+15550001", From: "+15559999", Body: "anyone?", SID: "SM1", Media: []string{"https://m.test/u.jpg"}, Received: t0},
		{To: "+15550001", From: "+15559998", Body: "hello", SID: "SM2", Media: []string{}, Received: t0.Add(time.Second)},
	}
	for _, u := range append(kept, UnclaimedText{To: "+15550002", From: "+1", Body: "other", SID: "SM3", Received: t0}) {
		if err := s.KeepUnclaimedText(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.UnclaimedTexts(ctx, "+15550001")
	if err != nil || !reflect.DeepEqual(got, kept) {
		t.Fatalf("kept texts: %+v, %v", got, err)
	}
	var media string
	if err := s.db.QueryRow(`SELECT media FROM sms_unclaimed WHERE sid = 'SM3'`).Scan(&media); err != nil || media != "[]" {
		t.Fatalf("media of a text without any: %q, %v", media, err)
	}
	if got, err := s.UnclaimedTexts(ctx, "+15550003"); err != nil || len(got) != 0 {
		t.Fatalf("texts of a number without any: %+v, %v", got, err)
	}

	// Rows the store cannot read back.
	if _, err := s.db.Exec(`UPDATE sms_unclaimed SET media = 'not json' WHERE sid = 'SM3'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnclaimedTexts(ctx, "+15550002"); err == nil {
		t.Error("a text with unreadable media was read")
	}
	sqliteOnly(t) // a text in an integer column
	if _, err := s.db.Exec(`UPDATE sms_unclaimed SET received = 'yesterday' WHERE sid = 'SM2'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnclaimedTexts(ctx, "+15550001"); err == nil {
		t.Error("a text with an unreadable time was read")
	}
	if _, err := s.db.Exec(`DROP TABLE sms_unclaimed`); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepUnclaimedText(ctx, kept[0]); err == nil {
		t.Error("keeping a text in a broken store did not fail")
	}
	if _, err := s.UnclaimedTexts(ctx, "+15550001"); err == nil {
		t.Error("reading texts from a broken store did not fail")
	}
}

// An early report is taken once; a second report for the same SID
// replaces the first; reports older than EarlyStatusTTL are forgotten when
// another is kept.
func TestEarlyStatus(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	t0 := time.Unix(1_800_000_000, 0)
	if _, err := s.TakeEarlyStatus(ctx, "SM1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("nothing kept: %v", err)
	}
	keep := func(r EarlyStatus, at time.Time) {
		t.Helper()
		if err := s.KeepEarlyStatus(ctx, r, at); err != nil {
			t.Fatal(err)
		}
	}
	keep(EarlyStatus{SID: "SM1", Status: "delivered"}, t0)
	keep(EarlyStatus{SID: "SM1", Status: "failed", ErrorCode: "30005", ErrorMessage: "unknown"}, t0.Add(time.Minute))
	keep(EarlyStatus{SID: "SM2", Status: "failed"}, t0)
	r, err := s.TakeEarlyStatus(ctx, "SM1")
	if err != nil || *r != (EarlyStatus{SID: "SM1", Status: "failed", ErrorCode: "30005", ErrorMessage: "unknown"}) {
		t.Fatalf("taken: %+v, %v", r, err)
	}
	if _, err := s.TakeEarlyStatus(ctx, "SM1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("taken twice: %v", err)
	}
	keep(EarlyStatus{SID: "SM3", Status: "delivered"}, t0.Add(EarlyStatusTTL))
	if r, err := s.TakeEarlyStatus(ctx, "SM2"); err != nil || r.Status != "failed" {
		t.Fatalf("a report as old as the TTL was forgotten: %+v, %v", r, err)
	}
	keep(EarlyStatus{SID: "SM2", Status: "failed"}, t0)
	keep(EarlyStatus{SID: "SM4", Status: "delivered"}, t0.Add(EarlyStatusTTL+time.Second))
	if _, err := s.TakeEarlyStatus(ctx, "SM2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a report older than the TTL was kept: %v", err)
	}

	// A report the store refuses leaves the old ones: forgetting them and
	// keeping it are one transaction.
	keep(EarlyStatus{SID: "SM5", Status: "failed"}, t0)
	sqliteOnly(t) // a trigger in SQLite's dialect
	if _, err := s.db.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON sms_early_status BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepEarlyStatus(ctx, EarlyStatus{SID: "SM6", Status: "failed"}, t0.Add(30*EarlyStatusTTL)); err == nil {
		t.Fatal("a refused report was kept")
	}
	if r, err := s.TakeEarlyStatus(ctx, "SM5"); err != nil || r.Status != "failed" {
		t.Fatalf("an old report was forgotten by a refused one: %+v, %v", r, err)
	}
	if _, err := s.db.Exec(`DROP TABLE sms_early_status`); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepEarlyStatus(ctx, EarlyStatus{SID: "SM7"}, t0); err == nil {
		t.Error("keeping a report in a broken store did not fail")
	}
	if _, err := s.TakeEarlyStatus(ctx, "SM3"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("taking a report from a broken store: %v", err)
	}
	s.Close()
	if err := s.KeepEarlyStatus(ctx, EarlyStatus{SID: "SM7"}, t0); err == nil {
		t.Error("keeping a report in a closed store did not fail")
	}
}
