package store

import (
	"context"
	"testing"
	"time"
)

// A policy is in force until its expiry, is replaced by the next one,
// moves its expiry when a connection closes, and goes with a duration of 0.
func TestSTSPolicy(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	t0 := time.Unix(1_800_000_000, 0)
	if p, err := s.STSPolicyAt(ctx, "irc.example.net", t0); p != nil || err != nil {
		t.Fatalf("no policy yet: %+v, %v", p, err)
	}
	if err := s.PutSTSPolicy(ctx, "irc.example.net", 6697, time.Hour, t0); err != nil {
		t.Fatal(err)
	}
	p, err := s.STSPolicyAt(ctx, "irc.example.net", t0.Add(59*time.Minute))
	if err != nil || p == nil || p.Port != 6697 || p.Duration != time.Hour || !p.Expires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("policy: %+v, %v", p, err)
	}
	if p, _ := s.STSPolicyAt(ctx, "irc.example.net", t0.Add(time.Hour)); p != nil {
		t.Fatalf("expired policy in force: %+v", p)
	}
	if p, _ := s.STSPolicyAt(ctx, "other.example.net", t0); p != nil {
		t.Fatalf("policy of another host: %+v", p)
	}
	// Closing a connection at t0+50min: the policy lasts an hour from then.
	if err := s.RescheduleSTSPolicy(ctx, "irc.example.net", t0.Add(50*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.STSPolicyAt(ctx, "irc.example.net", t0.Add(109*time.Minute)); p == nil {
		t.Fatal("the rescheduled policy expired early")
	}
	// A later announcement replaces it; a huge duration is bounded.
	if err := s.PutSTSPolicy(ctx, "irc.example.net", 7000, 1<<62, t0); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.STSPolicyAt(ctx, "irc.example.net", t0.Add(50*365*24*time.Hour)); p == nil || p.Port != 7000 || p.Duration != MaxSTSDuration {
		t.Fatalf("replaced policy: %+v", p)
	}
	if err := s.PutSTSPolicy(ctx, "irc.example.net", 7000, 0, t0); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.STSPolicyAt(ctx, "irc.example.net", t0); p != nil {
		t.Fatalf("duration=0 left the policy: %+v", p)
	}
	// Without the table (a broken store), every call says so.
	if _, err := s.DB().Exec(`DROP TABLE irc_sts`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.STSPolicyAt(ctx, "irc.example.net", t0); err == nil {
		t.Error("reading a policy from a broken store did not fail")
	}
	if err := s.PutSTSPolicy(ctx, "irc.example.net", 6697, time.Hour, t0); err == nil {
		t.Error("storing a policy in a broken store did not fail")
	}
	if err := s.PutSTSPolicy(ctx, "irc.example.net", 6697, 0, t0); err == nil {
		t.Error("removing a policy from a broken store did not fail")
	}
	if err := s.RescheduleSTSPolicy(ctx, "irc.example.net", t0); err == nil {
		t.Error("rescheduling a policy in a broken store did not fail")
	}
}
