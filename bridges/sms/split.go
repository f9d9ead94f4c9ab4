package sms

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// maxTextChars is the provider's limit on one text's body.
	maxTextChars = 1600
	// maxParts bounds how many texts one message may become.
	maxParts = 10
)

// splitBody cuts s into parts of at most max characters whose
// concatenation is s, preferring to cut after whitespace.
func splitBody(s string, max int) []string {
	if utf8.RuneCountInString(s) <= max {
		return []string{s}
	}
	var parts []string
	for s != "" {
		if utf8.RuneCountInString(s) <= max {
			parts = append(parts, s)
			break
		}
		// Byte offset just after the max-th rune.
		end, n := 0, 0
		for i := range s {
			if n == max {
				end = i
				break
			}
			n++
		}
		cut := end
		if i := strings.LastIndexFunc(s[:end], unicode.IsSpace); i > end/2 {
			_, size := utf8.DecodeRuneInString(s[i:])
			cut = i + size
		}
		parts = append(parts, s[:cut])
		s = s[cut:]
	}
	return parts
}
