package sms

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSplitBody(t *testing.T) {
	cases := []struct {
		in    string
		max   int
		parts int
	}{
		{"short", 1600, 1},
		{strings.Repeat("a", 1600), 1600, 1},
		{strings.Repeat("a", 1601), 1600, 2},
		{strings.Repeat("word ", 700), 1600, 3},
		{strings.Repeat("é", 3300), 1600, 3},
		{strings.Repeat("ab cd", 3), 4, 4},
	}
	for _, c := range cases {
		parts := splitBody(c.in, c.max)
		if len(parts) != c.parts || strings.Join(parts, "") != c.in {
			t.Errorf("splitBody(%.20q…, %d) = %d parts, want %d, joined equal %v", c.in, c.max, len(parts), c.parts, strings.Join(parts, "") == c.in)
		}
		for _, p := range parts {
			if n := utf8.RuneCountInString(p); n > c.max || n == 0 {
				t.Errorf("part of %d characters (max %d)", n, c.max)
			}
		}
	}
	// Cut after a space, not inside a word.
	p := splitBody(strings.Repeat("word ", 700), 1600)
	if !strings.HasSuffix(p[0], " ") || !strings.HasPrefix(p[1], "word") {
		t.Errorf("cut inside a word: …%q | %q…", p[0][len(p[0])-6:], p[1][:6])
	}
}
