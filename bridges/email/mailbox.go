package email

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/store"
)

// mailboxConfig is a user's own mailbox (mailbox mode).
type mailboxConfig struct {
	IMAPServer, IMAPUser, IMAPPassword string

	tls        *tls.Config // base TLS configuration (Options.TLSConfig)
	requireTLS bool        // the server is not local: no password in clear
	// dial connects to the server through the private-address check
	// (Bridge.dialUser).
	dial func(ctx context.Context, hostport string) (net.Conn, error)
}

// secure completes cfg with the bridge's TLS and address policy.
func (b *Bridge) secure(cfg mailboxConfig) mailboxConfig {
	cfg.tls = b.opts.TLSConfig
	cfg.requireTLS = !b.isLocal(cfg.IMAPServer)
	cfg.dial = b.dialUser
	return cfg
}

func mailboxFromFields(f map[string]string) (mailboxConfig, bool) {
	c := mailboxConfig{IMAPServer: f["imap_server"], IMAPUser: f["imap_username"], IMAPPassword: f["imap_password"]}
	return c, c.IMAPServer != ""
}

// errUnregistered stops a watcher whose user has no registration.
var errUnregistered = errors.New("the user is not registered")

// authError is a refused login: retrying will not help until the
// credentials change.
type authError struct{ err error }

func (e *authError) Error() string { return "the server refused the login: " + e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// securityError is a server that cannot be reached safely: no TLS, or a
// certificate that does not verify. It does not fix itself.
type securityError struct {
	err   error
	clear bool // the server offers no TLS (else its certificate failed)
}

func (e *securityError) Error() string { return e.err.Error() }
func (e *securityError) Unwrap() error { return e.err }

// errNoAuth is a submission server that does not ask for a login: it
// would take any sender address from anyone.
var errNoAuth = errors.New("the server offers no authentication (SMTP AUTH)")

// userServerText says why a server a user named cannot be used, in words
// of the gateway's own: never what the server sent nor how the connection
// failed (refused, closed, a foreign banner, a timeout all read the same),
// so that registration cannot be used to probe ports. The detail goes to
// the log.
func userServerText(err error) string {
	var pe *bridges.PrivateAddrError
	var ae *authError
	var se *securityError
	switch {
	case errors.As(err, &pe):
		return pe.Error() + "."
	case errors.Is(err, errNoAuth):
		return "the server does not ask for a login; only a server that authenticates you is accepted."
	case errors.As(err, &ae):
		return "the server refused the login; check the user name and password."
	case errors.As(err, &se) && se.clear:
		return "the server offers no TLS; the password was not sent in clear."
	case errors.As(err, &se):
		return "the TLS certificate of the server is not trusted."
	}
	return "the server could not be reached, or it did not answer as expected."
}

// dialUser connects to hostport, a server a user named (IMAP, SMTP
// submission): the host is resolved, private addresses are refused unless
// PASSERELLE_MAILBOX_ALLOW_PRIVATE (bridges.ResolvePublic), and the
// checked addresses themselves are dialled, never the name again.
func (b *Bridge) dialUser(ctx context.Context, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	ips, err := bridges.ResolvePublic(ctx, b.resolver, host, b.opts.AllowPrivate)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: dialTimout}
	var errs []error
	for _, ip := range ips {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("failed to connect to %s: %w", hostport, errors.Join(errs...))
}

// tlsFor returns the TLS configuration of a connection to host.
func tlsFor(base *tls.Config, host string) *tls.Config {
	c := &tls.Config{}
	if base != nil {
		c = base.Clone()
	}
	c.ServerName = host
	c.InsecureSkipVerify = false
	return c
}

// certError reports whether err is a certificate that failed verification,
// and says so in words.
func certError(err error, server string) (error, bool) {
	var ve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &ve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) {
		return fmt.Errorf("the TLS certificate of %s is not trusted: %w", server, err), true
	}
	return err, false
}

