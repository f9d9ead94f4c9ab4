package harness

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/component/xmlel"
)

const (
	nsClient  = "jabber:client"
	nsStreams = "http://etherx.jabber.org/streams"
	nsSASL    = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind    = "urn:ietf:params:xml:ns:xmpp-bind"
	nsSession = "urn:ietf:params:xml:ns:xmpp-session"
	nsTLS     = "urn:ietf:params:xml:ns:xmpp-tls"
	nsPing    = "urn:xmpp:ping"

	streamHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>`

	handshakeTimeout = 10 * time.Second
	iqTimeout        = 10 * time.Second
	writeTimeout     = 10 * time.Second
)

// Client is a minimal XMPP c2s client for tests: plaintext TCP, SASL PLAIN,
// resource binding, session establishment when advertised, then initial
// presence. A goroutine reads every stanza into a buffer; Expect and
// ExpectNone look at it. Server pings (XEP-0199) are answered
// automatically; nothing else is (subscriptions, disco, ... are up to the
// test).
type Client struct {
	JID    string // full JID after bind
	Domain string

	conn net.Conn
	r    *bufio.Reader
	dec  *xml.Decoder

	wmu sync.Mutex // serialises writes

	mu       sync.Mutex
	all      []*xmlel.Element // everything received, for Received() and dumps
	pending  []*xmlel.Element // not yet consumed by Expect
	changed  chan struct{}    // closed (and replaced) whenever something arrives
	readErr  error            // why the reader stopped
	readDone chan struct{}

	ids       atomic.Uint64
	closeOnce sync.Once
	// component: a component stream (DialComponent), whose stanzas must
	// carry a from attribute, answers pings from the address pinged.
	component bool
}

// DialOptions tunes DialWith.
type DialOptions struct {
	// NoInitialPresence skips the initial <presence/> after binding (the
	// server then neither delivers bare-JID messages nor flushes offline
	// messages to this resource).
	NoInitialPresence bool
	// TLS, when set, secures the connection: with STARTTLS, or from the
	// first byte when DirectTLS is set. The handshake fails when the
	// server does not offer STARTTLS.
	TLS       *tls.Config
	DirectTLS bool
	// Peer, when set, is filled with the server's TLS connection state.
	Peer *tls.ConnectionState
}

// Dial connects, authenticates as bareJID with password, binds resource,
// sends initial presence and waits until the server reflects it (that
// reflected presence is consumed; anything else, e.g. offline messages,
// stays buffered for Expect). It calls t.Fatal on failure; the client is
// closed in t.Cleanup.
func Dial(t testing.TB, addr, bareJID, password, resource string) *Client {
	t.Helper()
	return DialWith(t, addr, bareJID, password, resource, DialOptions{})
}

// DialWith is Dial with options.
func DialWith(t testing.TB, addr, bareJID, password, resource string, opts DialOptions) *Client {
	t.Helper()
	c, err := dial(addr, bareJID, password, resource, opts)
	if err != nil {
		t.Fatalf("harness: dial %s as %s: %v", addr, bareJID, err)
	}
	t.Cleanup(c.Close)
	return c
}

// DialErr is Dial returning the error instead of failing the test. The
// caller must Close the client.
func DialErr(addr, bareJID, password, resource string) (*Client, error) {
	return dial(addr, bareJID, password, resource, DialOptions{})
}

func dial(addr, bareJID, password, resource string, opts DialOptions) (*Client, error) {
	user, domain, ok := strings.Cut(bareJID, "@")
	if !ok || user == "" || domain == "" || strings.Contains(domain, "/") {
		return nil, fmt.Errorf("bad bare JID %q", bareJID)
	}
	conn, err := net.DialTimeout("tcp", addr, handshakeTimeout)
	if err != nil {
		return nil, err
	}
	if opts.TLS != nil && opts.DirectTLS {
		conn = tls.Client(conn, opts.TLS)
	}
	c := &Client{
		Domain:   domain,
		conn:     conn,
		r:        bufio.NewReader(conn),
		changed:  make(chan struct{}),
		readDone: make(chan struct{}),
	}
	if err := c.handshake(user, domain, password, resource, opts); err != nil {
		c.conn.Close()
		return nil, err
	}
	if tc, ok := c.conn.(*tls.Conn); ok && opts.Peer != nil {
		*opts.Peer = tc.ConnectionState()
	}
	go c.readLoop()
	if !opts.NoInitialPresence {
		// Wait for the server to reflect the presence to this resource
		// (RFC 6121 4.2.2): from then on the session is available, so a
		// message sent to the bare JID next is delivered, not stored.
		err := c.write("<presence/>")
		if err == nil {
			_, err = c.await(handshakeTimeout, func(e *xmlel.Element) bool {
				return IsPresence(e) && e.Attr("from") == c.JID && e.Attr("type") == ""
			})
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("initial presence: %w", err)
		}
	}
	return c, nil
}

func (c *Client) handshake(user, domain, password, resource string, opts DialOptions) error {
	_ = c.conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer func() { c.conn.SetDeadline(time.Time{}) }()

	features, err := c.openStream(domain)
	if err != nil {
		return err
	}
	if opts.TLS != nil && !opts.DirectTLS {
		if features.Child(nsTLS, "starttls") == nil {
			return fmt.Errorf("server does not offer STARTTLS (features: %s)", features)
		}
		if err := c.write("<starttls xmlns='" + nsTLS + "'/>"); err != nil {
			return err
		}
		if res, err := c.nextElement(); err != nil || res.Local != "proceed" {
			return fmt.Errorf("STARTTLS refused: %v %v", res, err)
		}
		tc := tls.Client(c.conn, opts.TLS)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		c.conn, c.r = tc, bufio.NewReader(tc)
		if features, err = c.openStream(domain); err != nil {
			return err
		}
	}
	var mechs []string
	for _, m := range features.Child(nsSASL, "mechanisms").ChildrenNamed(nsSASL, "mechanism") {
		mechs = append(mechs, strings.TrimSpace(m.Text))
	}
	hasPlain := false
	for _, m := range mechs {
		hasPlain = hasPlain || m == "PLAIN"
	}
	if !hasPlain {
		if st := features.Child(nsTLS, "starttls"); st != nil && st.Child(nsTLS, "required") != nil {
			return fmt.Errorf("server requires STARTTLS (features: %s)", features)
		}
		return fmt.Errorf("server does not offer SASL PLAIN without TLS (mechanisms %v)", mechs)
	}
	creds := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	if err := c.write(fmt.Sprintf("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>", nsSASL, creds)); err != nil {
		return err
	}
	res, err := c.nextElement()
	if err != nil {
		return fmt.Errorf("SASL: %w", err)
	}
	switch {
	case res.Space == nsSASL && res.Local == "success":
	case res.Space == nsSASL && res.Local == "failure":
		cond := ""
		if len(res.Children) > 0 {
			cond = res.Children[0].Local
		}
		return fmt.Errorf("SASL PLAIN failed for %s@%s: %s %s", user, domain, cond, strings.TrimSpace(res.ChildText("", "text")))
	default:
		return fmt.Errorf("SASL: unexpected %s", res)
	}

	// Stream restart: a fresh decoder on the same buffered reader (the
	// server sends nothing after <success/> until we open the new stream).
	features, err = c.openStream(domain)
	if err != nil {
		return err
	}
	if features.Child(nsBind, "bind") == nil {
		return fmt.Errorf("no resource binding offered: %s", features)
	}
	bind := "<bind xmlns='" + nsBind + "'/>"
	if resource != "" {
		bind = "<bind xmlns='" + nsBind + "'><resource>" + Esc(resource) + "</resource></bind>"
	}
	iq, err := c.syncIQ("set", bind)
	if err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	c.JID = strings.TrimSpace(iq.Child(nsBind, "bind").ChildText(nsBind, "jid"))
	if c.JID == "" {
		return fmt.Errorf("bind: no JID in %s", iq)
	}
	if features.Child(nsSession, "session") != nil {
		if _, err := c.syncIQ("set", "<session xmlns='"+nsSession+"'/>"); err != nil {
			return fmt.Errorf("session: %w", err)
		}
	}
	return nil
}

// openStream sends a stream header and reads the server's header and
// features.
func (c *Client) openStream(domain string) (*xmlel.Element, error) {
	c.dec = xml.NewDecoder(c.r)
	if err := c.write(fmt.Sprintf(streamHeader, xmlAttr(domain))); err != nil {
		return nil, err
	}
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return nil, fmt.Errorf("reading stream header: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Space == nsStreams && se.Name.Local == "stream" {
				break
			}
			return nil, fmt.Errorf("expected stream header, got <%s>", se.Name.Local)
		}
	}
	f, err := c.nextElement()
	if err != nil {
		return nil, fmt.Errorf("reading stream features: %w", err)
	}
	if f.Space != nsStreams || f.Local != "features" {
		return nil, fmt.Errorf("expected stream features, got %s", f)
	}
	return f, nil
}

// syncIQ is used during the handshake, before the reader goroutine runs.
func (c *Client) syncIQ(typ, payload string) (*xmlel.Element, error) {
	id := c.nextID()
	if err := c.write(fmt.Sprintf("<iq type='%s' id='%s'>%s</iq>", typ, id, payload)); err != nil {
		return nil, err
	}
	for {
		e, err := c.nextElement()
		if err != nil {
			return nil, err
		}
		if e.Local == "iq" && e.Attr("id") == id {
			if e.Attr("type") != "result" {
				return nil, fmt.Errorf("error reply: %s", e)
			}
			return e, nil
		}
		c.store(e, true) // early stanza: keep it for Expect
	}
}

// nextElement reads the next top-level element; a stream error or the end of
// the stream is returned as an error.
func (c *Client) nextElement() (*xmlel.Element, error) {
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			e, err := xmlel.Read(c.dec, t)
			if err != nil {
				return nil, err
			}
			if e.Space == nsStreams && e.Local == "error" {
				return e, &StreamError{El: e}
			}
			return e, nil
		case xml.EndElement:
			return nil, io.EOF // </stream:stream>
		}
	}
}

// StreamError is the error recorded when the server sent <stream:error/>.
type StreamError struct{ El *xmlel.Element }

func (e *StreamError) Error() string {
	cond := ""
	for _, ch := range e.El.Children {
		if ch.Local != "text" {
			cond = ch.Local
			break
		}
	}
	return "stream error: " + cond + " " + e.El.ChildText("", "text")
}

func (c *Client) readLoop() {
	defer close(c.readDone)
	for {
		e, err := c.nextElement()
		if e != nil {
			if e.Local == "iq" && e.Attr("type") == "get" && e.Child(nsPing, "ping") != nil {
				c.store(e, false)
				reply := "<iq type='result' id='" + xmlAttr(e.Attr("id")) + "'"
				if c.component {
					reply += " from='" + xmlAttr(e.Attr("to")) + "'"
				}
				if from := e.Attr("from"); from != "" {
					reply += " to='" + xmlAttr(from) + "'"
				}
				_ = c.write(reply + "/>")
				continue
			}
			c.store(e, true) // stream errors too, so tests can Expect them
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the stream")
			}
			c.mu.Lock()
			c.readErr = err
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			return
		}
	}
}

func (c *Client) store(e *xmlel.Element, pending bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all = append(c.all, e)
	if pending {
		c.pending = append(c.pending, e)
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) nextID() string { return fmt.Sprintf("harness-%d", c.ids.Add(1)) }

func (c *Client) write(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := io.WriteString(c.conn, s)
	return err
}

// Send writes a raw XML stanza built with fmt.Sprintf(format, args...).
// The arguments are NOT escaped: wrap arbitrary values with Esc. The result
// must be well-formed XML (checked before sending).
func (c *Client) Send(t testing.TB, format string, args ...any) {
	t.Helper()
	s := fmt.Sprintf(format, args...)
	if err := wellFormed(s); err != nil {
		t.Fatalf("harness: %s: Send: not well-formed XML (%v): %s", c.JID, err, s)
	}
	if err := c.write(s); err != nil {
		t.Fatalf("harness: %s: Send: %v", c.JID, err)
	}
}

// SendElement serialises e and sends it. A top-level element in the
// jabber:client namespace (or in no namespace) gets no xmlns attribute.
func (c *Client) SendElement(t testing.TB, e *xmlel.Element) {
	t.Helper()
	var b bytes.Buffer
	if e.Space == nsClient {
		e.Marshal(&b, nsClient)
	} else {
		e.Marshal(&b, "")
	}
	if err := c.write(b.String()); err != nil {
		t.Fatalf("harness: %s: SendElement: %v", c.JID, err)
	}
}

// IQ sends <iq type=typ to=to id=auto>payload</iq> (payload is raw XML; to
// may be empty) and waits up to 10 s for the result or error with that id,
// which it returns. It does not fail on type="error": the test checks.
func (c *Client) IQ(t testing.TB, typ, to string, payload string) *xmlel.Element {
	t.Helper()
	id := c.nextID()
	toAttr := ""
	if to != "" {
		toAttr = " to='" + xmlAttr(to) + "'"
	}
	c.Send(t, "<iq type='%s' id='%s'%s>%s</iq>", xmlAttr(typ), id, toAttr, payload)
	return c.Expect(t, iqTimeout, fmt.Sprintf("reply to iq %s id=%s to=%q", typ, id, to), func(e *xmlel.Element) bool {
		typ := e.Attr("type")
		return e.Local == "iq" && e.Attr("id") == id && (typ == "result" || typ == "error")
	})
}

// Expect waits up to timeout for a received stanza matching match and
// returns it, removing it from the buffer. Non-matching stanzas stay
// buffered for later Expect calls; earlier-buffered ones are looked at
// first. On timeout (or when the stream ended) it calls t.Fatalf with desc
// and a dump of what was received.
func (c *Client) Expect(t testing.TB, timeout time.Duration, desc string, match func(*xmlel.Element) bool) *xmlel.Element {
	t.Helper()
	e, err := c.await(timeout, match)
	if err != nil {
		t.Fatalf("harness: %s: %v waiting for %s\n%s", c.JID, err, desc, c.dump())
	}
	return e
}

// await is Expect returning an error.
func (c *Client) await(timeout time.Duration, match func(*xmlel.Element) bool) (*xmlel.Element, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	timedOut := false
	for {
		c.mu.Lock()
		snapshot := append([]*xmlel.Element(nil), c.pending...)
		changed, readErr := c.changed, c.readErr
		c.mu.Unlock()
		for _, e := range snapshot {
			if match(e) {
				c.consume(e)
				return e, nil
			}
		}
		if readErr != nil {
			return nil, fmt.Errorf("stream ended (%w)", readErr)
		}
		if timedOut {
			return nil, fmt.Errorf("timed out after %v", timeout)
		}
		select {
		case <-changed:
		case <-timer.C:
			timedOut = true // one last look at the buffer, then fail
		}
	}
}

// ExpectNone waits the whole of wait and fails the test if a stanza matching
// match is (or was already) in the buffer. Nothing is consumed.
func (c *Client) ExpectNone(t testing.TB, wait time.Duration, desc string, match func(*xmlel.Element) bool) {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for done := false; ; {
		c.mu.Lock()
		snapshot := append([]*xmlel.Element(nil), c.pending...)
		changed := c.changed
		c.mu.Unlock()
		for _, e := range snapshot {
			if match(e) {
				t.Fatalf("harness: %s: expected no %s, got %s\n%s", c.JID, desc, e, c.dump())
			}
		}
		if done {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			done = true
		}
	}
}

func (c *Client) consume(e *xmlel.Element) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.pending {
		if p == e {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			return
		}
	}
}

// Received returns every stanza received so far (consumed or not, pings
// included), oldest first.
func (c *Client) Received() []*xmlel.Element {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*xmlel.Element(nil), c.all...)
}

// Err is the reason the stream ended (nil while it is up). A
// *StreamError when the server sent <stream:error/>.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// dump describes the last received stanzas; "*" marks those still buffered
// (not consumed by Expect).
func (c *Client) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	pending := map[*xmlel.Element]bool{}
	for _, e := range c.pending {
		pending[e] = true
	}
	const maxShown, maxLen = 50, 600
	var b strings.Builder
	fmt.Fprintf(&b, "received %d stanzas (%d not consumed, marked *)", len(c.all), len(c.pending))
	start := max(0, len(c.all)-maxShown)
	if start > 0 {
		fmt.Fprintf(&b, "; the last %d:", maxShown)
	}
	b.WriteString("\n")
	for _, e := range c.all[start:] {
		mark := " "
		if pending[e] {
			mark = "*"
		}
		s := e.String()
		if len(s) > maxLen {
			s = s[:maxLen] + "…"
		}
		fmt.Fprintf(&b, "  %s %s\n", mark, s)
	}
	if c.readErr != nil {
		fmt.Fprintf(&b, "  (stream ended: %v)\n", c.readErr)
	}
	return b.String()
}

// Close sends unavailable presence and </stream:stream>, waits (up to 2 s)
// for the server to close its stream and its end of the TCP connection, and
// closes the connection. Safe to call more than once.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		if c.write("<presence type='unavailable'/></stream:stream>") == nil {
			select {
			case <-c.readDone:
				// The server closed its stream; wait until it also closes
				// the TCP connection, by which time it has (in practice)
				// ended the session, so a message sent next goes to
				// offline storage rather than to this dying session.
				_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, _ = io.Copy(io.Discard, c.r)
			case <-time.After(2 * time.Second):
			}
		}
		c.conn.Close()
		<-c.readDone
	})
}

// wellFormed checks that s is a sequence of well-formed XML elements (in
// the default namespace of a client stream; the stream: prefix is bound).
func wellFormed(s string) error {
	d := xml.NewDecoder(strings.NewReader("<w xmlns='" + nsClient + "' xmlns:stream='" + nsStreams + "'>" + s + "</w>"))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// xmlAttr escapes s for an attribute value.
func xmlAttr(s string) string { return Esc(s) }

// Helpers for match functions.

// IsMessage reports whether e is a <message/> (of any type).
func IsMessage(e *xmlel.Element) bool { return e.Local == "message" && e.Space == nsClient }

// IsPresence reports whether e is a <presence/>.
func IsPresence(e *xmlel.Element) bool { return e.Local == "presence" && e.Space == nsClient }

// IsIQ reports whether e is an <iq/>.
func IsIQ(e *xmlel.Element) bool { return e.Local == "iq" && e.Space == nsClient }

// Bare strips the resource from a JID.
func Bare(jid string) string {
	if i := strings.IndexByte(jid, '/'); i >= 0 {
		return jid[:i]
	}
	return jid
}

// MessageFrom matches a message whose sender's bare JID is from (or whose
// full JID is from, when from has a resource) and whose body contains
// bodySubstr ("" matches any message, with or without body).
func MessageFrom(from, bodySubstr string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		if !IsMessage(e) {
			return false
		}
		f := e.Attr("from")
		if f != from && Bare(f) != from {
			return false
		}
		return bodySubstr == "" || strings.Contains(e.ChildText(nsClient, "body"), bodySubstr)
	}
}
