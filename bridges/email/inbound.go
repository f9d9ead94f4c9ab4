package email

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
)

// inbound is the SMTP listener for hosted addresses.
type inbound struct {
	b      *Bridge
	srv    *smtp.Server
	ln     net.Listener
	perIP  int
	mu     sync.Mutex
	active map[string]int // open connections by client IP
}

func (b *Bridge) listen(ctx context.Context) error {
	ln, err := net.Listen("tcp", b.opts.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen for SMTP on %s: %w", b.opts.Listen, err)
	}
	in := &inbound{b: b, ln: ln, perIP: b.opts.MaxConnsPerClient, active: map[string]int{}}
	s := smtp.NewServer(smtp.BackendFunc(in.newSession))
	s.Domain = b.opts.Domain
	s.MaxMessageBytes = b.opts.MaxSize
	s.MaxRecipients = b.opts.MaxRecipients
	s.ReadTimeout = 5 * time.Minute
	s.WriteTimeout = time.Minute
	s.ErrorLog = slogLogger{b}
	in.srv = s
	b.smtpAddr = ln.Addr().String()
	b.host.Log().Info("listening for SMTP", "addr", ln.Addr().String(), "max_size", b.opts.MaxSize)
	go func() {
		if err := s.Serve(limitListener{ln, in}); err != nil {
			b.host.Log().Error("the SMTP listener stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			s.Close()
		}
	}()
	return nil
}

// slogLogger routes go-smtp's log lines to the bridge's logger.
type slogLogger struct{ b *Bridge }

func (l slogLogger) Printf(format string, v ...any) { l.b.host.Log().Debug(fmt.Sprintf(format, v...)) }
func (l slogLogger) Println(v ...any)               { l.b.host.Log().Debug(fmt.Sprint(v...)) }

// limitListener refuses clients that already hold too many connections.
type limitListener struct {
	net.Listener
	in *inbound
}

func (l limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		l.in.mu.Lock()
		n := l.in.active[ip]
		ok := l.in.perIP <= 0 || n < l.in.perIP
		if ok {
			l.in.active[ip] = n + 1
		}
		l.in.mu.Unlock()
		if !ok {
			l.in.b.host.Log().Info("refused an SMTP connection: too many from this client", "client", ip)
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "421 4.7.0 Too many connections from your address, try again later\r\n")
			c.Close()
			continue
		}
		return &countedConn{Conn: c, in: l.in, ip: ip}, nil
	}
}

type countedConn struct {
	net.Conn
	in   *inbound
	ip   string
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.in.mu.Lock()
		if c.in.active[c.ip]--; c.in.active[c.ip] <= 0 {
			delete(c.in.active, c.ip)
		}
		c.in.mu.Unlock()
	})
	return c.Conn.Close()
}

func (in *inbound) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{b: in.b, client: c.Conn().RemoteAddr().String()}, nil
}

// session is one SMTP transaction sequence of a client.
type session struct {
	b       *Bridge
	client  string
	from    string
	hasMail bool
	rcpts   []recipient
}

// recipient is a hosted address and the user who owns it.
type recipient struct {
	addr, user string
}

func (s *session) Reset()        { s.from, s.hasMail, s.rcpts = "", false, nil }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.from, s.hasMail = from, true
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !s.hasMail {
		return errNoSender
	}
	r, err := s.b.recipient(context.Background(), to)
	if err != nil {
		s.b.host.Log().Info("refused an SMTP recipient", "client", s.client, "rcpt", to, "err", err)
		return err
	}
	for _, old := range s.rcpts {
		if old.user == r.user {
			return nil // two addresses of one user: one message
		}
	}
	s.rcpts = append(s.rcpts, r)
	return nil
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

// Data reads the mail (go-smtp stops it at the size limit with a 552) and
// answers 250 only once its stanzas are committed to the outbox.
func (s *session) Data(r io.Reader) error {
	if len(s.rcpts) == 0 {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			s.b.host.Log().Info("refused an SMTP message", "client", s.client, "err", err)
			return se
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	users := make([]string, len(s.rcpts))
	for i, rc := range s.rcpts {
		users[i] = rc.user
	}
	if err := s.b.deliverMailTo(ctx, users, s.from, raw); err != nil {
		s.b.host.Log().Error("cannot store an inbound mail", "recipients", len(users), "err", err)
		return errTempStore
	}
	s.b.host.Log().Info("accepted a mail", "client", s.client, "from", s.from, "recipients", len(s.rcpts), "size", len(raw))
	return nil
}
