package mapping

import (
	"errors"
	"strings"
	"testing"
)

// Run with, for example:
//
//	go test -run='^$' -fuzz=FuzzEmail -fuzztime=20s ./mapping/
//
// Inputs the fuzzers found are kept as seeds below (f.Add), not as testdata
// files.

func FuzzEscape(f *testing.F) {
	for _, tc := range escapeCases {
		f.Add(tc.raw)
		f.Add(tc.escaped)
	}
	f.Add("\\5c5c5c")
	f.Add("\\\\\\20")
	f.Add("\xff\\20\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		e := EscapeLocal(s)
		if strings.ContainsAny(e, disallowed) {
			t.Fatalf("EscapeLocal(%q) = %q contains a disallowed character", s, e)
		}
		if u := UnescapeLocal(e); u != s {
			t.Fatalf("UnescapeLocal(EscapeLocal(%q) = %q) = %q", s, e, u)
		}
		u := UnescapeLocal(s)
		if len(u) > len(s) {
			t.Fatalf("UnescapeLocal(%q) = %q is longer than its input", s, u)
		}
		if uu := UnescapeLocal(EscapeLocal(u)); uu != u {
			t.Fatalf("UnescapeLocal(EscapeLocal(%q)) = %q", u, uu)
		}
	})
}

func FuzzEmail(f *testing.F) {
	for _, s := range []string{
		"bob@example.com",
		"Bob.Smith@Example.COM",
		"straße@example.org",
		"a%b@example.com",
		`"john smith"@example.com`,
		`"a@b"@example.com`,
		`"a\\5cb"@example.com`,
		`"a\\"@example.com`,
		`"a\"b"@example.com`,
		`" bob"@example.com`,
		"O'Hara@bücher.de",
		"bob@[IPv6:2001:DB8::1]",
		"bob@[192.0.2.1]",
		"bob@[::1]",
		"Bob <bob@example.com>",
		"team: bob@example.com;",
		"bob@example.com (x)",
		"a\uff20b@example.com",
		"bob%example.com",
		`bob\40example.com`,
		`a\40b%example.com`,
		`\20bob%example.com`,
		"\"a\\2Fb\"@example.com",
		":\u0301@example.com",
		"\u0130stanbul@example.com",     // İ lower-cases to i + combining dot
		"\u212aelvin@example.com",       // Kelvin sign
		"\ufb01le@example.com",          // ﬁ ligature
		"\ufdfa@example.com",            // expands to 18 characters under NFKC
		"\u01c5ungla@example.com",       // title-case digraph
		"\u03a3\u039f\u03a3@example.gr", // final sigma
		"\uff21\uff22@example.com",      // fullwidth letters
		"\"a\\\uff12\uff10\"@example.com",
		"\"\u3000x\"@example.com",
		"x\u0301\u0300@example.com",
		"\"<\u0338\"@example.com",
		"\"&\u20e5\"@example.com",
		"\"0\"@A", // a single-label domain: mapped, but refused as a recipient
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		// addr as an email address.
		local, err := EmailToLocal(addr)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("EmailToLocal(%q) error %v does not wrap ErrMalformed", addr, err)
			}
		} else {
			checkEmailLocal(t, addr, local)
		}

		// addr as a JID localpart.
		email, err := LocalToEmail(addr)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("LocalToEmail(%q) error %v does not wrap ErrMalformed", addr, err)
			}
			return
		}
		local, err = EmailToLocal(email)
		if err != nil {
			t.Fatalf("EmailToLocal(LocalToEmail(%q) = %q) failed: %v", addr, email, err)
		}
		checkEmailLocal(t, email, local)
		if back, _ := LocalToEmail(local); back != email {
			t.Fatalf("LocalToEmail(%q) = %q, but LocalToEmail(%q) = %q", addr, email, local, back)
		}
	})
}

