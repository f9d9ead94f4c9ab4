package irc

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges/bridgetest"
)

// newFakeHost is the component side of the bridge in unit tests.
func newFakeHost(t testing.TB) *bridgetest.Host { return bridgetest.New(t, "irc.example") }

// fakeIRC is a scripted IRC server accepting one connection.
type fakeIRC struct {
	ln    net.Listener
	mu    sync.Mutex
	conn  net.Conn
	lines chan string
	ready chan struct{}
}

func newFakeIRC(t *testing.T) *fakeIRC {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFake(t, ln)
}

// newFakeIRCTLS is a fake server behind TLS with a self-signed
// certificate for "localhost".
func newFakeIRCTLS(t *testing.T) *fakeIRC {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	return serveFake(t, ln)
}

// closedLine is queued in lines when the client's connection ends.
const closedLine = "<closed>"

func serveFake(t *testing.T, ln net.Listener) *fakeIRC {
	f := &fakeIRC{ln: ln, lines: make(chan string, 1000), ready: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		if f.conn != nil {
			f.conn.Close()
		}
		f.mu.Unlock()
	})
	go func() {
		first := true
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if tc, ok := c.(*tls.Conn); ok {
				if tc.Handshake() != nil {
					c.Close()
					continue // a client that refused the certificate
				}
			}
			f.mu.Lock()
			f.conn = c
			f.mu.Unlock()
			if first {
				close(f.ready)
				first = false
			}
			r := bufio.NewReader(c)
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					f.lines <- closedLine
					break
				}
				f.lines <- strings.TrimRight(l, "\r\n")
			}
		}
	}()
	return f
}

// drop closes the current connection from the server side.
func (f *fakeIRC) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conn.Close()
}

func (f *fakeIRC) port() int { return f.ln.Addr().(*net.TCPAddr).Port }

func (f *fakeIRC) send(t *testing.T, lines ...string) {
	t.Helper()
	<-f.ready
	f.mu.Lock()
	c := f.conn
	f.mu.Unlock()
	for _, l := range lines {
		if _, err := io.WriteString(c, l+"\r\n"); err != nil {
			t.Fatal(err)
		}
	}
}

// expect waits for a line starting with prefix and returns it.
func (f *fakeIRC) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l := <-f.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
			if l == closedLine {
				t.Fatalf("connection closed while waiting for %q", prefix)
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %q", prefix)
		}
	}
}

// closed waits until the client closed the connection.
func (f *fakeIRC) closed(t *testing.T) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l := <-f.lines:
			if l == closedLine {
				return
			}
		case <-timeout:
			t.Fatal("the connection was not closed")
		}
	}
}

// startOn starts b on h until the test ends (bridgetest.Host.StartOn).
func startOn(t testing.TB, b *Bridge, h *bridgetest.Host) context.Context {
	t.Helper()
	return h.StartOn(t, b)
}

// start runs b on h as the component does (bridges.Start).
func start(t testing.TB, ctx context.Context, b *Bridge, h *bridgetest.Host) (wait func() error) {
	t.Helper()
	return h.Start(t, ctx, b)
}
