package irc

import (
	"cmp"
	"slices"
	"unique"
)

// roster is a channel's members as one connection knows them, sorted by
// nick folded with the case mapping cm. Every user's connection keeps the
// member list of each of its channels, so a channel bridged for many users
// is held once per user. A sorted slice costs a member 32 bytes, plus at
// most an eighth for the room to grow, where a map of pointers cost about
// 75 and doubled at once for every user when the channel grew past a
// power of two. The nicks are interned: the users of one channel share
// one copy of each.
type roster struct {
	cm string // the case mapping of the order
	ms []member
}

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
	return slices.BinarySearchFunc(r.ms, nick, func(m member, nick string) int { return compareFold(r.cm, m.nick, nick) })
}

// get returns the member whose nick folds like nick.
func (r *roster) get(nick string) (member, bool) {
	if i, ok := r.find(nick); ok {
		return r.ms[i], true
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
	m.nick = unique.Make(m.nick).Value()
	i, ok := r.find(m.nick)
	if ok {
		r.ms[i] = m
		return
	}
	if len(r.ms) == cap(r.ms) {
		// Grow by an eighth, not the double append would give.
		grown := make([]member, len(r.ms), len(r.ms)+len(r.ms)/8+4)
		copy(grown, r.ms)
		r.ms = grown
	}
	r.ms = slices.Insert(r.ms, i, m)
}

// remove takes out the member whose nick folds like nick, and returns it.
func (r *roster) remove(nick string) (member, bool) {
	i, ok := r.find(nick)
	if !ok {
		return member{}, false
	}
	m := r.ms[i]
	r.ms = slices.Delete(r.ms, i, i+1)
	// Give back the room a mass departure (a netsplit) left unused.
	if c := cap(r.ms); c > 64 && len(r.ms) < c/4 {
		r.ms = append(make([]member, 0, 2*len(r.ms)), r.ms...)
	}
	return m, true
}

// all returns the members in order. The slice is the roster's own: it is
// read before the roster changes again, never kept.
func (r *roster) all() []member { return r.ms }

// clone returns a copy that later changes to r do not touch.
func (r *roster) clone() roster { return roster{cm: r.cm, ms: slices.Clone(r.ms)} }

// setCasemap orders the members by cm. Members whose nicks fold alike
// under cm become one: the one that came last.
func (r *roster) setCasemap(cm string) {
	if cm == r.cm {
		return
	}
	ms := r.ms
	r.cm, r.ms = cm, make([]member, 0, len(ms))
	for _, m := range ms {
		r.put(m)
	}
}
