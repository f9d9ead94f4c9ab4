// Package mapping translates foreign identities (IRC networks, channels and
// nicks, email addresses, phone numbers) to and from the localparts of the
// JIDs that Passerelle's components expose for them.
//
// Every bridged identity is addressed as user%host@bridge-domain:
//
//	IRC channel #go on irc.libera.chat   #go%irc.libera.chat@irc.example.org
//	IRC user alice on irc.libera.chat    alice%irc.libera.chat@irc.example.org
//	IRC network irc.libera.chat          irc.libera.chat@irc.example.org
//	email bob@example.com                bob%example.com@mail.example.org
//	SMS +1 555 123 4567                  +15551234567@sms.example.org
//
// The functions in this file set implement the pure codec: they only look at
// the strings they are given. Two facts about XMPP servers shape it:
//
//   - Characters a localpart cannot carry (space " & ' / : < > @) are
//     escaped with XEP-0106 (JID Escaping). The server does not decode these
//     escapes; the gateway does, with UnescapeLocal.
//   - The server case-folds and NFKC-normalises the localpart before the
//     component sees it. The codec does not try to preserve case through the
//     server (a store-backed identity mapping does that); it only refuses
//     names whose escaping or structure the server's folding would change,
//     for example a raw "\2F" that folds into the escape "\2f", or a
//     fullwidth "％" that folds into the '%' separator.
//
// The separator between user and host is the last '%' of the (unescaped)
// localpart. Hosts (hostnames, IP literals) never contain '%', so a '%'
// inside an email local part or an IRC channel name needs no escaping and
// the mapping stays unambiguous: "a%b@example.com" is "a%b%example.com".
//
// Every error returned for bad input wraps ErrMalformed, which callers map to
// the XMPP stanza error <jid-malformed/>.
package mapping

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// ErrMalformed is wrapped by every error that reports an address or JID
// localpart that cannot be mapped. Callers test for it with errors.Is and
// answer with the XMPP error jid-malformed.
var ErrMalformed = errors.New("malformed address")

// maxLocalLen is the longest JID localpart, in bytes (RFC 7622, 3.3.1).
const maxLocalLen = 1023

// malformed returns an error wrapping ErrMalformed with a formatted
// explanation of what is wrong.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// disallowed holds the characters a localpart cannot carry; XEP-0106 escapes
// each of them as a backslash and two lower-case hex digits.
const disallowed = ` "&'/:<>@`

// escapeCodes are the hex codes of the ten XEP-0106 escape sequences: the
// nine disallowed characters and the backslash itself.
var escapeCodes = [...]string{"20", "22", "26", "27", "2f", "3a", "3c", "3e", "40", "5c"}

const lowerHex = "0123456789abcdef"

// escapeAt reports whether s (which starts right after a backslash) begins
// with one of the ten XEP-0106 escape codes, and returns the character it
// stands for. Case is significant: only lower-case hex is an escape.
func escapeAt(s string) (byte, bool) {
	if len(s) < 2 {
		return 0, false
	}
	for _, code := range escapeCodes {
		if s[0] == code[0] && s[1] == code[1] {
			return unhex(s[0])<<4 | unhex(s[1]), true
		}
	}
	return 0, false
}

func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

