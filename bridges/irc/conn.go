package irc

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"passerelle/bridges"
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
	resolver     bridges.Resolver
	roots        *x509.CertPool // trusted for TLS; nil: the system's
}

// link is how a connection was made.
type link struct {
	port     int
	tls      bool
	verified bool // the server's certificate was verified
}

// secure reports whether the link is secure in the sense of strict
// transport security: TLS with a verified certificate.
func (l link) secure() bool { return l.tls && l.verified }

// dial resolves server, refuses private addresses unless allowed
// (bridges.ResolvePublic), and tries the TLS ports, then the plain ones, on
// the checked addresses. It reports how the connection was made.
func (d *dialer) dial(ctx context.Context, server string, cfg netConfig) (net.Conn, link, error) {
	ok, err := bridges.ResolvePublic(ctx, d.resolver, server, d.allowPrivate)
	var pe *bridges.PrivateAddrError
	if errors.As(err, &pe) {
		return nil, link{}, &connError{msg: pe.Error(), permanent: true}
	} else if err != nil {
		return nil, link{}, &connError{msg: err.Error()}
	}
	var errs []string
	try := func(port int, secure bool) (net.Conn, bool) {
		for _, ip := range ok {
			addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
			if err == nil {
				nc = bridges.QuickACK(nc) // IRC servers write small packets, with Nagle's algorithm on
			}
			if err == nil && secure {
				tc := tls.Client(nc, &tls.Config{ServerName: server, InsecureSkipVerify: !cfg.VerifyCert, RootCAs: d.roots})
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
			return nc, link{port: p, tls: true, verified: cfg.VerifyCert}, nil
		}
	}
	for _, p := range cfg.Ports {
		if nc, ok := try(p, false); ok {
			return nc, link{port: p}, nil
		}
	}
	if len(errs) == 0 {
		return nil, link{}, &connError{msg: "no port configured for " + server, permanent: true}
	}
	return nil, link{}, &connError{msg: "cannot connect to " + server + ": " + strings.Join(errs, "; ")}
}

// conn is one IRC connection: a reader goroutine delivering parsed
// messages, and a bounded queue of lines drained through a token bucket
// (PONG, PING and QUIT skip the throttle).
//
// An idle connection costs one goroutine (the reader) and a small read
// buffer: the queue is a slice that exists only while lines wait, and the
// writing goroutine runs only while there is something to write. While it
// waits for a token, a timer holds its place.
type conn struct {
	nc        net.Conn
	encrypted bool
	perSec    float64
	burst     float64
	done      chan struct{} // closed when the writing has stopped and nc is closed

	mu      sync.Mutex
	queue   []string    // throttled lines, at most queueSize
	prio    []string    // PONG and PING, ahead of the queue
	quit    *string     // set by close: the line (maybe empty) to end with
	tokens  float64     // the bucket
	last    time.Time   // when tokens was last refilled
	writing bool        // a goroutine is draining
	timer   *time.Timer // waiting for a token
	stopped bool
	werr    error // the write that failed and stopped the connection
}

const prioSize = 16

func newConn(nc net.Conn, encrypted bool, perSec float64) *conn {
	if perSec <= 0 {
		perSec = defaultPerSec
	}
	return &conn{nc: nc, encrypted: encrypted, done: make(chan struct{}), perSec: perSec, burst: defaultBurst,
		tokens: defaultBurst, last: time.Now()}
}

// run starts the reader; deliver is called (from the reader) for each
// line but PING and PONG, closed once with the reason the connection
// ended. The reader does not parse the lines: parsing (irc.ParseMessage)
// needs more stack than reading, and the runtime halves a grown stack
// only while less than a quarter of it is in use (counting its reserve),
// which a waiting reader never is: a reader whose stack grew to 4 KB once
// keeps it. Left to the goroutine that handles the message, parsing
// leaves the reader at the smallest stack.
func (c *conn) run(deliver func(line string), closed func(error)) {
	go func() {
		err := c.read(deliver)
		c.close("")
		<-c.done
		c.mu.Lock()
		werr := c.werr
		c.mu.Unlock()
		if werr != nil && (errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)) {
			// The reader ended because a failed write closed the
			// connection: that write's error is the reason.
			err = werr
		}
		closed(err)
	}()
}

// readBuffer is the reader's buffer: one ordinary line fits; longer ones
// (message tags) are read in pieces.
const readBuffer = 512

// read reads lines until the connection fails. What it does besides
// reading is in functions of their own (not inlined), so that their
// variables are not in read's frame while it waits: the stack a waiting
// reader uses then fits in the smallest goroutine stack.
func (c *conn) read(deliver func(line string)) error {
	r := newLineReader(c.nc)
	pinged := false
	for {
		c.setReadDeadline()
		line, err := readLine(r)
		if err != nil {
			if err = c.readFailed(err, &pinged); err != nil {
				return err
			}
			continue
		}
		pinged = false
		if !c.answered(line) {
			deliver(line)
		}
	}
}

// newLineReader returns the reader's buffered reader, on the heap rather
// than in read's frame.
//
//go:noinline
func newLineReader(nc net.Conn) *bufio.Reader { return bufio.NewReaderSize(nc, readBuffer) }

//go:noinline
func (c *conn) setReadDeadline() { c.nc.SetReadDeadline(time.Now().Add(idleTimeout)) }

// readFailed returns the error that ends the connection, or nil after a
// first silence, which is answered with a PING.
//
//go:noinline
func (c *conn) readFailed(err error, pinged *bool) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !*pinged {
		*pinged = true
		c.sendPrio("PING :passerelle")
		return nil
	}
	if errors.Is(err, io.EOF) {
		return errors.New("the server closed the connection")
	}
	return err
}

