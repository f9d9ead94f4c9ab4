package email

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"passerelle/store"
)

var (
	errRelayDenied = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "Relaying denied: this server only accepts mail for its own addresses"}
	errNoSuchUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message: "No such user here"}
	errMailboxOff = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 2, 1},
		Message: "The owner of this address does not accept mail"}
	errBadAddress = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3},
		Message: "Bad recipient address syntax"}
	errNoSender = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
		Message: "MAIL FROM first"}
	errTempStore = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Cannot store the message now; try again later"}
	errStopping = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2},
		Message: "The gateway is stopping; try again later"}
)

// InboundOptions are the limits and sender checks of the SMTP listener.
type InboundOptions struct {
	// MaxConns bounds the simultaneous connections of all clients
	// (default 100); Options.MaxConnsPerClient bounds those of one.
	MaxConns int
	// Timeout is how long the listener waits for a client's next command
	// or data, and to write an answer (default 5 minutes).
	Timeout time.Duration
	// MaxRefusedRcpts is how many refused recipients a session gets before
	// the next refusal answers 421 and closes it (default 20).
	MaxRefusedRcpts int
	// Resolver answers the DNS lookups of SPF, DKIM and DMARC (default:
	// the system's resolver).
	Resolver Resolver
	// TrustedAuthServ, when set, is the authserv-id of a fronting MTA whose
	// Authentication-Results field is used instead of the gateway's own
	// checks.
	TrustedAuthServ string
}

func (o *InboundOptions) setDefaults() {
	if o.MaxConns <= 0 {
		o.MaxConns = 100
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.MaxRefusedRcpts <= 0 {
		o.MaxRefusedRcpts = 20
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
}

// inbound is the SMTP listener for hosted addresses.
type inbound struct {
	b            *Bridge
	srv          *smtp.Server
	ln           net.Listener
	limits       *connLimits
	shutdownWait time.Duration // for the sessions to end at a stop

	mu       sync.Mutex
	sessions map[*smtp.Conn]bool // open, closed at a stop after shutdownWait
	// busy is held for reading by each command that uses the store, and
	// for writing by serve at a stop: it returns once they are done.
	busy    sync.RWMutex
	stopped bool // under busy: no command may use the store any more
}

// listen opens the SMTP listener; serve answers on it.
func (b *Bridge) listen(ctx context.Context) (*inbound, error) {
	ln, err := net.Listen("tcp", b.opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("failed to listen for SMTP on %s: %w", b.opts.Listen, err)
	}
	in := &inbound{b: b, ln: ln, shutdownWait: b.smtpShutdownWait, sessions: map[*smtp.Conn]bool{}, limits: &connLimits{
		max: b.opts.Inbound.MaxConns, perIP: b.opts.MaxConnsPerClient,
		exempt: b.relayAddrs(ctx), byIP: map[string]int{}, log: b.host.Log(),
	}}
	s := smtp.NewServer(smtp.BackendFunc(in.newSession))
	s.Domain = b.opts.Domain
	s.MaxMessageBytes = b.opts.MaxSize
	s.MaxRecipients = b.opts.MaxRecipients
	s.ReadTimeout = b.opts.Inbound.Timeout
	s.WriteTimeout = b.opts.Inbound.Timeout
	s.ErrorLog = slogLogger{b}
	in.srv = s
	b.smtpAddr = ln.Addr().String()
	b.host.Log().Info("listening for SMTP", "addr", ln.Addr().String(), "max_size", b.opts.MaxSize,
		"max_connections", in.limits.max, "max_connections_per_ip", in.limits.perIP, "timeout", s.ReadTimeout)
	return in, nil
}

// serve answers SMTP until ctx ends. Then it closes the listener, gives
// the sessions shutdownWait to end, closes those left, and returns once no
// command that reads or commits to the store is running: a mail being
// received is committed (250) or refused (4xx) before the store closes.
func (in *inbound) serve(ctx context.Context) {
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := in.srv.Serve(limitListener{in.ln, in.limits}); err != nil {
			in.b.host.Log().Error("the SMTP listener stopped", "err", err)
		}
	}()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), in.shutdownWait)
	err := in.srv.Shutdown(sctx)
	cancel()
	if err != nil {
		// Shutdown has marked the server closed: its Close would not
		// close the sessions any more. Their commands fail, and their
		// goroutines end.
		in.mu.Lock()
		conns := make([]net.Conn, 0, len(in.sessions))
		for c := range in.sessions {
			conns = append(conns, c.Conn())
		}
		in.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	<-served
	in.busy.Lock() // waits for the commands running
	in.stopped = true
	in.busy.Unlock()
}

// enter is called by a session command that uses the store; it returns
// false once the listener stopped (the store may be closed). leave ends
// the command.
func (in *inbound) enter() bool {
	in.busy.RLock()
	if in.stopped {
		in.busy.RUnlock()
		return false
	}
	return true
}