// EscapeLocal applies the XEP-0106 escaping transformation to s so that it
// can be used in a JID localpart: each of space " & ' / : < > @ becomes
// \20 \22 \26 \27 \2f \3a \3c \3e \40, and a backslash becomes \5c only when
// it is followed by one of the ten escape codes (20 22 26 27 2f 3a 3c 3e 40
// 5c), so that "c:\net" is "c\3a\net" and "\5c" is "\5c5c". Every other
// character, including '%' and non-ASCII text, is left as it is.
//
// UnescapeLocal(EscapeLocal(s)) == s for every s. EscapeLocal cannot report
// XEP-0106's rule that an escaped localpart must not begin or end with \20:
// the address codecs in this package check that for the localparts they
// build.
func EscapeLocal(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEscape(s, i) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(s, i) {
			b.WriteByte('\\')
			b.WriteByte(lowerHex[c>>4])
			b.WriteByte(lowerHex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// needsEscape reports whether the byte s[i] is escaped by EscapeLocal.
func needsEscape(s string, i int) bool {
	c := s[i]
	if c == '\\' {
		_, ok := escapeAt(s[i+1:])
		return ok
	}
	return strings.IndexByte(disallowed, c) >= 0
}

// UnescapeLocal applies the XEP-0106 unescaping transformation: each of the
// ten escape sequences \20 \22 \26 \27 \2f \3a \3c \3e \40 \5c (lower-case
// hex only, as XEP-0106 makes case significant) is replaced by the character
// it stands for. Anything else, including partial sequences such as "\2" and
// sequences for other characters such as "\41", is left untouched.
func UnescapeLocal(s string) string {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c == '\\' {
			if d, ok := escapeAt(s[i+1:]); ok {
				b.WriteByte(d)
				i += 3
				continue
			}
		}
		b.WriteByte(c)
		i++
	}
	return b.String()
}

// mappedToNothing reports whether stringprep (RFC 3454, table B.1) deletes r
// from a localpart. Such characters cannot survive the trip through an XMPP
// server, and deleting them could join the text around them into an escape
// sequence.
func mappedToNothing(r rune) bool {
	switch r {
	case 0x00AD, 0x034F, 0x1806, 0x180B, 0x180C, 0x180D,
		0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF:
		return true
	}
	return 0xFE00 <= r && r <= 0xFE0F
}

// serverFold approximates what an XMPP server (Prosody's or ejabberd's
// nodeprep) does to a localpart before a component sees it: delete the
// characters mapped to nothing, case-fold (ß becomes ss) and
// NFKC-normalise.
func serverFold(s string) string {
	s = strings.Map(func(r rune) rune {
		if mappedToNothing(r) {
			return -1
		}
		return r
	}, s)
	f := cases.Fold()
	return f.String(norm.NFKC.String(f.String(s)))
}

// checkLocalText reports whether s, once escaped with EscapeLocal, can be
// carried in a JID localpart and comes back from the server meaning the same
// thing. It refuses invalid UTF-8, control, format and private-use
// characters, line and paragraph separators and non-characters (all of which
// servers reject or delete), and text whose server-side folding would turn
// into a disallowed character or a '%', or would create, destroy or change an
// XEP-0106 escape sequence. what names s in error messages.
func checkLocalText(what, s string) error {
	if !utf8.ValidString(s) {
		return malformed("%s %q is not valid UTF-8", what, s)
	}
	for _, r := range s {
		switch {
		case unicode.Is(unicode.Cc, r):
			return malformed("%s %q contains the control character %U", what, s, r)
		case unicode.Is(unicode.Cf, r), unicode.Is(unicode.Co, r),
			unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r),
			isNonCharacter(r), mappedToNothing(r):
			return malformed("%s %q contains %U, which a JID localpart cannot carry", what, s, r)
		}
	}
	e := EscapeLocal(s)
	f := serverFold(e)
	switch {
	case strings.ContainsAny(f, disallowed):
		return malformed("%s %q contains characters that the XMPP server folds into one a localpart cannot carry", what, s)
	case strings.Count(f, "%") != strings.Count(e, "%"):
		return malformed("%s %q contains characters that the XMPP server folds into the '%%' separator", what, s)
	case UnescapeLocal(f) != serverFold(s):
		return malformed("%s %q would change meaning when the XMPP server folds it (its escape sequences would not survive)", what, s)
	}
	return nil
}

// isNonCharacter reports whether r is a Unicode non-character (U+FDD0 to
// U+FDEF and the last two code points of every plane).
func isNonCharacter(r rune) bool {
	return 0xFDD0 <= r && r <= 0xFDEF || r&0xFFFE == 0xFFFE
}

// checkLocalLen refuses a localpart that is longer than a JID allows, as
// built or after the server's folding (NFKC can lengthen text).
func checkLocalLen(what, local string) error {
	if len(local) > maxLocalLen || len(serverFold(local)) > maxLocalLen {
		return malformed("%s is too long for a JID localpart (%d bytes, at most %d)", what, len(local), maxLocalLen)
	}
	return nil
}

// checkInputLen refuses a JID localpart that is longer than a JID allows
// before any work is done on it.
func checkInputLen(local string) error {
	if len(local) > maxLocalLen {
		return malformed("jid localpart is too long (%d bytes, at most %d)", len(local), maxLocalLen)
	}
	return nil
}

// validHostname reports whether h is an ASCII hostname: dot-separated labels
// of 1 to 63 letters, digits and hyphens that neither start nor end with a
// hyphen, at most 253 bytes in all, no trailing dot, and a last label that is
// not all digits (so that "1.2.3.4" is not taken for a name).
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}
