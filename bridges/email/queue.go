package email

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

const dialTimout = 30 * time.Second

// relayIdle is how long the connection to the operator's relay stays open
// after a mail, for the next one (a server waits at least 5 minutes for a
// command: RFC 5321 section 4.5.3.2.7).
const relayIdle = 30 * time.Second

// keptCheckTimeout bounds the RSET that checks a kept connection before a
// mail: a relay that does not answer it soon is dialled again.
const keptCheckTimeout = 10 * time.Second

// relayConfig is a server mail leaves through: the parsed
// PASSERELLE_SMTP_RELAY, or a user's own submission server.
type relayConfig struct {
	addr, host  string
	implicitTLS bool
	// requireTLS refuses a server without TLS: a user's server not on
	// loopback, or a relay not on loopback that gets credentials.
	requireTLS     bool
	user, password string
	tls            *tls.Config // base TLS configuration (Options.TLSConfig)
	// own is a user's submission server: mail goes only after a login,
	// as that user, so that the user's provider decides the sender.
	own bool
	// connect opens the connection to addr (nil: directly; a user's
	// server: through the private-address check).
	connect func(ctx context.Context, hostport string) (net.Conn, error)
	// keep: the connection stays open after a mail for the next one (the
	// operator's relay: the queue sends its mails one after another),
	// until idle passes without one.
	keep bool
	idle time.Duration
	kept keptConn
}

// keptConn is the connection kept open to a relay between mails.
type keptConn struct {
	mu   sync.Mutex
	c    *smtp.Client
	idle *time.Timer
}

func parseRelay(s string) (*relayConfig, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid relay URL: %w", err)
	}
	if u.Scheme != "smtp" && u.Scheme != "smtps" {
		return nil, fmt.Errorf("relay URL scheme must be smtp or smtps, not %q", u.Scheme)
	}
	if u.Port() == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("relay URL %q needs host:port", u.Redacted())
	}
	r := &relayConfig{addr: u.Host, host: u.Hostname(), implicitTLS: u.Scheme == "smtps"}
	if u.User != nil {
		r.user = u.User.Username()
		r.password, _ = u.User.Password()
	}
	return r, nil
}

// sendError is a failed delivery attempt.
type sendError struct {
	temporary bool
	rcpt      bool // refused at RCPT (the address), else the message or the session
	insecure  bool // the server's certificate did not verify, or it has no TLS
	err       error
}

func (e *sendError) Error() string   { return e.err.Error() }
func (e *sendError) Unwrap() error   { return e.err }
func (e *sendError) Temporary() bool { return e.temporary }

func classify(err error, rcpt bool) error {
	var sec *securityError
	if errors.As(err, &sec) {
		return &sendError{insecure: true, err: err}
	}
	var pe *bridges.PrivateAddrError
	if errors.As(err, &pe) || errors.Is(err, errNoAuth) {
		return &sendError{err: err}
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return &sendError{temporary: se.Temporary() || se.Code/100 != 5, rcpt: rcpt, err: err}
	}
	return &sendError{temporary: true, err: err}
}

// send delivers one mail through the relay, on the kept connection when
// there is one that still answers.
func (r *relayConfig) send(ctx context.Context, heloName, from, to string, raw []byte) error {
	c, err := r.session(ctx, heloName)
	if err != nil {
		return err
	}
	sent := false
	defer func() {
		if sent && r.keep {
			r.keepOpen(c)
		} else {
			c.Close()
		}
	}()
	if err := c.Mail(from, nil); err != nil {
		return classify(err, false)
	}
	if err := c.Rcpt(to, nil); err != nil {
		return classify(err, true)
	}
	w, err := c.Data()
	if err != nil {
		return classify(err, false)
	}
	if _, err := w.Write(raw); err != nil {
		return classify(err, false)
	}
	if err := w.Close(); err != nil {
		return classify(err, false)
	}
	sent = true
	if !r.keep {
		c.Quit()
	}
	return nil
}

// session returns a connection ready for a mail: the kept one when RSET
// shows it still works, else a new one, logged in.
func (r *relayConfig) session(ctx context.Context, heloName string) (*smtp.Client, error) {
	if c := r.takeKept(); c != nil {
		c.CommandTimeout = keptCheckTimeout
		err := c.Reset()
		c.CommandTimeout = time.Minute
		if err == nil {
			return c, nil
		}
		// Closed by the relay while idle (or it fails): dial again.
		c.Close()
	}
	c, err := r.dial(ctx, heloName)
	if err != nil {
		err = classify(err, false)
		var sec *securityError
		if errors.As(err, &sec) && sec.clear && !r.own {
			// The operator's relay wants the password in clear: the mail
			// waits until the relay (or its URL) is fixed.
			err.(*sendError).temporary = true
		}
		return nil, err
	}
	if err := r.auth(c); err != nil {
		c.Close()
		return nil, classify(err, false)
	}
	return c, nil
}