// isLoopback reports whether addr's host is a loopback address or name.
func isLoopback(hostport string) bool {
	host, _, _ := net.SplitHostPort(hostport)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// dialIMAP connects and logs in: implicit TLS on port 993, STARTTLS when
// offered, plaintext only to a loopback server.
func dialIMAP(ctx context.Context, cfg mailboxConfig, opts *imapclient.Options) (*imapclient.Client, error) {
	host, port, err := net.SplitHostPort(cfg.IMAPServer)
	if err != nil {
		return nil, err
	}
	opts.TLSConfig = tlsFor(cfg.tls, host)
	if port == "993" && opts.TLSConfig.NextProtos == nil {
		opts.TLSConfig.NextProtos = []string{"imap"} // as imapclient.DialTLS
	}
	c, conn, err := connectIMAP(ctx, cfg, port == "993", opts)
	if err != nil {
		if cerr, ok := certError(err, cfg.IMAPServer); ok {
			return nil, &securityError{err: cerr}
		}
		var pe *bridges.PrivateAddrError
		var se *securityError
		if errors.As(err, &pe) || errors.As(err, &se) {
			return nil, err
		}
		return nil, fmt.Errorf("failed to connect to %s: %w", cfg.IMAPServer, err)
	}
	if err := c.Login(cfg.IMAPUser, cfg.IMAPPassword).Wait(); err != nil {
		c.Close()
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo && ie.Code != imap.ResponseCodeUnavailable {
			return nil, &authError{err}
		}
		return nil, fmt.Errorf("failed to log in to %s: %w", cfg.IMAPServer, err)
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

// connectIMAP opens the connection dialIMAP logs in on, and returns the
// network connection under it, whose deadline bounds the greeting, TLS and
// login (a server that never greets cannot hold the gateway).
func connectIMAP(ctx context.Context, cfg mailboxConfig, implicitTLS bool, opts *imapclient.Options) (*imapclient.Client, net.Conn, error) {
	dial := func() (net.Conn, error) {
		conn, err := cfg.dial(ctx, cfg.IMAPServer)
		if err == nil {
			conn.SetDeadline(time.Now().Add(dialTimout))
		}
		return conn, err
	}
	conn, err := dial()
	if err != nil {
		return nil, nil, err
	}
	if implicitTLS {
		tc := tls.Client(conn, opts.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, nil, err
		}
		return imapclient.New(tc, opts), conn, nil
	}
	c := imapclient.New(conn, opts)
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, nil, err
	}
	if !c.Caps().Has(imap.CapStartTLS) {
		if cfg.requireTLS {
			c.Close()
			return nil, nil, &securityError{err: fmt.Errorf("%s offers no TLS; refusing to send the password in clear", cfg.IMAPServer), clear: true}
		}
		return c, conn, nil
	}
	// STARTTLS: start again on a fresh connection.
	c.Close()
	if conn, err = dial(); err != nil {
		return nil, nil, err
	}
	c, err = imapclient.NewStartTLS(conn, opts)
	return c, conn, err
}

// checkMailbox verifies a mailbox configuration at registration and
// returns the positions, by mailbox name, of INBOX and of the Sent mailbox
// when there is one: mail after them is forwarded, or shown as sent.
// sentErr is why the Sent mailbox could not be looked at (INBOX could):
// no reason to refuse the registration, as the watcher's first look at
// Sent starts from its end.
func checkMailbox(ctx context.Context, cfg mailboxConfig) (pos map[string]imapPos, sentErr, err error) {
	type result struct {
		pos          map[string]imapPos
		sentErr, err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		c, err := dialIMAP(ctx, cfg, &imapclient.Options{})
		if err == nil {
			r.pos, r.sentErr, err = startPositions(c)
			c.Logout().Wait()
			c.Close()
		}
		r.err = err
		done <- r
	}()
	select {
	case r := <-done:
		return r.pos, r.sentErr, r.err
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// startPositions returns the ends of INBOX and of the Sent mailbox, and
// apart why Sent could not be looked at.
func startPositions(c *imapclient.Client) (pos map[string]imapPos, sentErr, err error) {
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, nil, err
	}
	pos = map[string]imapPos{"INBOX": startPos(sel)}
	sent, err := findSent(c)
	if err != nil || sent == "" {
		return pos, err, nil
	}
	end, err := sentEnd(c, sent)
	if err != nil {
		return pos, err, nil
	}
	pos[sent] = end
	return pos, nil, nil
}

// startPos is the position at the end of a selected mailbox.
func startPos(sel *imap.SelectData) imapPos {
	p := imapPos{UIDValidity: sel.UIDValidity}
	if sel.UIDNext > 0 {
		p.LastUID = uint32(sel.UIDNext) - 1
	}
	return p
}

// startWatcher (re)starts the INBOX watcher of user.
// The new watcher starts only once the old one has stopped, so two never
// forward the same mail.
func (b *Bridge) startWatcher(user string, cfg mailboxConfig) {
	cfg = b.secure(cfg)
	ctx, cancel := context.WithCancel(b.runCtx)
	w := &watcher{b: b, user: user, cfg: cfg, notify: make(chan struct{}, 1), poll: b.opts.PollInterval,
		cancel: cancel, done: make(chan struct{}), fence: b.host.Fence()}
	b.mu.Lock()
	old := b.watchers[user]
	b.watchers[user] = w
	b.mu.Unlock()
	go func() {
		if old != nil {
			old.stop()
		}
		w.run(ctx)
	}()
}

// stopWatcher stops user's watcher and waits until it has.
func (b *Bridge) stopWatcher(user string) {
	b.mu.Lock()
	w := b.watchers[user]
	delete(b.watchers, user)
	b.mu.Unlock()
	if w != nil {
		w.stop()
	}
}

// stop cancels the watcher and waits for it to finish the mail it is
// forwarding (a forwarded mail and its recorded position go together).
func (w *watcher) stop() {
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		w.b.host.Log().Error("a mailbox watcher did not stop", "user", w.user)
	}
}

// watcher forwards new mail of one user's INBOX, once: the last forwarded
// UID and the UIDVALIDITY are kept in imap_state.
type watcher struct {
	b        *Bridge
	user     string
	cfg      mailboxConfig
	notify   chan struct{}
	poll     time.Duration
	reported bool // the user was told about a refused login
	noSent   bool // the mailbox was logged for having no Sent mailbox
	// sentFailed: a session logged that it could not read Sent (dropSent)
	sentFailed bool
	cancel     context.CancelFunc
	done       chan struct{} // closed when run returns
	// fence checks the lease under which the instance held the user when
	// the watcher started (bridges.Host.Fence): once it fails, the
	// watcher forwards nothing more, drops its connection without a
	// word and stops; Released follows.
	fence func() bool
}

// errFenced ends a watcher whose fence failed: another instance may
// watch the mailbox now.
var errFenced = errors.New("the gateway instance no longer holds the user (its lease ended)")

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	log := w.b.host.Log().With("user", w.user, "imap", w.cfg.IMAPServer)
	reconnect := bridges.Backoff{First: time.Second, Max: w.b.host.RetryMaxDelay(), Jitter: 0.2}
	failures := 0 // sessions ended in a row without reaching the mailbox
	for ctx.Err() == nil {
		err := errFenced
		if w.fence() {
			err = w.session(ctx, func() { failures = 0 })
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errFenced) {
			log.Info("mailbox watcher stopped: the instance no longer holds the user (its lease ended)")
			return
		}
		if errors.Is(err, errUnregistered) {
			log.Info("mailbox watcher stopped: the user is not registered")
			w.b.mu.Lock()
			if w.b.watchers[w.user] == w {
				delete(w.b.watchers, w.user)
			}
			w.b.mu.Unlock()
			w.cancel()
			return
		}
		var ae *authError
		var se *securityError
		var pe *bridges.PrivateAddrError
		var delay time.Duration
		if errors.As(err, &ae) {
			if !w.reported {
				w.reported = true
				w.tell(ctx, "Your mailbox "+w.cfg.IMAPServer+": "+userServerText(err)+" Update the password with the gateway's registration or settings; it will keep trying.")
			}
			delay = w.b.host.RetryMaxDelay()
		} else if errors.As(err, &se) || errors.As(err, &pe) {
			log.Error("cannot reach the mailbox safely", "err", err)
			if !w.reported {
				w.reported = true
				w.tell(ctx, "Your mailbox "+w.cfg.IMAPServer+" cannot be reached safely: "+userServerText(err)+" Your password was not sent. Fix the server or change it in the gateway's registration or settings; it will keep trying.")
			}
			delay = w.b.host.RetryMaxDelay()
		} else {
			delay = reconnect.Delay(failures)
			failures++
		}
		log.Warn("mailbox connection ended; reconnecting", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// tell sends the user a message from the gateway domain.
func (w *watcher) tell(ctx context.Context, text string) {
	m := stanza.Message(w.b.host.Domain(), w.user, "chat", stanza.NewID(), text)
	if err := w.b.host.SendMessage(ctx, m); err != nil {
		w.b.host.Log().Error("cannot tell the user about the mailbox", "user", w.user, "err", err)
	}
}

// session runs one IMAP connection until it fails or ctx ends.
func (w *watcher) session(ctx context.Context, connected func()) error {
	opts := &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				select {
				case w.notify <- struct{}{}:
				default:
				}
			}
		},
	}}
	c, err := dialIMAP(ctx, w.cfg, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return fmt.Errorf("failed to select INBOX: %w", err)
	}
	if w.reported {
		w.reported = false
		w.tell(ctx, "Your mailbox "+w.cfg.IMAPServer+" works again.")
	}
	connected()
	pos, ok, err := w.b.loadPos(ctx, w.user)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		// First connection: forward what arrives from now on.
		pos = startPos(sel)
	case pos.UIDValidity != sel.UIDValidity:
		// The UIDs were renumbered: those we knew mean nothing now, and
		// which mail is new cannot be told; start from the new end.
		w.b.host.Log().Warn("the mailbox changed its UIDVALIDITY", "user", w.user, "old", pos.UIDValidity, "new", sel.UIDValidity)
		w.tell(ctx, "Your mailbox "+w.cfg.IMAPServer+" was renumbered (UIDVALIDITY changed); mail already in it is not forwarded again.")
		pos = startPos(sel)
	}
	if err := w.b.savePos(ctx, w.user, pos); err != nil {
		return err
	}
	sent, err := w.openSent(c)
	if err != nil {
		return err
	}
	idle := (c.Caps().Has(imap.CapIdle) || c.Caps().Has(imap.CapIMAP4rev2)) && !w.b.noIdle
	for {
		if !w.fence() {
			return errFenced
		}
		if err := w.fetchNew(ctx, c, &pos); err != nil {
			return err
		}
		// known is closed once the grants are known, when the new
		// sent mails wait for them.
		known, more, err := w.checkSent(ctx, c, sent, sel.UIDValidity, pos.LastUID)
		if err != nil {
			return err
		}
		if more {
			continue
		}
		// IDLE is renewed now and then: a safety net for a missed
		// update, a check that the connection still works, and the look
		// at Sent.
		renewal := 5 * w.poll
		if sent.name != "" {
			renewal = w.poll
		}
		if idle {
			// Updates the server held back arrive with a NOOP; some
			// servers do not send them when IDLE starts.
			if err := c.Noop().Wait(); err != nil {
				return err
			}
			select {
			case <-w.notify:
				continue
			default:
			}
			cmd, err := c.Idle()
			if err != nil {
				return fmt.Errorf("IDLE failed: %w", err)
			}
			ended := make(chan error, 1)
			go func() { ended <- cmd.Wait() }()
			renew := time.NewTimer(renewal)
			select {
			case <-ctx.Done():
			case <-w.notify:
			case <-renew.C:
			case <-known:
			case err := <-ended:
				renew.Stop()
				// IDLE ends by itself only when the connection is lost.
				return fmt.Errorf("connection lost during IDLE: %v", err)
			}
			renew.Stop()
			if !w.fence() {
				return errFenced // closed without a DONE
			}
			if err := cmd.Close(); err != nil {
				return err
			}
			if err := <-ended; err != nil {
				return fmt.Errorf("IDLE failed: %w", err)
			}
		} else {
			t := time.NewTimer(w.poll)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-known:
			}
			t.Stop()
			if !w.fence() {
				return errFenced
			}
			if err := c.Noop().Wait(); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// fetchNew forwards the mail after pos, in UID order, recording each.
func (w *watcher) fetchNew(ctx context.Context, c *imapclient.Client, pos *imapPos) error {
	set := imap.UIDSet{imap.UIDRange{Start: imap.UID(pos.LastUID + 1), Stop: 0}}
	msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		return fmt.Errorf("failed to fetch new mail: %w", err)
	}
	if len(msgs) > 0 {
		// Only for a registered user (a registration that failed to be
		// saved leaves a watcher behind).
		if _, err := w.b.host.Registration(ctx, w.user); errors.Is(err, store.ErrNotFound) {
			return errUnregistered
		}
	}
	slices.SortFunc(msgs, func(a, b *imapclient.FetchMessageBuffer) int { return int(a.UID) - int(b.UID) })
	for _, m := range msgs {
		if uint32(m.UID) <= pos.LastUID {
			continue // "n:*" also returns the last mail when n is past it
		}
		raw := w.b.bounded(bodyOf(m))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !w.fence() {
			return errFenced
		}
		// Delivering a mail and recording it go together: a stop between
		// the two would forward the mail again.
		dctx := context.WithoutCancel(ctx)
		if err := w.b.deliverMail(dctx, w.user, "", raw); err != nil {
			return err
		}
		pos.LastUID = uint32(m.UID)
		if err := w.b.savePos(dctx, w.user, *pos); err != nil {
			return err
		}
	}
	return nil
}

// mailboxAddress is the address a mailbox-mode user's mail comes from.
func mailboxAddress(f map[string]string) string {
	return strings.TrimSpace(f["email"])
}
