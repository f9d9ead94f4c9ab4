package irc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	irc "gopkg.in/irc.v4"
)

const (
	dialTimeout   = 10 * time.Second
	writeTimeout  = 30 * time.Second
	idleTimeout   = 90 * time.Second // silence before we PING the server
	queueSize     = 256
	maxInputLine  = 8191 + maxLine // tags + message
	defaultBurst  = 10
	defaultPerSec = 2.0
)

// connError is a connection failure; Permanent ones are not retried.
type connError struct {
	msg       string
	permanent bool
}

func (e *connError) Error() string   { return e.msg }
func (e *connError) Temporary() bool { return !e.permanent }

// errQueueFull is returned when a connection's send queue is full.
var errQueueFull = errors.New("the irc send queue is full")

// errClosed is returned when sending on a closed connection.
var errClosed = errors.New("the irc connection is closed")

// dialer opens IRC connections.
type dialer struct {
	allowPrivate bool
	resolver     *net.Resolver
}

// checkAddr refuses loopback, private, link-local and unspecified
// addresses unless allowed.
func (d *dialer) checkAddr(ip netip.Addr) error {
	ip = ip.Unmap()
	if d.allowPrivate {
		return nil
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() ||
		netip.MustParsePrefix("100.64.0.0/10").Contains(ip) {
		return &connError{msg: "connections to the private address " + ip.String() + " are not allowed on this gateway", permanent: true}
	}
	return nil
}

// dial resolves server, checks its addresses, and tries the TLS ports,
// then the plain ones. It reports whether the link is encrypted.
func (d *dialer) dial(ctx context.Context, server string, cfg netConfig) (net.Conn, bool, error) {
	ips, err := d.resolver.LookupNetIP(ctx, "ip", server)
	if err != nil {
		return nil, false, &connError{msg: "cannot resolve " + server + ": " + err.Error()}
	}
	var ok []netip.Addr
	for _, ip := range ips {
		if err := d.checkAddr(ip); err != nil {
			return nil, false, err
		}
		ok = append(ok, ip)
	}
	if len(ok) == 0 {
		return nil, false, &connError{msg: "no address for " + server}
	}
	var errs []string
	try := func(port int, secure bool) (net.Conn, bool) {
		for _, ip := range ok {
			addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
			if err == nil && secure {
				tc := tls.Client(nc, &tls.Config{ServerName: server, InsecureSkipVerify: !cfg.VerifyCert})
				if err = tc.HandshakeContext(dctx); err != nil {
					nc.Close()
				} else {
					nc = tc
				}
			}
			cancel()
			if err == nil {
				return nc, true
			}
			kind := "port"
			if secure {
				kind = "TLS port"
			}
			errs = append(errs, fmt.Sprintf("%s %d: %v", kind, port, err))
		}
		return nil, false
	}
	for _, p := range cfg.TLSPorts {
		if nc, ok := try(p, true); ok {
			return nc, true, nil
		}
	}
	for _, p := range cfg.Ports {
		if nc, ok := try(p, false); ok {
			return nc, false, nil
		}
	}
	if len(errs) == 0 {
		return nil, false, &connError{msg: "no port configured for " + server, permanent: true}
	}
	return nil, false, &connError{msg: "cannot connect to " + server + ": " + strings.Join(errs, "; ")}
}

// conn is one IRC connection: a reader goroutine delivering parsed
// messages, and a writer goroutine draining a bounded queue through a
// token bucket (PONG and QUIT skip the queue).
type conn struct {
	nc        net.Conn
	encrypted bool
	out       chan string
	prio      chan string
	quit      chan string
	done      chan struct{} // closed when the writer has stopped
	closeOnce sync.Once
	perSec    float64
	burst     float64
}

func newConn(nc net.Conn, encrypted bool, perSec float64) *conn {
	if perSec <= 0 {
		perSec = defaultPerSec
	}
	return &conn{nc: nc, encrypted: encrypted, out: make(chan string, queueSize), prio: make(chan string, 16),
		quit: make(chan string, 1), done: make(chan struct{}), perSec: perSec, burst: defaultBurst}
}

// run starts the reader and writer; deliver is called (from the reader)
// for each message, closed once with the reason the connection ended.
func (c *conn) run(deliver func(*irc.Message), closed func(error)) {
	go c.writer()
	go func() {
		err := c.read(deliver)
		c.close("")
		<-c.done
		closed(err)
	}()
}

func (c *conn) read(deliver func(*irc.Message)) error {
	r := bufio.NewReaderSize(c.nc, 4096)
	pinged := false
	for {
		c.nc.SetReadDeadline(time.Now().Add(idleTimeout))
		line, err := readLine(r)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				pinged = true
				c.sendPrio("PING :passerelle")
				continue
			}
			if errors.Is(err, io.EOF) {
				return errors.New("the server closed the connection")
			}
			return err
		}
		pinged = false
		m, err := parseLine(line)
		if err != nil {
			continue
		}
		if m.Prefix == nil {
			m.Prefix = &irc.Prefix{}
		}
		switch m.Command {
		case "PING":
			if l, err := buildLine("PONG", m.Trailing()); err == nil {
				c.sendPrio(l)
			}
			continue
		case "PONG":
			continue
		case "ERROR":
			deliver(m)
			continue
		}
		deliver(m)
	}
}