// takeKept returns the kept connection, if any, which is no longer kept.
func (r *relayConfig) takeKept() *smtp.Client {
	k := &r.kept
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.c
	k.c = nil
	if k.idle != nil {
		k.idle.Stop()
	}
	return c
}

// keepOpen keeps c for the next mail, until r.idle passes without one.
func (r *relayConfig) keepOpen(c *smtp.Client) {
	k := &r.kept
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
	}
	k.c = c
	k.idle = time.AfterFunc(r.idle, func() {
		k.mu.Lock()
		idle := k.c == c
		if idle {
			k.c = nil
		}
		k.mu.Unlock()
		if idle {
			quit(c)
		}
	})
}

// closeKept closes the kept connection (the bridge stops).
func (r *relayConfig) closeKept() {
	if c := r.takeKept(); c != nil {
		quit(c)
	}
}

// quit ends a session politely, and closes its connection in any case.
func quit(c *smtp.Client) {
	c.CommandTimeout = keptCheckTimeout
	if c.Quit() != nil {
		c.Close()
	}
}

// auth logs in with the configured credentials. A user's own server must
// offer AUTH and take them.
func (r *relayConfig) auth(c *smtp.Client) error {
	if r.own && (r.user == "" || r.password == "") {
		return &authError{errors.New("no user name or password for the SMTP server")}
	}
	if r.user == "" {
		return nil
	}
	if ok, _ := c.Extension("AUTH"); !ok && r.own {
		return errNoAuth
	}
	if err := c.Auth(sasl.NewPlainClient("", r.user, r.password)); err != nil {
		return fmt.Errorf("relay refused the credentials: %w", err)
	}
	return nil
}

// checkLogin verifies a user's submission server at registration: it is
// reached safely and takes the user's login. Nothing is sent.
func (r *relayConfig) checkLogin(ctx context.Context, heloName string) error {
	c, err := r.dial(ctx, heloName)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := r.auth(c); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code/100 == 5 {
			return &authError{err}
		}
		return err
	}
	c.Quit()
	return nil
}

// dial connects to the relay: implicit TLS for smtps, STARTTLS when
// offered. A certificate that does not verify is a securityError.
func (r *relayConfig) dial(ctx context.Context, heloName string) (*smtp.Client, error) {
	c, err := r.dialTLS(ctx, heloName)
	if err != nil {
		if cerr, ok := certError(err, r.addr); ok {
			return nil, &securityError{err: cerr}
		}
	}
	return c, err
}

func (r *relayConfig) dialTLS(ctx context.Context, heloName string) (*smtp.Client, error) {
	dial := r.connect
	if dial == nil {
		d := net.Dialer{Timeout: dialTimout}
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	// The greeting and the handshakes end with ctx too (go-smtp bounds
	// them by its own timeouts only).
	closeOnDone := func(conn net.Conn) func() bool { return context.AfterFunc(ctx, func() { conn.Close() }) }
	tc := tlsFor(r.tls, r.host)
	conn, err := dial(ctx, r.addr)
	if err != nil {
		return nil, err
	}
	defer closeOnDone(conn)()
	if r.implicitTLS {
		conn = tls.Client(conn, tc)
	}
	c := smtp.NewClient(&smtpConn{Conn: conn})
	c.CommandTimeout = time.Minute
	c.SubmissionTimeout = 5 * time.Minute
	if err := c.Hello(heloName); err != nil {
		c.Close()
		return nil, err
	}
	if ok, _ := c.Extension("STARTTLS"); ok && !r.implicitTLS {
		// STARTTLS when offered: start again on a fresh connection.
		c.Close()
		conn, err = dial(ctx, r.addr)
		if err != nil {
			return nil, err
		}
		defer closeOnDone(conn)()
		c, err = smtp.NewClientStartTLS(&smtpConn{Conn: conn}, tc)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("STARTTLS with the relay failed: %w", err)
		}
		c.CommandTimeout = time.Minute
		c.SubmissionTimeout = 5 * time.Minute
		if err := c.Hello(heloName); err != nil {
			c.Close()
			return nil, err
		}
	} else if !ok && !r.implicitTLS && r.requireTLS {
		c.Close()
		return nil, &securityError{err: errors.New(r.addr + " offers no TLS; refusing to send the password in clear"), clear: true}
	}
	return c, nil
}

// errNotSMTP is a server whose first bytes cannot start an SMTP reply.
var errNotSMTP = errors.New("the server does not speak SMTP")

// smtpConn fails at once when the server's first bytes are not the three
// digits of an SMTP reply: net/textproto would take a banner such as
// "SSH-2.0-…" for the first line of a continued reply and wait for the
// next line until the timeout.
type smtpConn struct {
	net.Conn
	checked bool
}