// answered handles PING (answered at once) and PONG (dropped), and
// reports whether line was one of them.
//
//go:noinline
func (c *conn) answered(line string) bool {
	cmd, params := command(line)
	switch {
	case strings.EqualFold(cmd, "PING"):
		if l, err := buildLine("PONG", lastParam(params)); err == nil {
			c.sendPrio(l)
		}
		return true
	case strings.EqualFold(cmd, "PONG"):
		return true
	}
	return false
}

// command returns the command of an IRC line and what follows it (the
// parameters), past the tags and the prefix, without parsing the line.
// Like the parser, it ignores a line's trailing CR and LF.
func command(line string) (cmd, params string) {
	line = strings.TrimLeft(strings.TrimRight(line, "\r\n"), " ")
	if strings.HasPrefix(line, "@") {
		_, line, _ = strings.Cut(line, " ")
		line = strings.TrimLeft(line, " ")
	}
	if strings.HasPrefix(line, ":") {
		_, line, _ = strings.Cut(line, " ")
		line = strings.TrimLeft(line, " ")
	}
	cmd, params, _ = strings.Cut(line, " ")
	return cmd, params
}

// lastParam returns the last parameter in params: the trailing one
// (after " :"), or else the last word.
func lastParam(params string) string {
	params = strings.TrimLeft(params, " ")
	if strings.HasPrefix(params, ":") {
		return params[1:]
	}
	if i := strings.Index(params, " :"); i >= 0 {
		return params[i+2:]
	}
	params = strings.TrimRight(params, " ")
	return params[strings.LastIndexByte(params, ' ')+1:]
}

// readLine reads one line, refusing lines longer than maxInputLine.
func readLine(r *bufio.Reader) (string, error) {
	chunk, err := r.ReadSlice('\n')
	if err == nil {
		return strings.TrimRight(string(chunk), "\r\n"), nil
	}
	b := append([]byte(nil), chunk...)
	for errors.Is(err, bufio.ErrBufferFull) {
		if len(b) > maxInputLine {
			return "", errors.New("the server sent a line that is too long")
		}
		chunk, err = r.ReadSlice('\n')
		b = append(b, chunk...)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// send queues a line (already built by buildLine).
func (c *conn) send(line string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.stopped || c.quit != nil:
		return errClosed
	case len(c.queue) >= queueSize:
		return errQueueFull
	}
	c.queue = append(c.queue, line)
	c.kick()
	return nil
}

// room reports how many lines can be queued now.
func (c *conn) room() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return queueSize - len(c.queue)
}

// sendPrio writes line ahead of the queue and of the throttle; it is
// dropped when prioSize lines already wait (a server flooding PINGs).
func (c *conn) sendPrio(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped && len(c.prio) < prioSize {
		c.prio = append(c.prio, line)
		c.kick()
	}
}

// close writes what is queued, then quitLine (if not empty), and closes
// the connection.
func (c *conn) close(quitLine string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.quit != nil {
		return
	}
	c.quit = &quitLine
	c.kick()
}

// kick starts the writing goroutine unless it runs, or waits for a token
// with nothing urgent to write. Called with c.mu held.
func (c *conn) kick() {
	if c.writing || c.stopped {
		return
	}
	if c.timer != nil {
		if len(c.prio) == 0 && c.quit == nil {
			return
		}
		c.timer.Stop()
		c.timer = nil
	}
	c.writing = true
	go c.drain()
}

// writeStep is what drain does next.
type writeStep int

const (
	stepIdle  writeStep = iota // nothing to write now
	stepWrite                  // write the line
	stepLast                   // write the line (if any), then close
)

// next picks the next line to write. Called with c.mu held.
func (c *conn) next() (string, writeStep) {
	if len(c.prio) > 0 {
		l := c.prio[0]
		c.prio = c.prio[1:]
		if len(c.prio) == 0 {
			c.prio = nil
		}
		return l, stepWrite
	}
	if c.quit == nil && len(c.queue) > 0 {
		now := time.Now()
		c.tokens = min(c.burst, c.tokens+now.Sub(c.last).Seconds()*c.perSec)
		c.last = now
		if c.tokens < 1 {
			wait := time.Duration((1 - c.tokens) / c.perSec * float64(time.Second))
			c.timer = time.AfterFunc(wait, c.tick)
			return "", stepIdle
		}
		c.tokens--
	}
	if len(c.queue) > 0 {
		l := c.queue[0]
		c.queue[0] = ""
		c.queue = c.queue[1:]
		if len(c.queue) == 0 {
			c.queue = nil
		}
		return l, stepWrite
	}
	if c.quit != nil {
		return *c.quit, stepLast
	}
	return "", stepIdle
}

// tick is the token timer.
func (c *conn) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = nil
	c.kick()
}

// drain writes lines until there is nothing to write now.
func (c *conn) drain() {
	for {
		c.mu.Lock()
		l, step := c.next()
		if step == stepIdle {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		ok := true
		if l != "" {
			c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := io.WriteString(c.nc, l+"\r\n"); err != nil {
				ok = false
				c.mu.Lock()
				c.werr = err
				c.mu.Unlock()
			}
		}
		if !ok || step == stepLast {
			c.stop()
			return
		}
	}
}

// stop closes the connection and drops what is still queued.
func (c *conn) stop() {
	c.mu.Lock()
	c.stopped, c.writing = true, false
	c.queue, c.prio = nil, nil
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	c.nc.Close()
	close(c.done)
}
