package harness

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net"
	"testing"
	"time"
)

// DialComponent connects to a server's XEP-0114 port as the component
// domain with secret, like a peer of the gateway (another component), and
// returns a Client reading its stanzas (Send, Expect; stanzas must carry a
// from attribute). It calls t.Fatal on failure; the connection is closed
// in t.Cleanup.
func DialComponent(t testing.TB, addr, domain, secret string) *Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, handshakeTimeout)
	if err != nil {
		t.Fatalf("harness: component %s: %v", domain, err)
	}
	c := &Client{JID: domain, Domain: domain, component: true, conn: conn, r: bufio.NewReader(conn),
		changed: make(chan struct{}), readDone: make(chan struct{})}
	if err := c.componentHandshake(domain, secret); err != nil {
		conn.Close()
		t.Fatalf("harness: component %s: %v", domain, err)
	}
	go c.readLoop()
	t.Cleanup(c.Close)
	return c
}

func (c *Client) componentHandshake(domain, secret string) error {
	_ = c.conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.conn.SetDeadline(time.Time{})
	c.dec = xml.NewDecoder(c.r)
	err := c.write(fmt.Sprintf("<stream:stream xmlns='jabber:component:accept' xmlns:stream='%s' to='%s'>", nsStreams, xmlAttr(domain)))
	if err != nil {
		return err
	}
	var id string
	for id == "" {
		tok, err := c.dec.Token()
		if err != nil {
			return fmt.Errorf("reading the stream header: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "stream" {
			for _, a := range se.Attr {
				if a.Name.Local == "id" {
					id = a.Value
				}
			}
			if id == "" {
				return fmt.Errorf("stream header without id")
			}
		}
	}
	sum := sha1.Sum([]byte(id + secret))
	if err := c.write("<handshake>" + hex.EncodeToString(sum[:]) + "</handshake>"); err != nil {
		return err
	}
	for {
		e, err := c.nextElement()
		if err != nil {
			return fmt.Errorf("handshake refused: %w", err)
		}
		if e.Local == "handshake" {
			return nil
		}
		c.store(e, true)
	}
}
