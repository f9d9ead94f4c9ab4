package irc

import (
	"cmp"
	"iter"
	"slices"
	"unique"
)

// roster is a channel's members as one connection knows them, sorted by
// nick folded with the case mapping cm. Every user's connection keeps the
// member list of each of its channels, so a channel bridged for many users
// is held once per user, and a member's entry is what every further user
// multiplies. An entry is two interned handles, 16 bytes, plus at most an
// eighth for the room to grow: the nicks (and the few distinct sets of
// prefix modes) are held once for all the users of a channel. A map of
// pointers cost about 75 bytes a member and doubled at once for every
// user when the channel grew past a power of two; a slice of member (two
// strings) cost 32.
type roster struct {
	cm string // the case mapping of the order
	ms []slot
}

// slot is a member as the roster holds it.
type slot struct {
	nick, modes unique.Handle[string]
}

func (s slot) member() member { return member{nick: s.nick.Value(), modes: s.modes.Value()} }

func newRoster(cm string, ms ...member) roster {
	r := roster{cm: cm}
	for _, m := range ms {
		r.put(m)
	}
	return r
}

// compareFold compares a and b folded with cm, like strings.Compare on
// foldWith(cm, a) and foldWith(cm, b), without building either.
func compareFold(cm, a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if x, y := folds(cm, a[i]), folds(cm, b[i]); x != y {
			return cmp.Compare(x, y)
		}
	}
	return cmp.Compare(len(a), len(b))
}

func (r *roster) find(nick string) (int, bool) {
	return slices.BinarySearchFunc(r.ms, nick, func(s slot, nick string) int { return compareFold(r.cm, s.nick.Value(), nick) })
}

// get returns the member whose nick folds like nick.
func (r *roster) get(nick string) (member, bool) {
	if i, ok := r.find(nick); ok {
		return r.ms[i].member(), true
	}
	return member{}, false
}

// has reports whether a member's nick folds like nick.
func (r *roster) has(nick string) bool {
	_, ok := r.find(nick)
	return ok
}

// put adds m, or replaces the member whose nick folds like m's.
func (r *roster) put(m member) {
	s := slot{nick: unique.Make(m.nick), modes: noModes}
	if m.modes != "" {
		s.modes = unique.Make(m.modes)
	}
	r.putSlot(s)
}

// noModes is the modes of a member without any.
var noModes = unique.Make("")

func (r *roster) putSlot(s slot) {
	i, ok := r.find(s.nick.Value())
	if ok {
		r.ms[i] = s
		return
	}
	if len(r.ms) == cap(r.ms) {
		// Grow by an eighth, not the double append would give.
		grown := make([]slot, len(r.ms), len(r.ms)+len(r.ms)/8+4)
		copy(grown, r.ms)
		r.ms = grown
	}
	r.ms = slices.Insert(r.ms, i, s)
}

// remove takes out the member whose nick folds like nick, and returns it.
func (r *roster) remove(nick string) (member, bool) {
	i, ok := r.find(nick)
	if !ok {
		return member{}, false
	}
	m := r.ms[i].member()
	r.ms = slices.Delete(r.ms, i, i+1)
	// Give back the room a mass departure (a netsplit) left unused.
	if c := cap(r.ms); c > 64 && len(r.ms) < c/4 {
		r.ms = append(make([]slot, 0, 2*len(r.ms)), r.ms...)
	}
	return m, true
}

// all yields the members in order. The roster must not change during the
// iteration.
func (r *roster) all() iter.Seq[member] {
	return func(yield func(member) bool) {
		for _, s := range r.ms {
			if !yield(s.member()) {
				return
			}
		}
	}
}

// clone returns a copy that later changes to r do not touch.
func (r *roster) clone() roster { return roster{cm: r.cm, ms: slices.Clone(r.ms)} }

// setCasemap orders the members by cm. Members whose nicks fold alike
// under cm become one: the one that came last.
func (r *roster) setCasemap(cm string) {
	if cm == r.cm {
		return
	}
	ms := r.ms
	r.cm, r.ms = cm, make([]slot, 0, len(ms))
	for _, s := range ms {
		r.putSlot(s)
	}
}
