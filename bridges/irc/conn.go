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

	"golang.org/x/time/rate"

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
// condition, when set, is the stanza error a join waiting on it gets
// (item-not-found otherwise).
type connError struct {
	msg       string
	permanent bool
	condition string
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
		return nil, link{}, &connError{msg: pe.Error(), permanent: true, condition: "not-acceptable"}
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

// conn is one IRC connection: a reader goroutine delivering lines, and a
// bounded queue drained through a token bucket by a writer goroutine,
// each write with a deadline (PONG, PING and QUIT skip the bucket).
//
// The writer runs only while lines wait: the line that finds it stopped
// starts it, and it ends when nothing is left; the queue is a slice that
// exists only while lines wait. A writer for the whole life of the
// connection, draining a buffered channel of queueSize lines, measured
// 6 KB more heap per user in BenchmarkChannel (users=100: 15.6-15.8 KB
// in four runs, against 9.4-10.0 KB so and 9.4-9.7 KB with the old
// writer), the channel's buffer; the stacks did not differ beyond the
// noise (7.9-11.5 KB per user in all three).
type conn struct {
	nc        net.Conn
	encrypted bool
	limit     *rate.Limiter
	wake      chan struct{} // tells a writer waiting for a token of an urgent line or of close
	done      chan struct{} // closed when the writer has stopped and nc is closed
	// fence is the check of the instance's lease on the user
	// (bridges.Host.Fence), set before run: once it fails, nothing more
	// is written or delivered, and the connection closes.
	fence func() bool
	werr  error // the write that failed and stopped the connection: set by the writer, read after done

	mu      sync.Mutex
	queue   []string // throttled lines, at most queueSize
	prio    []string // PONG and PING, ahead of the queue, at most prioSize
	quit    *string  // set by close: the line (maybe empty) to end with
	writing bool     // the writer runs
	stopped bool
}

const prioSize = 16

func newConn(nc net.Conn, encrypted bool, perSec float64) *conn {
	if perSec <= 0 {
		perSec = defaultPerSec
	}
	return &conn{nc: nc, encrypted: encrypted, limit: rate.NewLimiter(rate.Limit(perSec), defaultBurst),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
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
		if werr := c.werr; werr != nil && (errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)) {
			// The reader ended because a failed write closed the
			// connection: that write's error is the reason.
			err = werr
		}
		closed(err)
	}()
}

// errFenced ends a connection whose fence failed: the instance's lease on
// its user ended, and another instance may hold the user's nick.
var errFenced = errors.New("the gateway instance no longer holds the user (its lease ended)")

// fenced reports whether the connection's fence failed.
func (c *conn) fenced() bool { return c.fence != nil && !c.fence() }

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
		if c.fenced() {
			return errFenced
		}
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

// send queues a line (already built by buildLine). It never waits: a
// full queue refuses the line.
func (c *conn) send(line string) error { return c.sendAll([]string{line}) }

// sendAll queues lines, all of them or, when the connection is closing
// or they do not all fit, none.
func (c *conn) sendAll(lines []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closingLocked():
		return errClosed
	case len(c.queue)+len(lines) > queueSize:
		return errQueueFull
	}
	c.queue = append(c.queue, lines...)
	c.startWriter()
	return nil
}

// closing reports whether the connection is closing or closed: nothing
// more can be queued.
func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closingLocked()
}

// closingLocked is closing with c.mu held.
func (c *conn) closingLocked() bool { return c.stopped || c.quit != nil }

// room reports how many lines can be queued now.
func (c *conn) room() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return queueSize - len(c.queue)
}

// sendPrio writes line ahead of the queue and of the bucket; it is
// dropped when prioSize lines already wait (a server flooding PINGs).
func (c *conn) sendPrio(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped && len(c.prio) < prioSize {
		c.prio = append(c.prio, line)
		c.startWriter()
	}
}

// close writes what is queued, then quitLine (if not empty), and closes
// the connection.
func (c *conn) close(quitLine string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closingLocked() {
		return
	}
	c.quit = &quitLine
	c.startWriter()
}

// startWriter starts the writer, or wakes it if it waits for a token.
// Called with c.mu held.
func (c *conn) startWriter() {
	if c.writing {
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return
	}
	c.writing = true
	go c.write()
}

// write is the writer: urgent lines first, queued lines as the bucket
// allows, and after close what is left, unthrottled, then the QUIT.
func (c *conn) write() {
	for {
		l, wait, last, ok := c.next()
		switch {
		case !ok:
			return
		case wait > 0:
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.wake: // an urgent line, or close
			}
			t.Stop()
		case !c.writeLine(l) || last:
			c.stop()
			return
		}
	}
}

// next takes the line to write next: an urgent one, else a queued one if
// the bucket has a token (else it says how long to wait; after close
// none is needed), else the QUIT after close. When there is nothing to
// write it ends the writer (ok is false).
func (c *conn) next() (line string, wait time.Duration, last, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case len(c.prio) > 0:
		line, c.prio = pop(c.prio)
		return line, 0, false, true
	case len(c.queue) > 0:
		if c.quit == nil {
			if r := c.limit.Reserve(); r.Delay() > 0 {
				wait = r.Delay()
				r.Cancel()
				return "", wait, false, true
			}
		}
		line, c.queue = pop(c.queue)
		return line, 0, false, true
	case c.quit != nil:
		return *c.quit, 0, true, true
	}
	c.writing = false
	return "", 0, false, false
}

// pop takes the first line of q; an emptied queue is released.
func pop(q []string) (string, []string) {
	l := q[0]
	q[0] = ""
	if q = q[1:]; len(q) == 0 {
		q = nil
	}
	return l, q
}

// writeLine writes one line; a failure is kept as the reason the
// connection ended.
func (c *conn) writeLine(l string) bool {
	if l == "" {
		return true
	}
	if c.fenced() {
		c.werr = errFenced
		return false
	}
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := io.WriteString(c.nc, l+"\r\n"); err != nil {
		c.werr = err
		return false
	}
	return true
}

// stop closes the connection and drops what is still queued.
func (c *conn) stop() {
	c.mu.Lock()
	c.stopped, c.writing = true, false
	c.queue, c.prio = nil, nil
	c.mu.Unlock()
	c.nc.Close()
	close(c.done)
}
