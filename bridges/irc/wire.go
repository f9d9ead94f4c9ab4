package irc

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	irc "gopkg.in/irc.v4"
)

// maxLine is the length of an IRC line, CRLF included (RFC 1459).
const maxLine = 512

// maxLinesPerMessage is how many IRC lines one XMPP message may become.
const maxLinesPerMessage = 20

// errUnsafe is returned for a parameter that cannot be put on the wire.
var errUnsafe = errors.New("irc parameter contains CR, LF or NUL")

// buildLine renders an IRC line (without CRLF). Every parameter is checked:
// none may contain CR, LF or NUL; only the last may be empty, contain a
// space or start with ':'.
func buildLine(cmd string, params ...string) (string, error) {
	if cmd == "" || strings.ContainsAny(cmd, " \r\n\x00:") {
		return "", errors.New("bad irc command")
	}
	var b strings.Builder
	b.WriteString(cmd)
	for i, p := range params {
		if strings.ContainsAny(p, "\r\n\x00") {
			return "", errUnsafe
		}
		b.WriteByte(' ')
		if i == len(params)-1 && (p == "" || strings.ContainsRune(p, ' ') || p[0] == ':') {
			b.WriteByte(':')
		} else if p == "" || strings.ContainsRune(p, ' ') || p[0] == ':' {
			return "", errors.New("bad middle irc parameter")
		}
		b.WriteString(p)
	}
	return b.String(), nil
}

// splitText cuts text into pieces of at most limit bytes, on UTF-8 and,
// where possible, word boundaries. Line breaks start new pieces; NUL and CR
// are removed. An empty text gives no pieces.
func splitText(text string, limit int) []string {
	if limit < 4 {
		limit = 4
	}
	text = strings.ReplaceAll(text, "\x00", "")
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		for len(line) > limit {
			cut := limit
			for cut > 0 && !utf8.RuneStart(line[cut]) {
				cut--
			}
			if sp := strings.LastIndexByte(line[:cut], ' '); sp > limit/2 {
				cut = sp
			}
			if cut == 0 {
				cut = limit
			}
			out = append(out, line[:cut])
			line = strings.TrimLeft(line[cut:], " ")
		}
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

// stripFormatting removes mIRC formatting codes (bold, colours, italics,
// underline, strike-through, monospace, reverse, reset).
func stripFormatting(s string) string {
	if !strings.ContainsAny(s, "\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0x02, 0x0f, 0x11, 0x16, 0x1d, 0x1e, 0x1f:
		case 0x03:
			i = skipColour(s, i, 2, isDigit)
		case 0x04:
			i = skipColour(s, i, 6, isHex)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// skipColour skips the colour arguments after the code at i ("fg[,bg]")
// and returns the index of their last byte.
func skipColour(s string, i, n int, ok func(byte) bool) int {
	j := i + 1
	k := 0
	for k < n && j < len(s) && ok(s[j]) {
		j, k = j+1, k+1
	}
	if k > 0 && j+1 < len(s) && s[j] == ',' && ok(s[j+1]) {
		j++
		for k = 0; k < n && j < len(s) && ok(s[j]); k++ {
			j++
		}
	}
	return j - 1
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isHex(c byte) bool {
	return isDigit(c) || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// decodeText turns IRC bytes into text: UTF-8 when valid, else Latin-1.
func decodeText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	r := make([]rune, 0, len(s))
	for i := 0; i < len(s); i++ {
		r = append(r, rune(s[i]))
	}
	return string(r)
}

// ctcp splits a CTCP message ("\x01ACTION waves\x01") into its command and
// argument; ok is false for a plain message.
func ctcp(text string) (cmd, arg string, ok bool) {
	if len(text) < 2 || text[0] != 1 {
		return "", "", false
	}
	text = strings.TrimSuffix(text[1:], "\x01")
	cmd, arg, _ = strings.Cut(text, " ")
	return strings.ToUpper(cmd), arg, true
}

// parseLine parses an IRC line; irc.v4 panics on some malformed input,
// which is turned into an error here.
func parseLine(line string) (m *irc.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("malformed irc line: %v", r)
		}
	}()
	// Leading spaces are skipped as the reader skips them (command):
	// the library takes " @ PING" for the command "@".
	m, err = irc.ParseMessage(strings.TrimLeft(line, " "))
	if err == nil && m.Prefix == nil {
		m.Prefix = &irc.Prefix{}
	}
	return m, err
}
