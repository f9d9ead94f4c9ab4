package irc

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

func rosterNicks(r *roster) []string {
	var out []string
	for m := range r.all() {
		out = append(out, m.nick+"/"+m.modes)
	}
	return out
}

func TestRosterOrderAndLookups(t *testing.T) {
	r := newRoster(caseRFC1459, member{nick: "zoe"}, member{nick: "Bob", modes: "o"}, member{nick: "alice"}, member{nick: "[x]"})
	if got, want := rosterNicks(&r), []string{"alice/", "Bob/o", "zoe/", "[x]/"}; !slices.Equal(got, want) {
		t.Fatalf("order: got %q, want %q", got, want)
	}
	// rfc1459: {x} is [x], BOB is Bob.
	if m, ok := r.get("{X}"); !ok || m.nick != "[x]" {
		t.Fatalf("get {X}: %+v %v", m, ok)
	}
	if !r.has("BOB") || r.has("bo") || r.has("bobby") {
		t.Fatal("has: BOB must be found, bo and bobby not")
	}
	// put replaces the member that folds alike, keeping one entry.
	r.put(member{nick: "BOB", modes: "v"})
	if got, want := rosterNicks(&r), []string{"alice/", "BOB/v", "zoe/", "[x]/"}; !slices.Equal(got, want) {
		t.Fatalf("after put: got %q, want %q", got, want)
	}
	m, ok := r.remove("bob")
	if !ok || m.nick != "BOB" || m.modes != "v" {
		t.Fatalf("remove: %+v %v", m, ok)
	}
	if _, ok := r.remove("bob"); ok {
		t.Fatal("removed twice")
	}
	if len(r.ms) != 3 {
		t.Fatalf("len %d, want 3", len(r.ms))
	}
}

func TestRosterCloneIsIndependent(t *testing.T) {
	r := newRoster(caseASCII, member{nick: "a"}, member{nick: "b"})
	c := r.clone()
	r.put(member{nick: "a", modes: "o"})
	r.remove("b")
	r.put(member{nick: "c"})
	if got, want := rosterNicks(&c), []string{"a/", "b/"}; !slices.Equal(got, want) {
		t.Fatalf("clone changed with the original: %q", got)
	}
}

func TestRosterSetCasemap(t *testing.T) {
	// Under ascii, [a] and {a} are two members, ordered by their bytes
	// ('[' < 'b' < '{'); under rfc1459 they are one, the later kept.
	r := newRoster(caseASCII, member{nick: "{a}", modes: "v"}, member{nick: "b"}, member{nick: "[a]", modes: "o"})
	if got, want := rosterNicks(&r), []string{"[a]/o", "b/", "{a}/v"}; !slices.Equal(got, want) {
		t.Fatalf("ascii: got %q, want %q", got, want)
	}
	r.setCasemap(caseRFC1459)
	if got, want := rosterNicks(&r), []string{"b/", "{a}/v"}; !slices.Equal(got, want) {
		t.Fatalf("rfc1459: got %q, want %q", got, want)
	}
	if m, ok := r.get("[A]"); !ok || m.nick != "{a}" {
		t.Fatalf("get [A] under rfc1459: %+v %v", m, ok)
	}
}

// TestRosterShrinks: a roster emptied by a mass departure gives back its
// spare room.
func TestRosterShrinks(t *testing.T) {
	r := roster{cm: caseRFC1459}
	for i := range 1000 {
		r.put(member{nick: "n" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))})
	}
	full := cap(r.ms)
	for _, m := range slices.Collect(r.all())[10:] {
		if _, ok := r.remove(m.nick); !ok {
			t.Fatalf("cannot remove %q", m.nick)
		}
	}
	if len(r.ms) != 10 || cap(r.ms) > 64 {
		t.Fatalf("after removals: len %d cap %d (was %d)", len(r.ms), cap(r.ms), full)
	}
}

// TestCompareFold: comparing folded on the fly orders like comparing the
// folded strings, for every case mapping.
func TestCompareFold(t *testing.T) {
	const alphabet = "aAzZ[]{}\\|~^09-_`"
	rnd := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		b := make([]byte, rnd.IntN(5))
		for i := range b {
			b[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		return string(b)
	}
	for _, cm := range []string{caseASCII, caseRFC1459, caseRFC1459Strict} {
		for range 20000 {
			a, b := word(), word()
			if got, want := compareFold(cm, a, b), strings.Compare(foldWith(cm, a), foldWith(cm, b)); got != want {
				t.Fatalf("%s: compareFold(%q, %q) = %d, want %d", cm, a, b, got, want)
			}
		}
	}
}

// TestRosterInternsNicks: a member's nick is not a slice of the IRC line
// it came from (which it would keep alive), and rosters share one copy.
func TestRosterInternsNicks(t *testing.T) {
	line1 := ":alice!a@host JOIN #chan"
	line2 := ":alice!b@elsewhere JOIN #chan"
	r1, r2 := roster{cm: caseRFC1459}, roster{cm: caseRFC1459}
	r1.put(member{nick: line1[1:6]})
	r2.put(member{nick: line2[1:6]})
	m1, _ := r1.get("alice")
	m2, _ := r2.get("ALICE")
	if m1.nick != "alice" || m2.nick != "alice" {
		t.Fatalf("nicks %q %q", m1.nick, m2.nick)
	}
	p1, p2 := unsafe.StringData(m1.nick), unsafe.StringData(m2.nick)
	for _, l := range []string{line1, line2} {
		start := uintptr(unsafe.Pointer(unsafe.StringData(l)))
		if p := uintptr(unsafe.Pointer(p1)); p >= start && p < start+uintptr(len(l)) {
			t.Fatal("the nick is a slice of the line")
		}
	}
	if p1 != p2 {
		t.Fatal("two rosters hold two copies of one nick")
	}
}

// TestRosterEntrySize: what a member costs in each user's roster, the
// part of the gateway's memory that grows with users × channel size.
func TestRosterEntrySize(t *testing.T) {
	if got := unsafe.Sizeof(slot{}); got != 16 {
		t.Fatalf("a roster entry takes %d bytes, want 16", got)
	}
	r := newRoster(caseRFC1459, member{nick: "alice", modes: "ov"}, member{nick: "bob"})
	if m, _ := r.get("ALICE"); m != (member{nick: "alice", modes: "ov"}) {
		t.Fatalf("get: %+v", m)
	}
	if m, _ := r.get("bob"); m != (member{nick: "bob"}) {
		t.Fatalf("get: %+v", m)
	}
}
