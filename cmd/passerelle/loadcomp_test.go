package main

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// loadComponent is an XEP-0114 component on the benchmark's XMPP server
// whose domain's users are the gateway's users: one TCP stream carries all
// of them, so that the benchmark, not a client per user, is cheap, and the
// gateway is the bottleneck. It answers the IQs the gateways send to its
// users (a ping with a result, anything else with service-unavailable)
// and hands every other stanza to the handler set with handle, with the
// time it was read.
//
// The server writes small packets with Nagle's algorithm on: without
// TCP_QUICKACK on this socket (bridges.QuickACK), Linux's delayed ACK (up
// to 40 ms) would hold back what the server writes next, and be charged to
// the gateway's latency. The same goes for the IRC peer (ircLoad).
type loadComponent struct {
	domain string
	nc     net.Conn

	wmu sync.Mutex

	mu      sync.Mutex
	pending map[string]chan *xmlel.Element
	err     error
	ids     atomic.Int64
	handler atomic.Pointer[func(e *xmlel.Element, at time.Time)]
}

const nsComponent = "jabber:component:accept"

func dialLoad(b testing.TB, addr, domain, secret string) *loadComponent {
	b.Helper()
	nc, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		b.Fatal(err)
	}
	l := &loadComponent{domain: domain, nc: nc, pending: map[string]chan *xmlel.Element{}}
	b.Cleanup(func() { nc.Close() })
	l.handle(func(*xmlel.Element, time.Time) {})
	_ = nc.SetDeadline(time.Now().Add(wait))
	if _, err := fmt.Fprintf(nc, "<stream:stream xmlns='%s' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>",
		nsComponent, harness.Esc(domain)); err != nil {
		b.Fatal(err)
	}
	r := xmlel.NewReader(bridges.QuickACK(nc), xmlel.Limits{Depth: 32, Attrs: xmlel.MaxAttrs, Size: xmlel.MaxStanzaSize})
	root, err := r.Open()
	if err != nil {
		b.Fatalf("load component: stream header: %v", err)
	}
	var id string
	for _, a := range root.Attr {
		if a.Name.Local == "id" {
			id = a.Value
		}
	}
	sum := sha1.Sum([]byte(id + secret))
	if _, err := fmt.Fprintf(nc, "<handshake>%s</handshake>", hex.EncodeToString(sum[:])); err != nil {
		b.Fatal(err)
	}
	if e, err := r.Next(); err != nil || e.Local != "handshake" {
		b.Fatalf("load component: handshake refused: %v %v", e, err)
	}
	_ = nc.SetDeadline(time.Time{})
	go l.readLoop(r)
	return l
}

func (l *loadComponent) readLoop(r *xmlel.Reader) {
	for {
		e, err := r.Next()
		at := time.Now()
		if err != nil {
			var le *xmlel.LimitError
			if errors.As(err, &le) {
				continue
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("the server closed the stream")
			}
			l.mu.Lock()
			l.err = err
			for id, ch := range l.pending {
				close(ch)
				delete(l.pending, id)
			}
			l.mu.Unlock()
			return
		}
		if e.Local == "iq" {
			switch e.Attr("type") {
			case "result", "error":
				l.mu.Lock()
				ch := l.pending[e.Attr("id")]
				delete(l.pending, e.Attr("id"))
				l.mu.Unlock()
				if ch != nil {
					ch <- e
				}
			case "get", "set":
				l.answer(e)
			}
			continue
		}
		(*l.handler.Load())(e, at)
	}
}

// answer replies to an IQ addressed to one of the component's users.
func (l *loadComponent) answer(e *xmlel.Element) {
	reply := fmt.Sprintf("<iq type='result' id='%s' from='%s' to='%s'/>",
		harness.Esc(e.Attr("id")), harness.Esc(e.Attr("to")), harness.Esc(e.Attr("from")))
	if e.Child("urn:xmpp:ping", "ping") == nil {
		reply = fmt.Sprintf("<iq type='error' id='%s' from='%s' to='%s'><error type='cancel'>"+
			"<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
			harness.Esc(e.Attr("id")), harness.Esc(e.Attr("to")), harness.Esc(e.Attr("from")))
	}
	_ = l.write(reply)
}

// handle sets the function that gets every stanza other than IQs, on the
// reading goroutine.
func (l *loadComponent) handle(f func(e *xmlel.Element, at time.Time)) { l.handler.Store(&f) }

func (l *loadComponent) write(s string) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_, err := io.WriteString(l.nc, s)
	return err
}

// send writes one stanza (a format and its arguments, escaped by the
// caller).
func (l *loadComponent) send(b testing.TB, format string, args ...any) {
	if err := l.write(fmt.Sprintf(format, args...)); err != nil {
		b.Errorf("load component: %v", err)
	}
}

// iq sends an IQ from the user jid and returns the answer.
func (l *loadComponent) iq(from, typ, to, payload string) (*xmlel.Element, error) {
	id := fmt.Sprintf("load-%d", l.ids.Add(1))
	ch := make(chan *xmlel.Element, 1)
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return nil, l.err
	}
	l.pending[id] = ch
	l.mu.Unlock()
	if err := l.write(fmt.Sprintf("<iq type='%s' id='%s' from='%s' to='%s'>%s</iq>", typ, id, harness.Esc(from), harness.Esc(to), payload)); err != nil {
		return nil, err
	}
	t := time.NewTimer(benchWait)
	defer t.Stop()
	select {
	case e, ok := <-ch:
		if !ok {
			l.mu.Lock()
			defer l.mu.Unlock()
			return nil, l.err
		}
		return e, nil
	case <-t.C:
		return nil, fmt.Errorf("no answer from %s to %s", to, from)
	}
}

// ircLoad is a raw IRC client whose lines go to a handler with the time
// they were read.
type ircLoad struct {
	nc      net.Conn
	wmu     sync.Mutex
	handler atomic.Pointer[func(line string, at time.Time)]
}

func dialIRCLoad(b testing.TB, addr, nick string) *ircLoad {
	b.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	nc = bridges.QuickACK(nc)
	p := &ircLoad{nc: nc}
	b.Cleanup(func() { nc.Close() })
	registered := make(chan struct{})
	var once sync.Once
	p.handle(func(l string, _ time.Time) {
		if strings.Contains(l, " 001 ") {
			once.Do(func() { close(registered) })
		}
	})
	go func() {
		buf := make([]byte, 64<<10)
		var partial []byte
		for {
			n, err := nc.Read(buf)
			at := time.Now()
			if err != nil {
				return
			}
			partial = append(partial, buf[:n]...)
			for {
				i := strings.IndexByte(string(partial), '\n')
				if i < 0 {
					break
				}
				l := strings.TrimRight(string(partial[:i]), "\r")
				partial = partial[i+1:]
				if strings.HasPrefix(l, "PING ") {
					p.send(b, "PONG %s", l[5:])
				}
				(*p.handler.Load())(l, at)
			}
		}
	}()
	p.send(b, "NICK %s", nick)
	p.send(b, "USER %s 0 * :load peer", nick)
	select {
	case <-registered:
	case <-time.After(benchWait):
		b.Fatalf("irc %s: not registered", nick)
	}
	return p
}

func (p *ircLoad) handle(f func(line string, at time.Time)) { p.handler.Store(&f) }

func (p *ircLoad) send(b testing.TB, format string, args ...any) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if _, err := fmt.Fprintf(p.nc, format+"\r\n", args...); err != nil {
		b.Errorf("irc: %v", err)
	}
}
