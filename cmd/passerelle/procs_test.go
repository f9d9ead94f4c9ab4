package main

import "testing"

func TestProcs(t *testing.T) {
	for _, c := range []struct {
		env     string
		n, want int
		set     bool
	}{
		{"", 1, 1, true},
		{"", 2, 1, true},
		{"", 3, 1, true},
		{"", 8, 4, true},
		{"2", 2, 2, false}, // the runtime read GOMAXPROCS: left as it is
		{"1", 1, 1, false},
		{"16", 16, 16, false},
		{"0", 4, 2, true}, // not taken by the runtime: as if unset
		{"x", 4, 2, true},
		{"-1", 4, 2, true},
		{"4294967297", 4, 2, true}, // over 32 bits: the runtime does not take it
	} {
		if got, set := procs(c.env, c.n); got != c.want || set != c.set {
			t.Errorf("procs(%q, %d) = %d, %v; want %d, %v", c.env, c.n, got, set, c.want, c.set)
		}
	}
}
