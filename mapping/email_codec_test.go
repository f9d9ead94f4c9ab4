package mapping

import (
	"errors"
	"strings"
	"testing"
)

func TestEmailToLocal(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want string // "" means an error is expected
	}{
		{"bob@example.com", "bob%example.com"},
		// The local part keeps its case; the domain is lower-cased.
		{"Bob.Smith@Example.COM", "Bob.Smith%example.com"},
		{"straße@example.org", "straße%example.org"},
		{"Ærøskøbing@example.dk", "Ærøskøbing%example.dk"},
		{"用户@例子.广告", "用户%例子.广告"},
		{"bob@bücher.de", "bob%bücher.de"},
		{"bob@BÜCHER.de", "bob%bücher.de"},
		{"bob@xn--bcher-kva.de", "bob%xn--bcher-kva.de"},
		{"bob+tag@example.com", "bob+tag%example.com"},
		{"O'Hara@example.com", `O\27Hara%example.com`},
		{"a&b/c@example.com", `a\26b\2fc%example.com`},
		{"!#$%&'*+-/=?^_`{|}~@example.com", "!#$%\\26\\27*+-\\2f=?^_`{|}~%example.com"},
		// A '%' in the local part is kept: the last '%' is the separator.
		{"a%b@example.com", "a%b%example.com"},
		{"%@example.com", "%%example.com"},
		// Quoted local parts.
		{`"john smith"@example.com`, `john\20smith%example.com`},
		{`"a@b"@example.com`, `a\40b%example.com`},
		{`"a\"b"@example.com`, `a\22b%example.com`},
		{`"a\\b"@example.com`, `a\b%example.com`},
		{`"a\\5cb"@example.com`, `a\5c5cb%example.com`},
		{`"a\\27"@example.com`, `a\5c27%example.com`},
		{`"a.."@example.com`, "a..%example.com"},
		{`"bob"@example.com`, "bob%example.com"},
		{`"trailing "@example.com`, `trailing\20%example.com`},
		{`"a\\"@example.com`, `a\%example.com`},
		// IP literals.
		{"bob@[192.0.2.1]", "bob%[192.0.2.1]"},
		{"bob@[IPv6:2001:DB8::1]", `bob%[ipv6\3a2001\3adb8\3a\3a1]`},
		{"bob@[ipv6:::ffff:192.0.2.1]", `bob%[ipv6\3a\3a\3affff\3a192.0.2.1]`},
		{"bob@[::1]", `bob%[\3a\3a1]`},
		{"bob@localhost", "bob%localhost"},

		// Not a single bare addr-spec.
		{"", ""},
		{"bob", ""},
		{"bob@", ""},
		{"@example.com", ""},
		{`""@example.com`, ""},
		{"Bob <bob@example.com>", ""},
		{"<bob@example.com>", ""},
		{"bob@example.com (Bob)", ""},
		{"bob@example.com ()", ""},
		{" bob@example.com", ""},
		{"bob@example.com ", ""},
		{"bob@ example.com", ""},
		{"bob @example.com", ""},
		{"team: bob@example.com;", ""},
		{"team:;", ""},
		{"bob@example.com, alice@example.com", ""},
		{"bob@@example.com", ""},
		{"a b@example.com", ""},
		{".bob@example.com", ""},
		{"bob.@example.com", ""},
		{"bo..b@example.com", ""},
		{`"unclosed@example.com`, ""},
		// Bad domains.
		{"bob@example.com.", ""},
		{"bob@-example.com", ""},
		{"bob@exa_mple.com", ""},
		{"bob@1.2.3.4", ""},
		{"bob@[300.1.1.1]", ""},
		{"bob@[IPv6:192.0.2.1]", ""},
		{"bob@[IPv6:fe80::1%eth0]", ""},
		{"bob@[not an ip]", ""},
		{"bob@example.com:25", ""},
		{"bob@" + strings.Repeat("a", 64) + ".com", ""},
		{"bob@bu\u0308cher.de", ""},                                // not in normalised (NFC) form
		{"bob@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", ""}, // fullwidth: not in normalised form
		// Local parts a JID cannot carry.
		{`" bob"@example.com`, ""}, // XEP-0106: no leading \20
		{"\"a\tb\"@example.com", ""},
		{"a\u200db@example.com", ""},
		{"a\uff20b@example.com", ""},
		{"a\uff05b@example.com", ""},
		{`"a\\2Fb"@example.com`, ""},
		{"a\xffb@example.com", ""},
		{strings.Repeat("a", 1012) + "@example.com", ""}, // 1024 bytes as a localpart
		{strings.Repeat("a", 1011) + "@example.com", strings.Repeat("a", 1011) + "%example.com"},
	} {
		got, err := EmailToLocal(tc.addr)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("EmailToLocal(%q) = %q, want an error", tc.addr, got)
		case tc.want == "" && !errors.Is(err, ErrMalformed):
			t.Errorf("EmailToLocal(%q) error %v does not wrap ErrMalformed", tc.addr, err)
		case tc.want != "" && err != nil:
			t.Errorf("EmailToLocal(%q) failed: %v", tc.addr, err)
		case got != tc.want:
			t.Errorf("EmailToLocal(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestLocalToEmail(t *testing.T) {
	for _, tc := range []struct {
		local string
		want  string // "" means an error is expected
	}{
		{"bob%example.com", "bob@example.com"},
		{`bob\40example.com`, "bob@example.com"},
		{"bob.smith%example.com", "bob.smith@example.com"},
		{"Bob.Smith%Example.COM", "Bob.Smith@example.com"},
		{"straße%example.org", "straße@example.org"},
		{`o\27hara%example.com`, "o'hara@example.com"},
		{`o\27hara\40example.com`, "o'hara@example.com"},
		{"o'hara%example.com", "o'hara@example.com"}, // raw characters are accepted too
		{`john\20smith%example.com`, `"john smith"@example.com`},
		{`a\40b%example.com`, `"a@b"@example.com`},
		{`a%b\40example.com`, "a%b@example.com"},
		{"a%b%example.com", "a%b@example.com"},
		{`a\22b%example.com`, `"a\"b"@example.com`},
		{`a\b%example.com`, `"a\\b"@example.com`},
		{`a\5c5cb%example.com`, `"a\\5cb"@example.com`},
		{"a..%example.com", `"a.."@example.com`},
		{`bob%[ipv6\3a2001\3adb8\3a\3a1]`, "bob@[ipv6:2001:db8::1]"},
		{`bob%[192.0.2.1]`, "bob@[192.0.2.1]"},
		{`bob%[\3a\3a1]`, "bob@[::1]"},
		{"bob%bücher.de", "bob@bücher.de"},

		{"", ""},
		{"bob", ""},
		{"%example.com", ""},
		{"bob%", ""},
		{`\40example.com`, ""},
		{"bob%exa mple.com", ""},
		{"bob%example.com.", ""},
		{"bob%localhost", ""}, // a single label
		{"a%b%c", ""},         // not "a%b@c"
		{`a%b\40c`, ""},       // nor in the XEP-0106 form
		{"bob%1.2.3.4", ""},
		{"bob%[1.2.3]", ""},
		{`\20bob%example.com`, ""},
		{"a\tb%example.com", ""},
		{"bob%example.com>", ""},
		{"bob%example.com (x)", ""},
		{`a\2Fb%example.com`, ""},
		{"\xff%example.com", ""},
	} {
		got, err := LocalToEmail(tc.local)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("LocalToEmail(%q) = %q, want an error", tc.local, got)
		case tc.want == "" && !errors.Is(err, ErrMalformed):
			t.Errorf("LocalToEmail(%q) error %v does not wrap ErrMalformed", tc.local, err)
		case tc.want != "" && err != nil:
			t.Errorf("LocalToEmail(%q) failed: %v", tc.local, err)
		case got != tc.want:
			t.Errorf("LocalToEmail(%q) = %q, want %q", tc.local, got, tc.want)
		}
	}
}