// checkEmailLocal checks the properties of local = EmailToLocal(addr).
func checkEmailLocal(t *testing.T, addr, local string) {
	t.Helper()
	switch {
	case strings.ContainsAny(local, disallowed):
		t.Fatalf("EmailToLocal(%q) = %q contains a disallowed character", addr, local)
	case strings.HasPrefix(local, `\20`) || strings.HasSuffix(local, `\20`):
		t.Fatalf("EmailToLocal(%q) = %q starts or ends with \\20", addr, local)
	case len(local) > maxLocalLen:
		t.Fatalf("EmailToLocal(%q) = %q is too long", addr, local)
	}
	wantLocal, wantDomain, err := parseAddrSpec(addr)
	if err != nil {
		t.Fatalf("EmailToLocal(%q) succeeded, but parseAddrSpec failed: %v", addr, err)
	}
	back, err := LocalToEmail(local)
	if !strings.HasPrefix(wantDomain, "[") && !strings.Contains(wantDomain, ".") {
		// A sender at a single-label domain gets a JID (its mail is
		// delivered), but mail to it is refused: it cannot receive any.
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("LocalToEmail(EmailToLocal(%q) = %q) = %q, %v: want a refusal of the single-label domain", addr, local, back, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("LocalToEmail(EmailToLocal(%q) = %q) failed: %v", addr, local, err)
	}
	// The same mailbox, with the domain lower-cased...
	gotLocal, gotDomain, err := parseAddrSpec(back)
	if err != nil || gotLocal != wantLocal || gotDomain != wantDomain {
		t.Fatalf("LocalToEmail(EmailToLocal(%q) = %q) = %q (%q at %q, %v), want %q at %q",
			addr, local, back, gotLocal, gotDomain, err, wantLocal, wantDomain)
	}
	// ... and the very same string when addr is not needlessly quoted.
	at := strings.LastIndexByte(addr, '@')
	rawLocal := addr[:at]
	if !strings.HasPrefix(rawLocal, `"`) || !strings.Contains(rawLocal, `\`) && !isDotAtom(wantLocal) {
		if want := addr[:at+1] + strings.ToLower(addr[at+1:]); back != want {
			t.Fatalf("LocalToEmail(EmailToLocal(%q) = %q) = %q, want %q", addr, local, back, want)
		}
	}
	if again, err := EmailToLocal(back); err != nil || again != local {
		t.Fatalf("EmailToLocal(%q) = %q, %v; want %q", back, again, err, local)
	}
	// What the XMPP server hands the component after folding the
	// localpart decodes to the folded mailbox.
	folded := serverFold(local)
	email, err := LocalToEmail(folded)
	if err != nil {
		t.Fatalf("LocalToEmail(%q), %q folded by the server, failed: %v", folded, local, err)
	}
	fLocal, fDomain, err := parseAddrSpec(email)
	if err != nil || fLocal != serverFold(wantLocal) || fDomain != wantDomain {
		t.Fatalf("LocalToEmail(%q), %q folded by the server, = %q; want %q at %q",
			folded, local, email, serverFold(wantLocal), wantDomain)
	}
}

func FuzzIRC(f *testing.F) {
	for _, s := range []string{
		"irc.libera.chat",
		"IRC.Libera.Chat",
		"192.0.2.1",
		"#go%irc.libera.chat",
		"##Go%irc.libera.chat",
		`\26local%irc.example.net`,
		"#100%%irc.libera.chat",
		`#a\3ab%irc.libera.chat`,
		`#c\3a\5c5cnet%irc.libera.chat`,
		"alice%irc.libera.chat",
		"[m]bot|away^_{}`%irc.libera.chat",
		`a\b%irc.libera.chat`,
		"%alice%irc.libera.chat",
		"\uff03alice%irc.libera.chat",
		"\u00b2bob%irc.libera.chat",
		"irc.libera.chat:6697",
	} {
		f.Add(s, "")
	}
	f.Add("!chan%irc.example.net", "#!")
	f.Add("+chan%irc.example.net", "#+")
	f.Add("a%b%c", "a%")
	f.Add("\\5c%x", "\\")
	f.Fuzz(func(t *testing.T, local, chantypes string) {
		a, err := ParseIRCLocal(local, chantypes)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseIRCLocal(%q, %q) error %v does not wrap ErrMalformed", local, chantypes, err)
			}
		} else {
			checkIRCAddr(t, a, chantypes)
		}

		// local as a name on the IRC side.
		for _, kind := range []IRCKind{IRCChannel, IRCUser} {
			b := IRCAddr{Kind: kind, Name: local, Server: "Irc.Example.NET"}
			got, err := ParseIRCLocal(b.Local(), chantypes)
			if err != nil {
				continue
			}
			if want := (IRCAddr{Kind: kind, Name: local, Server: "irc.example.net"}); got != want {
				// Only the kind may differ, and only because the name
				// decides it.
				if got.Kind == kind || got.Name != want.Name || got.Server != want.Server {
					t.Fatalf("ParseIRCLocal(%q) = %+v, want %+v", b.Local(), got, want)
				}
			}
			checkIRCAddr(t, got, chantypes)
		}
	})
}

