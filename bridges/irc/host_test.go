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
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/component/xmlel"
	"passerelle/store"
	"passerelle/store/storetest"
)

// fakeHost is a bridges.Host recording what the bridge sends; Post runs
// functions on one goroutine, like the component's user goroutines.
type fakeHost struct {
	st      *storetest.Store
	ch      chan func(context.Context)
	out     chan *xmlel.Element
	allowed func(jid string) bool // nil: everyone
	logs    *logBuffer            // nil: the log is discarded
	ready   chan struct{}         // a token per Ready
}

// logBuffer keeps a fake host's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newFakeHost(t testing.TB) *fakeHost {
	st := storetest.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	h := &fakeHost{st: st, ch: make(chan func(context.Context), 256), out: make(chan *xmlel.Element, 10000), ready: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case fn := <-h.ch:
				fn(ctx)
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func (h *fakeHost) Domain() string               { return "irc.example" }
func (h *fakeHost) Send(st *xmlel.Element) error { h.out <- st; return nil }
func (h *fakeHost) Store() *store.Store          { return h.st.Store }
func (h *fakeHost) Log() *slog.Logger {
	if h.logs != nil {
		return slog.New(slog.NewTextHandler(h.logs, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
func (h *fakeHost) Ready() {
	select {
	case h.ready <- struct{}{}:
	default:
	}
}
func (h *fakeHost) RetryMaxDelay() time.Duration                    { return time.Minute }
func (h *fakeHost) Allowed(jid string) bool                         { return h.allowed == nil || h.allowed(jid) }
func (h *fakeHost) Registered(context.Context) ([]string, error)    { return nil, nil }
func (h *fakeHost) Contact(context.Context, string, string, string) {}
func (h *fakeHost) Setting(context.Context, string, string) (string, error) {
	return "", nil
}
func (h *fakeHost) Registration(context.Context, string) (*bridges.Registration, error) {
	return nil, store.ErrNotFound
}
func (h *fakeHost) SendMessage(ctx context.Context, sts ...*xmlel.Element) error {
	for _, st := range sts {
		h.out <- st
	}
	return nil
}
func (h *fakeHost) Deliver(ctx context.Context, key string, links []store.MessageID, sts ...*xmlel.Element) (bool, error) {
	if ok, err := h.st.Deliver(ctx, h.Domain(), store.Delivery{Key: key, Links: links}); !ok || err != nil {
		return ok, err
	}
	return true, h.SendMessage(ctx, sts...)
}
func (h *fakeHost) IQ(ctx context.Context, iq *xmlel.Element) (*xmlel.Element, error) {
	return nil, bridges.ErrDisconnected
}
func (h *fakeHost) Post(user string, fn func(context.Context)) error {
	h.ch <- fn
	return nil
}

// run runs fn on the user goroutine and waits for it.
func (h *fakeHost) run(fn func(context.Context)) {
	done := make(chan struct{})
	h.ch <- func(ctx context.Context) { fn(ctx); close(done) }
	<-done
}

// expect waits for a stanza matching match, skipping others.
func (h *fakeHost) expect(t *testing.T, desc string, match func(*xmlel.Element) bool) *xmlel.Element {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case st := <-h.out:
			if match(st) {
				return st
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", desc)
		}
	}
}

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

// startOn starts b on h until the test ends; the cleanup stops it and
// waits until it no longer uses the store (which h's cleanup, run after,
// closes).
func startOn(t testing.TB, b *Bridge, h *fakeHost) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, b, h)
	t.Cleanup(func() { cancel(); wait() })
	return ctx
}

// start runs b on h as the component does (bridges.Start).
func start(t testing.TB, ctx context.Context, b *Bridge, h *fakeHost) (wait func() error) {
	wait, err := bridges.Start(ctx, b, h, h.ready)
	if err != nil {
		t.Fatal(err)
	}
	return wait
}
