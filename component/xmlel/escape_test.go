package xmlel

import (
	"bytes"
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "",
		"plain text":           "plain text",
		"a<b>c&d\"e'f":         "a&lt;b&gt;c&amp;d&quot;e&apos;f",
		"tab\tnl\ncr\r":        "tab\tnl\ncr&#xD;",
		"ctl\x01\x1fend":       "ctlend",
		"café <ü>":             "café &lt;ü&gt;",
		"ascii then \xff bad":  "ascii then \ufffd bad", // invalid UTF-8: the replacement character
		"\ufffe\uffff nonchar": " nonchar",
	} {
		var b bytes.Buffer
		escape(&b, in)
		if b.String() != want {
			t.Errorf("escape(%q) = %q, want %q", in, b.String(), want)
		}
	}
}

// An element whose text needs no escaping is serialised into a buffer
// allocated once, at its final size or a little more.
func TestSizeCoversPlainElements(t *testing.T) {
	e := New("jabber:client", "presence").SetAttr("from", "#c%irc.example.org@irc.example.org/nick").SetAttr("to", "u@example.org/r")
	x := New("http://jabber.org/protocol/muc#user", "x")
	x.Add(New("http://jabber.org/protocol/muc#user", "item").SetAttr("affiliation", "none").SetAttr("role", "participant"))
	x.Add(New("http://jabber.org/protocol/muc#user", "status").SetAttr("code", "110"))
	e.Add(x).Add(New("", "status").WithText(strings.Repeat("away ", 20)))
	out := e.Bytes()
	if len(out) > e.size() {
		t.Fatalf("size %d < serialised length %d", e.size(), len(out))
	}
	if allocs := testing.AllocsPerRun(100, func() { e.Bytes() }); allocs > 2 {
		t.Errorf("Bytes allocates %v times, want at most 2 (buffer and its header)", allocs)
	}
}
