package mapping

import (
	"net/mail"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// ipv6Tag is the RFC 5321 tag of an IPv6 address literal, "[IPv6:...]",
// lower-cased.
const ipv6Tag = "[ipv6:"

// EmailToLocal maps an email address to the localpart of its JID on the
// email bridge: "bob@example.com" becomes "bob%example.com".
//
// addr must be a single bare RFC 5322 addr-spec: no display name, angle
// brackets, group, comment or surrounding space. The local part may be a
// dot-atom or a quoted string (`"john smith"@example.com`) and may hold
// non-ASCII text (RFC 6532, "straße@example.org"). The domain is a hostname
// (an IDN in Unicode form is accepted if it is in its normalised form) or an
// IP literal: "[192.0.2.1]", "[IPv6:2001:db8::1]" (RFC 5321) or
// "[2001:db8::1]" (as Go's net/mail accepts it).
//
// The local part keeps its case (the XMPP server may fold it later; a
// store-backed mapping remembers the original); the domain is lower-cased.
// Characters a localpart cannot carry are XEP-0106 escaped in both parts:
// "O'Hara@example.com" becomes "O\27Hara%example.com" and
// "bob@[IPv6:2001:db8::1]" becomes "bob%[ipv6\3a2001\3adb8\3a\3a1]". A '%' in
// the local part is kept as it is: the domain never contains one, so the
// last '%' of the localpart is always the separator.
//
// EmailToLocal refuses, with an error wrapping ErrMalformed, anything that
// is not such an address, a local part that starts with a space (XEP-0106
// forbids a leading \20), local parts with characters a localpart cannot
// carry (control characters, for one) or that the server's folding would
// change in meaning (see the package documentation), and results longer
// than 1023 bytes.
func EmailToLocal(addr string) (string, error) {
	// Quoting at most doubles the local part, so a longer address cannot
	// fit in a localpart.
	if len(addr) > 4*maxLocalLen {
		return "", malformed("email address is too long (%d bytes)", len(addr))
	}
	local, domain, err := parseAddrSpec(addr)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(local, " ") {
		return "", malformed("email address %q: a local part that starts with a space cannot be carried in a JID", addr)
	}
	if err := checkLocalText("email local part", local); err != nil {
		return "", err
	}
	out := EscapeLocal(local) + "%" + EscapeLocal(domain)
	if err := checkLocalLen("email address "+strconv.Quote(addr), out); err != nil {
		return "", err
	}
	return out, nil
}

// LocalToEmail maps the localpart of a JID on the email bridge back to an
// email address: "bob%example.com" becomes "bob@example.com".
//
// XEP-0106 escapes are decoded first, so the XEP-0106 form
// "bob\40example.com" is accepted too, as are escaped characters in the
// local part ("o\27hara%example.com" is "o'hara@example.com"). The local
// part and the domain are then split at the last '%' or '@'.
//
// A domain of a single label ("bob%localhost", or "a%b%c", which would be
// "a%b@c") is refused: RFC 5321 §2.3.5 gives it no meaning on the
// Internet.
//
// The result is a bare addr-spec with a lower-case domain; its local part is
// a dot-atom when it can be, and a quoted string otherwise
// (`"john smith"@example.com`). It is always accepted by EmailToLocal, and
// LocalToEmail(EmailToLocal(a)) is a in that canonical form. Anything that
// does not decode to such an address is refused with an error wrapping
// ErrMalformed.
func LocalToEmail(local string) (string, error) {
	if err := checkInputLen(local); err != nil {
		return "", err
	}
	s := UnescapeLocal(local)
	i := strings.LastIndexAny(s, "%@")
	if i < 0 {
		return "", malformed("jid localpart %q has no '%%' (or escaped '@') between local part and domain", local)
	}
	lp, domain := s[:i], strings.ToLower(s[i+1:])
	switch {
	case lp == "":
		return "", malformed("jid localpart %q has an empty email local part", local)
	case domain == "":
		return "", malformed("jid localpart %q has an empty email domain", local)
	case !strings.HasPrefix(domain, "[") && !strings.Contains(domain, "."):
		// RFC 5321 §2.3.5: mail is not sent to a single-label domain
		// ("a%b%c" would otherwise go to "a%b@c").
		return "", malformed("jid localpart %q names the single-label domain %q, which cannot receive mail", local, domain)
	}
	addr := formatAddrSpec(lp, domain)
	if _, err := EmailToLocal(addr); err != nil {
		return "", malformed("jid localpart %q is not a valid email address: %v", local, unwrapMalformed(err))
	}
	return addr, nil
}

// parseAddrSpec parses addr, which must be a bare addr-spec, with net/mail
// and returns its local part (unquoted) and its lower-cased domain.
func parseAddrSpec(addr string) (local, domain string, err error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", "", malformed("email address %q has no '@'", addr)
	}
	rawLocal, rawDomain := addr[:at], addr[at+1:]
	switch {
	case rawLocal == "":
		return "", "", malformed("email address %q has an empty local part", addr)
	case rawDomain == "":
		return "", "", malformed("email address %q has an empty domain", addr)
	}

	// net/mail does not know the RFC 5321 IPv6 tag: hand it the bare
	// literal and check the tag ourselves.
	domain = strings.ToLower(rawDomain)
	parseDomain := rawDomain
	tagged := strings.HasPrefix(domain, ipv6Tag)
	if tagged {
		parseDomain = "[" + rawDomain[len(ipv6Tag):]
	}
	a, err := mail.ParseAddress(rawLocal + "@" + parseDomain)
	if err != nil {
		return "", "", malformed("%q is not a valid email address: %s", addr, strings.TrimPrefix(err.Error(), "mail: "))
	}
	if a.Name != "" {
		return "", "", malformed("email address %q has a display name or comment; only a bare address is allowed", addr)
	}
	pat := strings.LastIndexByte(a.Address, '@')
	pLocal, pDomain := a.Address[:pat], a.Address[pat+1:]
	quoted := len(rawLocal) >= 2 && rawLocal[0] == '"' && rawLocal[len(rawLocal)-1] == '"'
	if pDomain != parseDomain || (pLocal != rawLocal && !quoted) {
		return "", "", malformed("%q is not a bare email address (no display name, angle brackets, group, comment or surrounding space)", addr)
	}

	switch {
	case tagged:
		if !strings.Contains(pDomain, ":") {
			return "", "", malformed("email address %q: the IPv6 address literal does not hold an IPv6 address", addr)
		}
	case strings.HasPrefix(domain, "["):
		// net/mail has checked that the literal holds an IP address.
	case !validMailDomain(domain):
		return "", "", malformed("email address %q: domain %q is not a valid hostname or IP literal", addr, rawDomain)
	}
	return pLocal, domain, nil
}

