package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/xml"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// TestDialTLSRefusals: a client asked for TLS does not log in without it:
// a server that offers no STARTTLS, one that refuses it, and one whose
// certificate is not trusted each fail the dial, saying why.
func TestDialTLSRefusals(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t)
	for _, c := range []struct {
		name     string
		features string // inside <stream:features>
		answer   string // to <starttls/>; "" proceeds with TLS
		want     string
	}{
		{"no starttls", "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>", "", "does not offer STARTTLS"},
		{"refused", "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "STARTTLS refused"},
		{"untrusted", "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "", "TLS handshake"},
	} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			d := xml.NewDecoder(conn)
			d.Token() // the stream header
			io.WriteString(conn, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0'>"+
				"<stream:features>"+c.features+"</stream:features>")
			if _, err := d.Token(); err != nil { // <starttls/>
				return
			}
			if c.answer != "" {
				io.WriteString(conn, c.answer)
				return
			}
			io.WriteString(conn, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
			tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
		}()
		_, err = dial(l.Addr().String(), "u@localhost", "pw", "r", DialOptions{TLS: &tls.Config{ServerName: "localhost", RootCAs: x509.NewCertPool()}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: dial error %v, want %q", c.name, err, c.want)
		}
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
