package component

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

const nsStreams = "http://etherx.jabber.org/streams"

// ErrSecretRefused is the permanent failure of a handshake the server refused.
var ErrSecretRefused = errors.New("the XMPP server refused the component secret (PASSERELLE_XMPP_SECRET)")

// PermanentError is a connection failure retrying won't fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// StreamError is a <stream:error/> sent by the server.
type StreamError struct {
	Condition string
	Text      string
	// Host is the content of see-other-host: where the server sends us.
	Host string
}

func (e *StreamError) Error() string {
	s := "stream error: " + e.Condition
	if e.Host != "" {
		s += " " + e.Host
	}
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

func streamError(el *xmlel.Element) *StreamError {
	e := &StreamError{Condition: "undefined-condition"}
	for _, c := range el.Children {
		if c.Local == "text" {
			e.Text = c.Text
		} else if c.Space == "urn:ietf:params:xml:ns:xmpp-streams" {
			e.Condition = c.Local
			if c.Local == "see-other-host" {
				e.Host = strings.TrimSpace(c.Text)
			}
		}
	}
	return e
}

// refusal says what a stream error received during the handshake means for
// this gateway's configuration: the errors a reconnection would only repeat
// become a PermanentError naming the variable to change; the rest (conflict
// with a stale session, a server shutting down…) are returned as they are,
// to be retried and logged with the server's text.
func refusal(se *StreamError, addr, domain, domainVar string) error {
	switch se.Condition {
	case "not-authorized":
		// ejabberd answers so for a domain it does not host, too.
		said := ""
		if se.Text != "" {
			said = " (" + se.Text + ")"
		}
		return &PermanentError{fmt.Errorf("%w for %s%s; if the secret is right, check that the server hosts the component %s (%s)",
			ErrSecretRefused, domain, said, domain, domainVar)}
	case "host-unknown", "host-gone", "improper-addressing", "invalid-from":
		return &PermanentError{fmt.Errorf("the XMPP server at %s does not host the component %s (%w); set %s to a component domain configured on the server, or add %s to the server's configuration",
			addr, domain, se, domainVar, domain)}
	case "see-other-host":
		return &PermanentError{fmt.Errorf("the XMPP server at %s sends the component %s elsewhere (%w); set PASSERELLE_XMPP_ADDR to that server's component port", addr, domain, se)}
	case "invalid-namespace", "bad-format", "unsupported-version", "unsupported-stanza-type":
		return &PermanentError{fmt.Errorf("the XMPP server at %s does not speak the component protocol (XEP-0114) on this port (%w); check PASSERELLE_XMPP_ADDR", addr, se)}
	}
	return se
}

// conn is one authenticated XEP-0114 stream.
type conn struct {
	nc net.Conn
	rd *xmlel.Reader

	wmu sync.Mutex
	bw  *bufio.Writer
}

const (
	dialTimeout  = 10 * time.Second
	writeTimeout = 30 * time.Second
)

// dial connects to addr and authenticates as domain with secret; domainVar
// names the variable that configures the domain, for the messages.
func dial(ctx context.Context, addr, domain, domainVar, secret string) (*conn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The server writes small packets, and Prosody leaves Nagle's
	// algorithm on by default: see QuickACK.
	nc = bridges.QuickACK(nc)
	c := &conn{nc: nc, rd: xmlel.NewReader(nc, xmlel.DefaultLimits), bw: bufio.NewWriter(nc)}
	if err := c.handshake(domain, secret); err != nil {
		var se *StreamError
		if errors.As(err, &se) {
			err = refusal(se, addr, domain, domainVar)
		}
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *conn) handshake(domain, secret string) error {
	c.nc.SetDeadline(time.Now().Add(dialTimeout))
	defer c.nc.SetDeadline(time.Time{})
	open := fmt.Sprintf(`<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' to='%s'>`,
		stanza.NS, nsStreams, xmlEscape(domain))
	if _, err := io.WriteString(c.nc, open); err != nil {
		return err
	}
	st, err := c.rd.Open()
	if err != nil {
		return fmt.Errorf("failed to read stream header: %w", err)
	}
	if st.Name.Space != nsStreams || st.Name.Local != "stream" {
		return &PermanentError{fmt.Errorf("server did not open a stream (got <%s>): is %s an XMPP component port?", st.Name.Local, c.nc.RemoteAddr())}
	}
	var id string
	for _, a := range st.Attr {
		if a.Name.Local == "id" {
			id = a.Value
		}
	}
	if id == "" {
		// A server refusing the domain opens the stream only to send its
		// error (Prosody: host-unknown).
		if _, err := c.read(); err != nil {
			return fmt.Errorf("stream header without id: %w", err)
		}
		return errors.New("stream header without id")
	}
	sum := sha1.Sum([]byte(id + secret))
	if _, err := io.WriteString(c.nc, "<handshake>"+hex.EncodeToString(sum[:])+"</handshake>"); err != nil {
		return err
	}
	el, err := c.read()
	if err != nil {
		return err
	}
	if el.Local != "handshake" {
		return fmt.Errorf("unexpected <%s> instead of handshake", el.Local)
	}
	return nil
}

// read returns the next top-level element. A stream error is returned as
// *StreamError, the end of the stream as io.EOF, and a stanza over a limit
// of xmlel.DefaultLimits, which was skipped, as *xmlel.LimitError (the
// stream can still be read).
func (c *conn) read() (*xmlel.Element, error) {
	el, err := c.rd.Next()
	if err != nil {
		return nil, err
	}
	if el.Space == nsStreams && el.Local == "error" {
		return nil, streamError(el)
	}
	return el, nil
}

// write serialises and writes elements, flushing once.
func (c *conn) write(els ...*xmlel.Element) error {
	var buf bytes.Buffer
	for _, el := range els {
		el.Marshal(&buf, stanza.NS)
	}
	return c.writeRaw(buf.Bytes())
}

func (c *conn) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.bw.Write(b); err != nil {
		return err
	}
	return c.bw.Flush()
}

// close ends the stream politely, waiting briefly for the server's end.
func (c *conn) close() {
	c.writeRaw([]byte("</stream:stream>"))
	c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	c.nc.Close()
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