// validMailDomain reports whether the lower-cased domain d is an ASCII
// hostname, or an internationalised domain name in its normalised Unicode
// form (one that the XMPP server's folding leaves unchanged).
func validMailDomain(d string) bool {
	if isASCII(d) {
		return validHostname(d)
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil || !validHostname(a) {
		return false
	}
	u, err := idna.Lookup.ToUnicode(a)
	return err == nil && u == d && serverFold(d) == d
}

// formatAddrSpec renders local@domain, quoting the local part when it is not
// a dot-atom.
func formatAddrSpec(local, domain string) string {
	if isDotAtom(local) {
		return local + "@" + domain
	}
	var b strings.Builder
	b.Grow(len(local) + len(domain) + 4)
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if c := local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteString(`"@`)
	b.WriteString(domain)
	return b.String()
}

// isDotAtom reports whether s is an RFC 5322 dot-atom (with RFC 6532's
// non-ASCII atext): non-empty runs of atext separated by single dots.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		switch {
		case r == '.':
		case r >= 0x80:
		case r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>[]:;@\,"`, r):
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// unwrapMalformed returns the explanation of an error made by malformed,
// without the ErrMalformed prefix, so that it can be wrapped again.
func unwrapMalformed(err error) string {
	return strings.TrimPrefix(err.Error(), ErrMalformed.Error()+": ")
}