func (c *smtpConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.checked && n > 0 {
		c.checked = true
		for _, ch := range p[:min(n, 3)] {
			if ch < '0' || ch > '9' {
				return 0, errNotSMTP
			}
		}
	}
	return n, err
}

// relayFor returns the server a job leaves through: the user's own
// submission server in mailbox mode, else the gateway's relay.
func (b *Bridge) relayFor(ctx context.Context, j outJob) (*relayConfig, error) {
	if !j.Own {
		if b.relay == nil {
			return nil, &sendError{err: errNoRelay}
		}
		return b.relay, nil
	}
	reg, err := b.host.Registration(ctx, stanza.Bare(j.User))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, &sendError{err: errors.New("you are no longer registered")}
		}
		return nil, &sendError{temporary: true, err: err}
	}
	f := reg.Fields
	if f["smtp_server"] == "" {
		return nil, &sendError{err: errors.New("your registration has no SMTP server any more")}
	}
	return b.submission(f), nil
}

// submission is the user's own SMTP submission server of registration
// fields f (smtp_server set): the SMTP credentials, else the IMAP ones.
func (b *Bridge) submission(f map[string]string) *relayConfig {
	host, port, _ := net.SplitHostPort(f["smtp_server"])
	return &relayConfig{addr: f["smtp_server"], host: host, implicitTLS: port == "465", requireTLS: !b.isLocal(f["smtp_server"]), tls: b.opts.TLSConfig,
		user: firstNonEmpty(f["smtp_username"], f["imap_username"]), password: firstNonEmpty(f["smtp_password"], f["imap_password"]),
		own: true, connect: b.dialUser}
}

// runJob delivers one queued mail through its relay: done, retried later,
// or failed for good (refused, or still failing temporarily on the last
// try): reported to the sender.
func (b *Bridge) runJob(ctx context.Context, qj bridges.Job) bridges.Outcome {
	var j outJob
	if err := json.Unmarshal(qj.Payload, &j); err != nil {
		b.host.Log().Error("dropping an unreadable mail job", "job", qj.ID, "err", err)
		return bridges.Done()
	}
	relay, err := b.relayFor(ctx, j)
	if err == nil {
		err = relay.send(ctx, b.opts.Domain, j.From, j.To, j.Raw)
	}
	if err != nil && ctx.Err() != nil {
		return bridges.Outcome{} // shutting down: the job stays queued
	}
	if err == nil {
		// The relay took the mail: the runner records it as delivered
		// even when the gateway is stopping meanwhile, then the receipt.
		b.host.Log().Info("relay accepted a mail", "to", j.To, "job", qj.ID)
		if !j.Receipt || j.ID == "" {
			return bridges.Done()
		}
		return bridges.Done().Then(func(ctx context.Context) {
			r := stanza.New("message", j.Contact, j.User, "", stanza.NewID())
			r.Add(xmlel.New(stanza.NSReceipts, "received").SetAttr("id", j.ID))
			if err := b.host.SendMessage(ctx, r); err != nil {
				b.host.Log().Error("cannot queue a delivery receipt", "job", qj.ID, "err", err)
			}
		})
	}
	var se *sendError
	errors.As(err, &se)
	temporary := se != nil && se.temporary
	if se != nil && se.insecure {
		if b.opts.Insecure != nil {
			b.opts.Insecure.Add(1)
		}
		if temporary {
			b.host.Log().Error("mail delivery held back: the relay would get the password in clear; give it STARTTLS or use smtps://", "to", j.To, "job", qj.ID, "err", err)
		}
	}
	if temporary && !qj.Final {
		b.host.Log().Warn("mail delivery failed; will retry", "to", j.To, "job", qj.ID, "err", err, "attempts", qj.Attempts+1)
		return bridges.Retry(err)
	}
	if se != nil && se.insecure {
		b.host.Log().Error("mail delivery refused: the server cannot be reached safely; fix its certificate or the trusted roots", "to", j.To, "job", qj.ID, "err", err)
	} else {
		b.host.Log().Warn("mail delivery failed for good", "to", j.To, "job", qj.ID, "err", err, "attempts", qj.Attempts+1)
	}
	cond, text := "not-acceptable", "Your mail to "+j.To+" was not delivered: "+err.Error()
	switch {
	case temporary:
		cond, text = "remote-server-timeout", "Your mail to "+j.To+" could not be delivered for "+bridges.MaxQueueAgeText+"; the last error: "+err.Error()
	case se != nil && se.rcpt:
		cond = "recipient-unavailable"
	}
	e := stanza.Errorf(cond, text)
	e.Type = "cancel"
	notice := text
	if p, perr := ParseMail(j.Raw); perr == nil && p.Subject != "" {
		notice += "\nSubject: " + p.Subject
	}
	return bridges.Failed(err, func(ctx context.Context) error {
		return bridges.ReportFailure(ctx, b.host, j.Contact, j.User, j.ID, e, notice)
	})
}
