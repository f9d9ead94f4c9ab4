package email

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// fakeDNS is a Resolver over fixed TXT records and addresses; a name it
// does not know does not exist, and a name mapped to "TEMPFAIL" times out.
type fakeDNS map[string][]string

func (d fakeDNS) lookup(name string) ([]string, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	v, ok := d[name]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	if len(v) == 1 && v[0] == "TEMPFAIL" {
		return nil, &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	return v, nil
}

func (d fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) { return d.lookup(name) }
func (d fakeDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (d fakeDNS) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	v, err := d.lookup("ip:" + host)
	var ips []net.IPAddr
	for _, s := range v {
		ips = append(ips, net.IPAddr{IP: net.ParseIP(s)})
	}
	return ips, err
}
func (d fakeDNS) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

// dkimKey is a signing key with its DNS record.
type dkimKey struct {
	signer crypto.Signer
	record string
}

func newRSAKey(t testing.TB) dkimKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return dkimKey{k, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)}
}

func newEd25519Key(t testing.TB) dkimKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return dkimKey{priv, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}
}

// sign returns raw (LF line ends) as CRLF with a DKIM signature of domain.
func sign(t testing.TB, raw, domain, selector string, k dkimKey) []byte {
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(strings.ReplaceAll(raw, "\n", "\r\n")),
		&dkim.SignOptions{Domain: domain, Selector: selector, Signer: k.signer})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

func TestCheckSender(t *testing.T) {
	corpKey, attackerKey := newRSAKey(t), newEd25519Key(t)
	dns := fakeDNS{
		"corp.example":                   {"v=spf1 ip4:192.0.2.1 -all"},
		"mail.corp.example":              {"v=spf1 ip4:192.0.2.2 -all"},
		"_dmarc.corp.example":            {"v=DMARC1; p=reject; rua=mailto:d@corp.example"},
		"s1._domainkey.corp.example":     {corpKey.record},
		"_dmarc.strict.example":          {"v=DMARC1; p=reject; aspf=s"},
		"strict.example":                 {"v=spf1 -all"},
		"bounce.strict.example":          {"v=spf1 ip4:192.0.2.3 -all"},
		"_dmarc.quar.example":            {"v=DMARC1; p=quarantine"},
		"_dmarc.parent.example":          {"v=DMARC1; p=reject; sp=quarantine"},
		"_dmarc.flaky.example":           {"TEMPFAIL"},
		"attacker.invalid":               {"v=spf1 ip4:203.0.113.9 -all"},
		"s2._domainkey.attacker.invalid": {attackerKey.record},
	}
	b := New(Options{Domain: testDomain, Inbound: InboundOptions{Resolver: dns}})
	from := func(addr string) string {
		return "From: " + addr + "\nTo: alice@" + testDomain + "\nSubject: hi\nMessage-ID: <1@x>\n\nhello\n"
	}
	attacker := net.ParseIP("203.0.113.9")
	cases := []struct {
		name             string
		ip               net.IP
		mailFrom         string
		raw              []byte
		verified, reject bool
	}{
		{"forged From, p=reject", attacker, "nobody@attacker.invalid", crlf(from("Boss <boss@corp.example>")), false, true},
		{"forged From with a null sender", attacker, "", crlf(from("boss@corp.example")), false, true},
		{"aligned DKIM", attacker, "nobody@attacker.invalid", sign(t, from("boss@corp.example"), "corp.example", "s1", corpKey), true, false},
		{"DKIM of another domain", attacker, "nobody@attacker.invalid", sign(t, from("boss@corp.example"), "attacker.invalid", "s2", attackerKey), false, true},
		{"DKIM body changed", attacker, "nobody@attacker.invalid",
			bytes.Replace(sign(t, from("boss@corp.example"), "corp.example", "s1", corpKey), []byte("hello"), []byte("pay me"), 1), false, true},
		{"aligned SPF", net.ParseIP("192.0.2.1"), "boss@corp.example", crlf(from("boss@corp.example")), true, false},
		{"relaxed SPF alignment", net.ParseIP("192.0.2.2"), "bounce@mail.corp.example", crlf(from("boss@corp.example")), true, false},
		{"strict SPF alignment", net.ParseIP("192.0.2.3"), "x@bounce.strict.example", crlf(from("a@strict.example")), false, true},
		{"SPF pass of another domain", attacker, "nobody@attacker.invalid", crlf(from("boss@corp.example")), false, true},
		{"p=quarantine", attacker, "nobody@attacker.invalid", crlf(from("x@quar.example")), false, false},
		{"subdomain policy", attacker, "nobody@attacker.invalid", crlf(from("x@sub.parent.example")), false, false},
		{"organizational policy", attacker, "nobody@attacker.invalid", crlf(from("x@sub.corp.example")), false, true},
		{"no policy", attacker, "nobody@attacker.invalid", crlf(from("x@nopolicy.example")), false, false},
		{"no policy but aligned SPF", attacker, "x@attacker.invalid", crlf(from("x@attacker.invalid")), true, false},
		{"DNS failure", attacker, "nobody@attacker.invalid", crlf(from("x@flaky.example")), false, false},
		{"two From fields", attacker, "nobody@attacker.invalid", crlf("From: boss@corp.example\n" + from("x@attacker.invalid")), false, false},
		{"two From addresses", attacker, "nobody@attacker.invalid", crlf(from("boss@corp.example, x@attacker.invalid")), false, false},
		{"no From", attacker, "nobody@attacker.invalid", crlf("Subject: x\n\nhello\n"), false, false},
		{"unreadable header", attacker, "nobody@attacker.invalid", crlf("From: boss@corp.example\nnot a header field\n\nhello\n"), false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := b.checkSender(context.Background(), c.ip, "client.test", c.mailFrom, c.raw)
			if v.verified != c.verified || v.reject != c.reject {
				t.Fatalf("verified %v reject %v (%s), want %v %v", v.verified, v.reject, v.detail, c.verified, c.reject)
			}
		})
	}
}

func TestTrustedAuthResults(t *testing.T) {
	// No DNS at all: the trusted MTA's word is used.
	b := New(Options{Domain: testDomain, Inbound: InboundOptions{Resolver: fakeDNS{}, TrustedAuthServ: "mx.example.org"}})
	body := "From: boss@corp.example\nSubject: hi\n\nhello\n"
	cases := []struct {
		name     string
		headers  string
		verified bool
	}{
		{"trusted pass", "Authentication-Results: mx.example.org; spf=fail; dmarc=pass header.from=corp.example\n", true},
		{"trusted pass with a version", "Authentication-Results: mx.example.org 1; dmarc=pass header.from=corp.example\n", true},
		{"trusted fail", "Authentication-Results: mx.example.org; dmarc=fail header.from=corp.example\n", false},
		{"pass for another domain", "Authentication-Results: mx.example.org; dmarc=pass header.from=attacker.invalid\n", false},
		{"other authserv-id", "Authentication-Results: mx.attacker.invalid; dmarc=pass header.from=corp.example\n", false},
		{"forged one below the trusted one", "Authentication-Results: mx.example.org; dmarc=fail header.from=corp.example\n" +
			"Authentication-Results: mx.example.org; dmarc=pass header.from=corp.example\n", false},
		{"none", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := b.checkSender(context.Background(), net.ParseIP("127.0.0.1"), "mx.example.org", "x@attacker.invalid", crlf(c.headers+body))
			if v.verified != c.verified || v.reject {
				t.Fatalf("verified %v reject %v (%s), want %v", v.verified, v.reject, v.detail, c.verified)
			}
		})
	}
}