func (in *inbound) leave() { in.busy.RUnlock() }

// relayAddrs returns the addresses of the configured relay's host: a local
// MTA that relays the gateway's mail usually also hands it its inbound
// mail, over many connections, and is exempt from the per-client cap.
func (b *Bridge) relayAddrs(ctx context.Context) map[string]bool {
	addrs := map[string]bool{}
	if b.opts.Relay == "" {
		return addrs
	}
	u, err := url.Parse(b.opts.Relay)
	if err != nil || u.Hostname() == "" {
		return addrs
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil {
		addrs[ip.String()] = true
		return addrs
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ips, err := b.opts.Inbound.Resolver.LookupIPAddr(ctx, u.Hostname())
	if err != nil {
		b.host.Log().Warn("cannot resolve the relay's host: its connections get the per-client cap", "host", u.Hostname(), "err", err)
	}
	for _, ip := range ips {
		addrs[ip.IP.String()] = true
	}
	return addrs
}

// slogLogger routes go-smtp's log lines to the bridge's logger.
type slogLogger struct{ b *Bridge }

func (l slogLogger) Printf(format string, v ...any) { l.b.host.Log().Debug(fmt.Sprintf(format, v...)) }
func (l slogLogger) Println(v ...any)               { l.b.host.Log().Debug(fmt.Sprint(v...)) }

// refusalLogEvery spaces the log lines about refused connections.
const refusalLogEvery = time.Minute

// connLimits counts the open connections, in all and by client address.
type connLimits struct {
	max, perIP int
	exempt     map[string]bool // client addresses without a per-client cap
	log        *slog.Logger

	mu      sync.Mutex
	total   int
	byIP    map[string]int
	refused int       // refusals since the last log line
	logged  time.Time // when the last refusal was logged
}

// acquire counts a new connection from ip, or says why it is refused.
func (l *connLimits) acquire(ip string) (refusal string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.max:
		refusal = "421 4.7.0 Too many connections, try again later"
	case !l.exempt[ip] && l.byIP[ip] >= l.perIP:
		refusal = "421 4.7.0 Too many connections from your address, try again later"
	default:
		l.total++
		l.byIP[ip]++
		return ""
	}
	// One line a minute at most, whatever the rate of refusals.
	l.refused++
	if now := time.Now(); now.Sub(l.logged) >= refusalLogEvery {
		l.log.Info("refused SMTP connections", "count", l.refused, "last_client", ip, "reason", refusal[10:],
			"open", l.total, "open_by_client", l.byIP[ip])
		l.refused, l.logged = 0, now
	}
	return refusal
}

func (l *connLimits) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// limitListener refuses connections beyond the limits with a 421.
type limitListener struct {
	net.Listener
	limits *connLimits
}

func (l limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		if refusal := l.limits.acquire(ip); refusal != "" {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(c, refusal+"\r\n")
			c.Close()
			continue
		}
		return &countedConn{Conn: c, limits: l.limits, ip: ip}, nil
	}
}

type countedConn struct {
	net.Conn
	limits *connLimits
	ip     string
	once   sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.limits.release(c.ip) })
	return c.Conn.Close()
}

func (in *inbound) newSession(c *smtp.Conn) (smtp.Session, error) {
	in.mu.Lock()
	in.sessions[c] = true
	in.mu.Unlock()
	s := &session{b: in.b, in: in, conn: c, client: c.Conn().RemoteAddr().String(), start: time.Now(), stats: sessionStats{helo: c.Hostname()}}
	if a, ok := c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		s.ip = a.IP
	}
	return s, nil
}

// session is one SMTP transaction sequence of a client.
type session struct {
	b       *Bridge
	in      *inbound
	conn    *smtp.Conn
	client  string
	ip      net.IP
	from    string
	hasMail bool
	rcpts   []recipient
	start   time.Time
	// stats are what the session's summary line tells. go-smtp may call
	// Logout from another goroutine (a server closed while a command runs).
	statsMu sync.Mutex
	stats   sessionStats
}

type sessionStats struct {
	helo           string
	accepted       int // mails
	refusedRcpts   int
	refusedMails   int
	lastRefusal    string
	closedByLimits bool
}

func (s *session) updateStats(f func(*sessionStats)) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	f(&s.stats)
}

// recipient is a hosted address and the user who owns it.
type recipient struct {
	addr, user string
}

func (s *session) Reset() { s.from, s.hasMail, s.rcpts = "", false, nil }