func TestEmailRoundTrip(t *testing.T) {
	for _, addr := range []string{
		"bob@example.com",
		"Bob.Smith@example.com",
		"straße@example.org",
		"a%b@example.com",
		`"john smith"@example.com`,
		`"a@b"@example.com`,
		`"a\\5cb"@example.com`,
		`"a\"b"@example.com`,
		"bob@[ipv6:2001:db8::1]",
		"bob@[192.0.2.1]",
		"O'Hara@bücher.de",
	} {
		local, err := EmailToLocal(addr)
		if err != nil {
			t.Errorf("EmailToLocal(%q): %v", addr, err)
			continue
		}
		back, err := LocalToEmail(local)
		if err != nil || back != addr {
			t.Errorf("LocalToEmail(EmailToLocal(%q) = %q) = %q, %v", addr, local, back, err)
		}
		// What the XMPP server hands the component after folding still
		// decodes, to the folded address.
		folded, err := LocalToEmail(serverFold(local))
		if err != nil || folded != serverFold(addr) {
			t.Errorf("LocalToEmail(serverFold(%q)) = %q, %v; want %q", local, folded, err, serverFold(addr))
		}
	}
}

func TestEmailErrorMessages(t *testing.T) {
	for addr, want := range map[string]string{
		"bob":                   "no '@'",
		"Bob <bob@example.com>": "display name",
		`" bob"@example.com`:    "starts with a space",
		"bob@1.2.3.4":           "not a valid hostname",
		"bob@example.com ":      "not a bare email address",
	} {
		_, err := EmailToLocal(addr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("EmailToLocal(%q) error = %v, want it to mention %q", addr, err, want)
		}
	}
}
