package main

import "testing"

func TestProcs(t *testing.T) {
	for _, c := range []struct {
		env     string
		n, want int
	}{
		{"", 1, 1},
		{"", 2, 1},
		{"", 3, 1},
		{"", 8, 4},
		{"2", 2, 2}, // the runtime read GOMAXPROCS: left as it is
		{"1", 1, 1},
		{"16", 16, 16},
		{"0", 4, 2}, // not taken by the runtime: as if unset
		{"x", 4, 2},
		{"-1", 4, 2},
	} {
		if got := procs(c.env, c.n); got != c.want {
			t.Errorf("procs(%q, %d) = %d, want %d", c.env, c.n, got, c.want)
		}
	}
}
