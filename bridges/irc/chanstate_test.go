package irc

import "testing"

// A channel's state through a first join, a lost connection and a rejoin,
// and a connection lost before the room was shown.
func TestChanStateTransitions(t *testing.T) {
	ch := &channel{members: newRoster(caseRFC1459, member{nick: "nick"}, member{nick: "bob"})}
	step := func(what string, want chanState) {
		t.Helper()
		if ch.state != want {
			t.Fatalf("after %s: state %d, want %d", what, ch.state, want)
		}
	}
	ch.sentJoin()
	step("JOIN sent", chanJoinSent)
	if listed, _ := ch.namesEnded(); listed {
		t.Fatal("end of NAMES taken before our JOIN came back")
	}
	ch.selfJoined()
	step("our JOIN", chanListing)
	if listed, rejoined := ch.namesEnded(); !listed || rejoined {
		t.Fatalf("first end of NAMES: listed %v, rejoined %v", listed, rejoined)
	}
	step("end of NAMES", chanIn)
	if !ch.live() || ch.before != nil {
		t.Fatalf("joined room: live %v, before %v", ch.live(), ch.before)
	}
	ch.connectionLost()
	step("lost connection", chanLost)
	if ch.before == nil || !ch.before.has("bob") || ch.state.joinSent() || !ch.state.shown() {
		t.Fatalf("lost room: before %v, join sent %v, shown %v", ch.before, ch.state.joinSent(), ch.state.shown())
	}
	ch.sentJoin()
	step("JOIN sent again", chanRejoinSent)
	ch.connectionLost()
	step("lost again", chanLost)
	ch.sentJoin()
	ch.selfJoined()
	step("our JOIN again", chanRelisting)
	if ch.live() || ch.before == nil {
		t.Fatalf("relisting: live %v, before %v", ch.live(), ch.before)
	}
	if listed, rejoined := ch.namesEnded(); !listed || !rejoined {
		t.Fatalf("end of NAMES after a rejoin: listed %v, rejoined %v", listed, rejoined)
	}
	step("end of NAMES again", chanIn)

	fresh := &channel{}
	fresh.sentJoin()
	fresh.selfJoined()
	fresh.connectionLost()
	if fresh.state != chanNew || fresh.before != nil {
		t.Fatalf("a room never shown, lost: state %d, before %v", fresh.state, fresh.before)
	}
}
