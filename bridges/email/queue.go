package email

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

const (
	firstRetry = bridges.FirstRetry
	// maxAge is how long a mail is retried before it fails for good.
	maxAge     = bridges.MaxQueueAge
	dialTimout = 30 * time.Second
)

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

// send delivers one mail through the relay.
func (r *relayConfig) send(ctx context.Context, heloName, from, to string, raw []byte) error {
	c, err := r.dial(ctx, heloName)
	if err != nil {
		err = classify(err, false)
		var sec *securityError
		if errors.As(err, &sec) && sec.clear && !r.own {
			// The operator's relay wants the password in clear: the mail
			// waits until the relay (or its URL) is fixed.
			err.(*sendError).temporary = true
		}
		return err
	}
	defer c.Close()
	if err := r.auth(c); err != nil {
		return classify(err, false)
	}
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
	c.Quit()
	return nil
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

// wakeQueue makes the queue runner look for due jobs now.
func (b *Bridge) wakeQueue() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// runQueue delivers queued mail until ctx is done.
//
// When the store refuses to record what became of a mail (a job it will
// not remove or reschedule), the job stays due: the queue then waits
// (backing off) before it reads the jobs again rather than spin, and a
// job it is done with (delivered, or failed and reported) is never sent
// or reported again while the gateway runs; its removal is tried again.
func (b *Bridge) runQueue(ctx context.Context) {
	stuckPasses := 0
	for {
		b.drainQueue(ctx)
		wait := time.Hour
		if b.stuck {
			wait = backoff(stuckPasses, b.host.RetryMaxDelay())
			stuckPasses++
		} else {
			stuckPasses = 0
			if t, ok, err := b.host.Store().NextJobTime(ctx, b.host.Domain()); err == nil && ok {
				wait = time.Until(t)
			}
		}
		if wait < 0 {
			wait = 0
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-b.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (b *Bridge) drainQueue(ctx context.Context) {
	b.stuck = false
	for ctx.Err() == nil && !b.stuck {
		jobs, err := b.host.Store().DueJobs(ctx, b.host.Domain(), time.Now(), 16)
		if err != nil {
			b.host.Log().Error("cannot read the mail queue", "err", err)
			return
		}
		if len(jobs) == 0 {
			return
		}
		ran := 0
		for _, j := range jobs {
			if j.Kind != jobKind {
				continue
			}
			if b.finished.Has(j.ID) {
				b.remove(ctx, j.ID)
				continue
			}
			b.runJob(ctx, j.ID, j.Attempts, j.Created, j.Payload)
			ran++
		}
		if ran == 0 {
			return
		}
	}
}

// backoff is the delay before the next try after attempt failed ones.
func backoff(attempt int, max time.Duration) time.Duration { return bridges.RetryDelay(attempt, max) }

func (b *Bridge) runJob(ctx context.Context, id int64, attempts int, created time.Time, payload []byte) {
	st := b.host.Store()
	var j outJob
	if err := json.Unmarshal(payload, &j); err != nil {
		b.host.Log().Error("dropping an unreadable mail job", "job", id, "err", err)
		b.remove(ctx, id)
		return
	}
	relay, err := b.relayFor(ctx, j)
	if err == nil {
		err = relay.send(ctx, b.opts.Domain, j.From, j.To, j.Raw)
	}
	if err != nil && ctx.Err() != nil {
		return // shutting down: the job stays queued
	}
	if err == nil {
		// The relay took the mail: it is recorded as delivered even when
		// the gateway is stopping meanwhile.
		ctx, cancel := bridges.RecordContext(ctx)
		defer cancel()
		b.host.Log().Info("relay accepted a mail", "to", j.To, "job", id)
		b.remove(ctx, id)
		if j.Receipt && j.ID != "" {
			r := stanza.New("message", j.Contact, j.User, "", stanza.NewID())
			r.Add(xmlel.New(stanza.NSReceipts, "received").SetAttr("id", j.ID))
			b.host.SendMessage(ctx, r)
		}
		return
	}
	var se *sendError
	errors.As(err, &se)
	temporary := se != nil && se.temporary
	if se != nil && se.insecure {
		if b.opts.Insecure != nil {
			b.opts.Insecure.Add(1)
		}
		if temporary {
			b.host.Log().Error("mail delivery held back: the relay would get the password in clear; give it STARTTLS or use smtps://", "to", j.To, "job", id, "err", err)
		}
	}
	if temporary && time.Since(created) < maxAge {
		next := time.Now().Add(backoff(attempts, b.host.RetryMaxDelay()))
		b.host.Log().Warn("mail delivery failed; will retry", "to", j.To, "job", id, "err", err, "retry_at", next.Format(time.RFC3339))
		if err := st.RetryJob(ctx, id, next, err.Error()); err != nil {
			b.host.Log().Error("cannot reschedule a mail", "job", id, "err", err)
			b.stuck = true
		}
		return
	}
	if se != nil && se.insecure {
		b.host.Log().Error("mail delivery refused: the server cannot be reached safely; fix its certificate or the trusted roots", "to", j.To, "job", id, "err", err)
	} else {
		b.host.Log().Warn("mail delivery failed for good", "to", j.To, "job", id, "err", err, "attempts", attempts+1)
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
	if err := bridges.ReportFailure(ctx, b.host, j.Contact, j.User, j.ID, e, notice); err != nil {
		// Keep the job: it is tried, and reported, again later.
		b.host.Log().Error("cannot report a failed mail; will retry", "job", id, "err", err)
		if err := st.RetryJob(ctx, id, time.Now().Add(backoff(attempts, b.host.RetryMaxDelay())), err.Error()); err != nil {
			b.host.Log().Error("cannot reschedule a mail", "job", id, "err", err)
			b.stuck = true
		}
		return
	}
	b.remove(ctx, id)
}

// remove takes a job the queue is done with out of the store; when the
// store refuses, it is not run again, and its removal is tried on the
// next pass.
func (b *Bridge) remove(ctx context.Context, id int64) {
	if err := b.finished.Remove(ctx, b.host.Store(), id); err != nil {
		b.host.Log().Error("cannot remove a finished mail from the queue", "job", id, "err", err)
		b.stuck = true
	}
}
