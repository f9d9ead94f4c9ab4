package mapping

import (
	"errors"
	"strings"
	"testing"
)

// escapeCases pair unescaped text with its XEP-0106 escaped form. Most come
// from the examples of XEP-0106 itself.
var escapeCases = []struct{ raw, escaped string }{
	{"", ""},
	{"bob", "bob"},
	{"Straße", "Straße"},
	{"100%", "100%"},
	{"space cadet", `space\20cadet`},
	{`call me "ishmael"`, `call\20me\20\22ishmael\22`},
	{"at&t guy", `at\26t\20guy`},
	{"d'artagnan", `d\27artagnan`},
	{"/.fanboy", `\2f.fanboy`},
	{"::foo::", `\3a\3afoo\3a\3a`},
	{"<foo>", `\3cfoo\3e`},
	{"user@host", `user\40host`},
	{`c:\net`, `c\3a\net`},
	{`c:\\net`, `c\3a\\net`},
	{`c:\cool stuff`, `c\3a\cool\20stuff`},
	{`c:\5commas`, `c\3a\5c5commas`},
	{`\3and\2is\5cool`, `\5c3and\2is\5c5cool`},
	// Partial and unknown sequences are left alone.
	{`\2plus\2is\4`, `\2plus\2is\4`},
	{`foo\bar`, `foo\bar`},
	{`foob\41r`, `foob\41r`},
	// Case is significant: \2F is not an escape sequence.
	{`a\2Fb`, `a\2Fb`},
	{`\20`, `\5c20`},
	{`\5c`, `\5c5c`},
	{`\\5c`, `\\5c5c`},
	{`\`, `\`},
	{`a\`, `a\`},
	{`\@`, `\\40`},
	{`\5`, `\5`},
}

func TestEscapeLocal(t *testing.T) {
	for _, tc := range escapeCases {
		if got := EscapeLocal(tc.raw); got != tc.escaped {
			t.Errorf("EscapeLocal(%q) = %q, want %q", tc.raw, got, tc.escaped)
		}
	}
}

func TestUnescapeLocal(t *testing.T) {
	for _, tc := range escapeCases {
		if got := UnescapeLocal(tc.escaped); got != tc.raw {
			t.Errorf("UnescapeLocal(%q) = %q, want %q", tc.escaped, got, tc.raw)
		}
	}
	// Input that EscapeLocal never produces.
	for _, tc := range []struct{ in, want string }{
		{`\2F`, `\2F`},
		{`\5C20`, `\5C20`},
		{`\5c5c20`, `\5c20`},
		{`\27\27`, "''"},
		{`\2`, `\2`},
		{`a\27`, "a'"},
		{"raw @ stays", "raw @ stays"},
		{`\5cab`, `\ab`},
		{`\\27`, `\'`},
	} {
		if got := UnescapeLocal(tc.in); got != tc.want {
			t.Errorf("UnescapeLocal(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestEscapeLocalNeverDisallowed(t *testing.T) {
	s := "\x00 \"&'/:<>@\\%\u00e9\\20\\5c"
	if e := EscapeLocal(s); strings.ContainsAny(e, disallowed) {
		t.Errorf("EscapeLocal(%q) = %q contains a disallowed character", s, e)
	}
}

func TestCheckLocalText(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"bob", true},
		{"Bob.Smith", true},
		{"straße", true},
		{"O'Hara", true},
		{"a b", true},
		{"日本語", true},
		{"\uff41\uff42\uff43", true}, // fullwidth letters fold to letters
		{"a\tb", false},              // control character
		{"a\u200db", false},          // zero width joiner (format, deleted by nodeprep)
		{"a\u00adb", false},          // soft hyphen
		{"a\ufe0fb", false},          // variation selector
		{"a\ue000b", false},          // private use
		{"a\u2028b", false},          // line separator
		{"a\ufffeb", false},          // non-character
		{"a\u00a0b", false},          // NBSP folds into a space
		{"a\uff20b", false},          // fullwidth @ folds into @
		{"a\uff05b", false},          // fullwidth % folds into the separator
		{`a\2Fb`, false},             // folds into the escape \2f
		{"\\\uff14\uff10", false},    // \ + fullwidth 40 folds into \40
		{"\\2\u00adf", false},        // soft hyphen between
		{":\u0301", false},           // \3a + combining acute composes into \3á
		{"<\u0338", false},           // < + combining long solidus composes into ≮
		{"\xff", false},              // invalid UTF-8
		{`\2f`, true},                // escaped as \5c2f, which survives folding
		{`a\b`, true},                // not an escape sequence
		{"e\u0301", true},            // not NFC, but no escape is involved
		{"\u212b", true},             // Angstrom sign folds to Å
		{"x\u0301\u0301\u0301", true},
	} {
		err := checkLocalText("test", tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("checkLocalText(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("checkLocalText(%q) = %v, does not wrap ErrMalformed", tc.in, err)
		}
	}
}

func TestValidHostname(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"example.com", true},
		{"Example.COM", true},
		{"localhost", true},
		{"irc.libera.chat", true},
		{"a-b.c0", true},
		{"xn--bcher-kva.de", true},
		{"1.2.3.4", false},
		{"", false},
		{"example.com.", false},
		{".example.com", false},
		{"a..b", false},
		{"-a.com", false},
		{"a-.com", false},
		{"a_b.com", false},
		{"host:6667", false},
		{strings.Repeat("a", 64) + ".com", false},
		{strings.Repeat("a", 63) + ".com", true},
		{strings.Repeat("a.", 127) + "a", false},
	} {
		if got := validHostname(tc.in); got != tc.ok {
			t.Errorf("validHostname(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
}