// Logout logs the session's one summary line: refused recipients are
// counted there, not logged one by one.
func (s *session) Logout() error {
	s.statsMu.Lock()
	st := s.stats
	s.statsMu.Unlock()
	args := []any{"client", s.client, "helo", st.helo, "duration", time.Since(s.start).Round(time.Millisecond),
		"accepted", st.accepted, "refused_rcpts", st.refusedRcpts, "refused_mails", st.refusedMails}
	if st.lastRefusal != "" {
		args = append(args, "last_refusal", st.lastRefusal)
	}
	if st.closedByLimits {
		args = append(args, "closed", "too many refused recipients")
	}
	s.b.host.Log().Info("SMTP session ended", args...)
	s.in.mu.Lock()
	delete(s.in.sessions, s.conn)
	s.in.mu.Unlock()
	return nil
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.from, s.hasMail = from, true
	helo := s.conn.Hostname() // a later EHLO may have changed it
	s.updateStats(func(st *sessionStats) { st.helo = helo })
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !s.hasMail {
		return errNoSender
	}
	if !s.in.enter() {
		return errStopping
	}
	defer s.in.leave()
	r, err := s.b.recipient(context.Background(), to)
	if err != nil {
		return s.refuseRcpt(to, err)
	}
	for _, old := range s.rcpts {
		if old.user == r.user {
			return nil // two addresses of one user: one message
		}
	}
	s.rcpts = append(s.rcpts, r)
	return nil
}

// refuseRcpt counts a refused recipient. Past the session's limit it
// answers 421 and closes the connection, which stops enumeration of the
// hosted addresses from one connection.
func (s *session) refuseRcpt(to string, err error) error {
	s.b.host.Log().Debug("refused an SMTP recipient", "client", s.client, "rcpt", to, "err", err)
	if err == errTempStore {
		return err
	}
	var closing bool
	s.updateStats(func(st *sessionStats) {
		st.lastRefusal = err.Error()
		if closing = st.refusedRcpts >= s.b.opts.Inbound.MaxRefusedRcpts; closing {
			st.closedByLimits = true
		} else {
			st.refusedRcpts++
		}
	})
	if closing {
		c := s.conn.Conn()
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "421 4.7.0 Too many refused recipients, closing connection\r\n")
		s.conn.Close() // ends the session: Logout logs it
	}
	return err
}

// recipient checks an envelope recipient: only the hosted addresses of
// registered, allowed users who accept mail.
func (b *Bridge) recipient(ctx context.Context, to string) (recipient, error) {
	at := strings.LastIndexByte(to, '@')
	if at <= 0 {
		return recipient{}, errBadAddress
	}
	local, domain := strings.ToLower(to[:at]), strings.ToLower(to[at+1:])
	if domain != strings.ToLower(b.opts.Domain) {
		return recipient{}, errRelayDenied
	}
	if i := strings.IndexByte(local, '+'); i > 0 {
		if _, err := b.host.Store().ClaimOwner(ctx, b.host.Domain(), local); errors.Is(err, store.ErrNotFound) {
			local = local[:i] // subaddress: alice+news@ reaches alice@
		}
	}
	user, err := b.host.Store().ClaimOwner(ctx, b.host.Domain(), local)
	if errors.Is(err, store.ErrNotFound) {
		return recipient{}, errNoSuchUser
	}
	if err != nil {
		return recipient{}, errTempStore
	}
	if !b.host.Allowed(user) {
		return recipient{}, errNoSuchUser
	}
	if v, err := b.host.Setting(ctx, user, settingAcceptMail); err != nil {
		return recipient{}, errTempStore
	} else if v == "false" {
		return recipient{}, errMailboxOff
	}
	return recipient{addr: local + "@" + domain, user: user}, nil
}

// Data reads the mail (go-smtp stops it at the size limit with a 552),
// authenticates its sender, and answers 250 only once its stanzas are
// committed to the outbox.
func (s *session) Data(r io.Reader) error {
	if len(s.rcpts) == 0 {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	}
	if !s.in.enter() {
		return errStopping
	}
	defer s.in.leave()
	raw, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			s.refuseMail(se, "")
			return se
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v := s.b.checkSender(ctx, s.ip, s.conn.Hostname(), s.from, raw)
	if v.reject {
		s.refuseMail(errDMARCReject, v.detail)
		return errDMARCReject
	}
	users := make([]string, len(s.rcpts))
	for i, rc := range s.rcpts {
		users[i] = rc.user
	}
	if err := s.b.deliverMailTo(ctx, users, s.from, raw, !v.verified); err != nil {
		s.b.host.Log().Error("cannot store an inbound mail", "recipients", len(users), "err", err)
		return errTempStore
	}
	s.updateStats(func(st *sessionStats) { st.accepted++ })
	s.b.host.Log().Info("accepted a mail", "client", s.client, "from", s.from, "recipients", len(s.rcpts), "size", len(raw),
		"verified", v.verified, "auth", v.detail)
	return nil
}

// refuseMail logs a refused mail and counts it for the session's summary.
func (s *session) refuseMail(err error, detail string) {
	s.updateStats(func(st *sessionStats) { st.refusedMails++; st.lastRefusal = err.Error() })
	args := []any{"client", s.client, "from", s.from, "err", err}
	if detail != "" {
		args = append(args, "auth", detail)
	}
	s.b.host.Log().Info("refused an SMTP message", args...)
}