// checkIRCAddr checks the properties of a valid IRC address a.
func checkIRCAddr(t *testing.T, a IRCAddr, chantypes string) {
	t.Helper()
	l := a.Local()
	switch {
	case strings.ContainsAny(l, disallowed):
		t.Fatalf("%+v.Local() = %q contains a disallowed character", a, l)
	case len(l) > maxLocalLen:
		t.Fatalf("%+v.Local() = %q is too long", a, l)
	case a.Server == "" || a.Server != strings.ToLower(a.Server):
		t.Fatalf("%+v has a bad server", a)
	case (a.Kind == IRCServer) != (a.Name == ""):
		t.Fatalf("%+v: kind and name disagree", a)
	}
	back, err := ParseIRCLocal(l, chantypes)
	if err != nil || back != a {
		t.Fatalf("ParseIRCLocal(%q) = %+v, %v; want %+v", l, back, err, a)
	}
	// The server folds the localpart; it still parses, to the folded name.
	folded := serverFold(l)
	f, err := ParseIRCLocal(folded, chantypes)
	want := IRCAddr{Kind: a.Kind, Name: serverFold(a.Name), Server: a.Server}
	if err != nil || f != want {
		t.Fatalf("ParseIRCLocal(%q), %q folded by the server, = %+v, %v; want %+v", folded, l, f, err, want)
	}
}

func FuzzNumber(f *testing.F) {
	for _, s := range [][2]string{
		{"+1 555 123 4567", ""},
		{"(555) 123-4567", "US"},
		{"+44 20 7946 0958", ""},
		{"020 7946 0958", "GB"},
		{"0044 20 7946 0958", "GB"},
		{"07700 900123", "GB"},
		{"+39 06 1234 5678", ""},
		{"72345", "US"},
		{"7234", "NU"},
		{"32123456", "DK"},
		{"020 7946", "GB"},
		{"1-800-FLOWERS", "US"},
		{"+4402079460958", ""},
		{"+15551234567", "XX"},
		{"+", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, input, region string) {
		out, err := NormalizeNumber(input, region)
		if err == nil {
			if EscapeLocal(out) != out {
				t.Fatalf("NormalizeNumber(%q, %q) = %q needs escaping", input, region, out)
			}
			if n, err := NumberFromLocal(out); err != nil || n != out {
				t.Fatalf("NumberFromLocal(NormalizeNumber(%q, %q) = %q) = %q, %v", input, region, out, n, err)
			}
			if again, err := NormalizeNumber(out, region); err != nil || again != out {
				t.Fatalf("NormalizeNumber(%q, %q) = %q, %v; want it unchanged", out, region, again, err)
			}
		}

		n, err := NumberFromLocal(input)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("NumberFromLocal(%q) error %v does not wrap ErrMalformed", input, err)
			}
			return
		}
		if n != UnescapeLocal(input) {
			t.Fatalf("NumberFromLocal(%q) = %q", input, n)
		}
		if again, err := NormalizeNumber(n, ""); err != nil || again != n {
			t.Fatalf("NormalizeNumber(%q, \"\") = %q, %v; want it unchanged", n, again, err)
		}
	})
}