// readLine reads one line, refusing lines longer than maxInputLine.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := r.ReadSlice('\n')
		b = append(b, chunk...)
		if err == nil {
			return strings.TrimRight(string(b), "\r\n"), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
		if len(b) > maxInputLine {
			return "", errors.New("the server sent a line that is too long")
		}
	}
}

func (c *conn) writer() {
	defer close(c.done)
	tokens, last := c.burst, time.Now()
	write := func(l string) bool {
		c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := io.WriteString(c.nc, l+"\r\n")
		return err == nil
	}
	// finish writes what is still queued (a PART before the QUIT), then
	// the QUIT line, and closes.
	finish := func(q string) {
		for q != "" {
			select {
			case l := <-c.out:
				if !write(l) {
					q = ""
				}
				continue
			default:
			}
			write(q)
			break
		}
		c.nc.Close()
	}
	for {
		select {
		case l := <-c.prio:
			if !write(l) {
				c.nc.Close()
				return
			}
			continue
		case q := <-c.quit:
			finish(q)
			return
		default:
		}
		select {
		case l := <-c.prio:
			if !write(l) {
				c.nc.Close()
				return
			}
		case q := <-c.quit:
			finish(q)
			return
		case l := <-c.out:
			now := time.Now()
			tokens = min(c.burst, tokens+now.Sub(last).Seconds()*c.perSec)
			last = now
			for tokens < 1 {
				t := time.NewTimer(time.Duration((1 - tokens) / c.perSec * float64(time.Second)))
				select {
				case p := <-c.prio:
					write(p)
					t.Stop()
				case <-t.C:
				case q := <-c.quit:
					t.Stop()
					write(l)
					finish(q)
					return
				}
				now = time.Now()
				tokens = min(c.burst, tokens+now.Sub(last).Seconds()*c.perSec)
				last = now
			}
			tokens--
			if !write(l) {
				c.nc.Close()
				return
			}
		}
	}
}

// send queues a line (already built by buildLine).
func (c *conn) send(line string) error {
	select {
	case <-c.done:
		return errClosed
	default:
	}
	select {
	case c.out <- line:
		return nil
	default:
		return errQueueFull
	}
}

// room reports how many lines can be queued now.
func (c *conn) room() int { return cap(c.out) - len(c.out) }

func (c *conn) sendPrio(line string) {
	select {
	case c.prio <- line:
	default:
	}
}

// close writes quitLine (if not empty) ahead of the queue and closes the
// connection.
func (c *conn) close(quitLine string) {
	c.closeOnce.Do(func() { c.quit <- quitLine })
}
