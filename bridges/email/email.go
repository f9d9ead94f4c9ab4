// Package email bridges XMPP and email: hosted addresses at the email
// domain (inbound SMTP, outbound relay) and users' own mailboxes (IMAP and
// SMTP submission). A correspondent bob@example.com is the JID
// bob%example.com@mail-domain.
//
// Start reading at Run, below: it opens the inbound SMTP listener
// (inbound.go), runs the outbound queue (queue.go, runJob) and starts a
// watcher per registered mailbox (mailbox.go). Handle, after it, takes
// what users send (outbound.go); registration follows.
package email

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
	"passerelle/store"
)

// Options configures the email bridge.
type Options struct {
	Domain  string // the mail domain of hosted addresses (= component domain)
	Listen  string // inbound SMTP listener
	Relay   string // outbound relay URL
	MaxSize int64  // largest inbound mail (default 10 MB)
	// MaxRecipients bounds the recipients of one inbound mail (default 50).
	MaxRecipients int
	// MaxConnsPerClient bounds the simultaneous inbound SMTP connections
	// of one client address (default 10).
	MaxConnsPerClient int
	// Inbound holds the other limits and the sender checks of the SMTP
	// listener.
	Inbound InboundOptions
	// PollInterval is how often a mailbox without IMAP IDLE is checked
	// (default 1 minute).
	PollInterval time.Duration
	// CheckTimeout bounds the mailbox check at registration (default 20 s).
	CheckTimeout time.Duration
	// TLSConfig is the base TLS configuration of outbound connections (the
	// relay, users' IMAP and SMTP servers); the server name is set per
	// connection and certificates are always verified. nil: the system's
	// roots. Tests give their own RootCAs here.
	TLSConfig *tls.Config
	// AllowPrivate lets users' own IMAP and SMTP servers be on loopback,
	// private or link-local addresses (PASSERELLE_MAILBOX_ALLOW_PRIVATE).
	AllowPrivate bool
	// Insecure, when set, counts the mail deliveries held back or refused
	// because the server could not be reached safely (for /metrics).
	Insecure *atomic.Int64
}

// Bridge is the email bridge.
type Bridge struct {
	opts  Options
	host  bridges.Host
	relay *relayConfig
	// relayIdle is how long the connection to the relay stays open after
	// a mail (relayIdle, the constant, unless a test shortens it).
	relayIdle time.Duration
	// smtpAddr is the address the SMTP listener is bound to;
	// smtpShutdownWait bounds how long a stop waits for its sessions.
	smtpAddr         string
	smtpShutdownWait time.Duration
	runCtx           context.Context

	upload uploadService
	httpc  *http.Client
	noIdle bool // poll even when the server has IDLE (tests of the fallback)
	// isLocal tells the servers that may be reached without TLS (loopback;
	// tests replace it to act as if a server were remote).
	isLocal func(hostport string) bool
	// resolver looks up the servers users name (tests give their own).
	resolver bridges.Resolver
	mu       sync.Mutex
	watchers map[string]*watcher // mailbox watchers by user
	// noCarbonsLogged are the XMPP servers logged for not granting the
	// message permission (noCarbons).
	noCarbonsLogged map[string]bool
	// jobs runs the queued outbound mail (runJob).
	jobs *bridges.Runner
}

// New returns an email bridge.
func New(opts Options) *Bridge {
	if opts.MaxSize <= 0 {
		opts.MaxSize = 10 << 20
	}
	if opts.MaxRecipients <= 0 {
		opts.MaxRecipients = 50
	}
	if opts.MaxConnsPerClient <= 0 {
		opts.MaxConnsPerClient = 10
	}
	opts.Inbound.setDefaults()
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Minute
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 20 * time.Second
	}
	return &Bridge{opts: opts, smtpShutdownWait: 5 * time.Second, relayIdle: relayIdle, httpc: &http.Client{Timeout: 2 * time.Minute}, watchers: map[string]*watcher{}, runCtx: context.Background(), isLocal: isLoopback,
		resolver: net.DefaultResolver}
}

// Run implements bridges.Bridge: the SMTP listener, the queue of
// outbound mail and the mailbox watchers run until ctx ends. It returns
// once the listener is closed with no mail in progress, the queue has
// recorded the mail it was sending and every watcher the mail it was
// forwarding (each bounded), so the store is not closed under them.
func (b *Bridge) Run(ctx context.Context, host bridges.Host) error {
	b.host = host
	b.runCtx = ctx
	relay, err := parseRelay(b.opts.Relay)
	if err != nil {
		return err
	}
	if relay != nil {
		relay.tls = b.opts.TLSConfig
		// Credentials never go in clear, except to a loopback relay.
		relay.requireTLS = relay.user != "" && !b.isLocal(relay.addr)
		relay.keep, relay.idle = true, b.relayIdle
	}
	if b.opts.AllowPrivate {
		host.Log().Warn("users' own mail servers may be on loopback and private addresses (PASSERELLE_MAILBOX_ALLOW_PRIVATE)")
	}
	b.relay = relay
	var in *inbound
	if b.opts.Listen != "" {
		if in, err = b.listen(ctx); err != nil {
			return err
		}
	}
	users, err := host.Registered(ctx)
	if err != nil {
		if in != nil {
			in.ln.Close()
		}
		return fmt.Errorf("failed to list the registered users: %w", err)
	}
	b.jobs = bridges.NewRunner(host, jobKind, b.runJob)
	var work sync.WaitGroup
	work.Go(func() { b.jobs.Run(ctx) })
	if in != nil {
		work.Go(func() { in.serve(ctx) })
	}
	mailboxes := map[string]mailboxConfig{}
	var owners []string
	for _, u := range users {
		r, err := host.Registration(ctx, u)
		if err != nil {
			host.Log().Warn("cannot read a registration", "user", u, "err", err)
			continue
		}
		if cfg, ok := mailboxFromFields(r.Fields); ok {
			mailboxes[u] = cfg
			owners = append(owners, u)
		}
	}
	if len(owners) > 0 {
		held, err := host.Own(ctx, owners)
		if err != nil {
			host.Log().Error("cannot hold the users of mailboxes: those not held are left to other instances", "err", err, "held", len(held), "users", len(owners))
		}
		for _, u := range held {
			b.startWatcher(u, mailboxes[u])
		}
	}
	host.Ready()
	<-ctx.Done()
	work.Wait()
	if b.relay != nil {
		b.relay.closeKept()
	}
	b.mu.Lock()
	ws := make([]*watcher, 0, len(b.watchers))
	for _, w := range b.watchers {
		ws = append(ws, w)
	}
	b.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
	return nil
}

// Acquired implements bridges.Owner: the mailbox watchers of users
// start, from the positions stored.
func (b *Bridge) Acquired(ctx context.Context, users []string) {
	for _, u := range users {
		r, err := b.host.Registration(ctx, u)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				b.host.Log().Warn("cannot read a registration", "user", u, "err", err)
			}
			continue
		}
		if cfg, ok := mailboxFromFields(r.Fields); ok {
			b.startWatcher(u, cfg)
		}
	}
}

// Released implements bridges.Owner: the user's mailbox watcher stops
// (once it recorded the mail it was forwarding).
func (b *Bridge) Released(ctx context.Context, user string) { b.stopWatcher(user) }

// Handle implements bridges.Bridge.
func (b *Bridge) Handle(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	if bridges.AnswerContactIQ(b.host, st, bridges.Identity{Category: "client", Type: "pc", Name: "Email"}) {
		return
	}
	if bridges.AnswerContactPresence(b.host, st) {
		return
	}
	if local := stanza.Local(st.Attr("to")); local != "" {
		if _, err := mapping.LocalToEmail(local); err != nil {
			bridges.Refuse(b.host, st, stanza.Errorf("jid-malformed", "“"+local+"” is not an email address."))
			return
		}
	}
	if st.Local == "message" && stanza.Local(st.Attr("to")) != "" {
		b.handleMessage(ctx, u, st)
		return
	}
	bridges.Refuse(b.host, st, stanza.Errorf("service-unavailable", "Write to an address, such as bob%example.com@"+b.host.Domain()+"."))
}

// Kind implements bridges.Bridge.
func (b *Bridge) Kind() string { return "email" }

// Identities implements bridges.Bridge.
func (b *Bridge) Identities() []bridges.Identity {
	return []bridges.Identity{{Category: "gateway", Type: "smtp", Name: "Email"}}
}

// Features implements bridges.Bridge.
func (b *Bridge) Features() []string { return []string{stanza.NSReceipts} }

// RegistrationRequired implements bridges.Bridge: mail leaves from the
// user's address, so there must be one.
func (b *Bridge) RegistrationRequired() bool { return true }

// Mailbox-mode fields (all optional).
var mailboxFields = []form.Field{
	{Var: "imap_server", Type: form.TextSingle, Label: "IMAP server (host:port, TLS)", Desc: "Your own mailbox: new mail in its INBOX is forwarded to you."},
	{Var: "imap_username", Type: form.TextSingle, Label: "IMAP user name"},
	{Var: "imap_password", Type: form.TextPrivate, Label: "IMAP password"},
	{Var: "smtp_server", Type: form.TextSingle, Label: "SMTP submission server (host:port)", Desc: "Your own mailbox: your answers are sent through it."},
	{Var: "smtp_username", Type: form.TextSingle, Label: "SMTP user name"},
	{Var: "smtp_password", Type: form.TextPrivate, Label: "SMTP password"},
	{Var: "email", Type: form.TextSingle, Label: "Your own email address (mailbox mode)"},
}

// RegistrationForm implements bridges.Bridge.
func (b *Bridge) RegistrationForm(current *bridges.Registration) *form.Form {
	f := &form.Form{Type: "form", Title: "Email registration",
		Instructions: "Choose your address at " + b.opts.Domain + ": mail sent to it reaches you here. " +
			"You may also connect your own mailbox with the IMAP and SMTP fields.",
		Fields: []form.Field{
			{Var: "FORM_TYPE", Type: form.Hidden, Values: []string{stanza.NSRegister}},
			{Var: "address", Type: form.TextSingle, Label: "Address (the part before @" + b.opts.Domain + ")", Required: true},
		}}
	f.Fields = append(f.Fields, mailboxFields...)
	if current != nil {
		for i := range f.Fields {
			fd := &f.Fields[i]
			if v := current.Fields[fd.Var]; v != "" && fd.Type != form.TextPrivate && fd.Type != form.Hidden {
				fd.Values = []string{v}
			}
		}
	}
	return f
}

// reserved local parts nobody may take (RFC 2142 role addresses).
var reserved = map[string]bool{"postmaster": true, "abuse": true, "hostmaster": true, "webmaster": true,
	"mailer-daemon": true, "noreply": true, "no-reply": true, "root": true, "security": true}

// ValidAddress checks a hosted mailbox local part and returns it lower-cased.
func ValidAddress(s string) (string, *stanza.Error) {
	a := strings.ToLower(strings.TrimSpace(s))
	a = strings.TrimSuffix(a, "@") // someone typed "alice@"
	if a == "" || len(a) > 64 {
		return "", stanza.Errorf("not-acceptable", "The address must have 1 to 64 characters.")
	}
	for _, r := range a {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_+", r)) {
			return "", stanza.Errorf("not-acceptable", "The address may only contain letters, digits and . - _ + (got “"+s+"”).")
		}
	}
	if a[0] == '.' || a[len(a)-1] == '.' || strings.Contains(a, "..") {
		return "", stanza.Errorf("not-acceptable", "The address cannot start or end with a dot or contain two dots in a row.")
	}
	if reserved[a] {
		return "", stanza.Errorf("not-acceptable", "“"+a+"” is reserved.")
	}
	return a, nil
}

func validHostPort(field, v string) *stanza.Error {
	host, port, err := net.SplitHostPort(v)
	n, perr := strconv.Atoi(port)
	if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return stanza.Errorf("not-acceptable", field+": “"+v+"” is not host:port.")
	}
	return nil
}

// Register implements bridges.Bridge.
func (b *Bridge) Register(ctx context.Context, user string, values map[string]string, current *bridges.Registration) (*bridges.Registered, error) {
	addr, serr := ValidAddress(values["address"])
	if serr != nil {
		return nil, serr
	}
	fields := map[string]string{"address": addr}
	for _, fd := range mailboxFields {
		if v := strings.TrimSpace(values[fd.Var]); v != "" {
			fields[fd.Var] = v
		}
	}
	if current != nil {
		// Passwords are never shown in the form: an empty one keeps the old.
		for _, f := range []string{"imap_password", "smtp_password"} {
			if fields[f] == "" && current.Fields[f] != "" {
				fields[f] = current.Fields[f]
			}
		}
	}
	for _, f := range []string{"imap_server", "smtp_server"} {
		if v := fields[f]; v != "" {
			if err := validHostPort(f, v); err != nil {
				return nil, err
			}
		}
	}
	if v := fields["email"]; v != "" {
		if _, err := mapping.EmailToLocal(v); err != nil {
			return nil, stanza.Errorf("not-acceptable", "email: “"+v+"” is not an email address.")
		}
	}
	if fields["smtp_server"] != "" && fields["email"] == "" {
		return nil, stanza.Errorf("not-acceptable", "email: your own address is needed to send through your SMTP server.")
	}
	if fields["smtp_server"] != "" {
		// Mail will leave through this server as this user: it must
		// take the user's login now.
		sub := b.submission(fields)
		if sub.user == "" || sub.password == "" {
			return nil, stanza.Errorf("not-acceptable", "smtp_username and smtp_password (or the IMAP ones) are needed to send through your SMTP server.")
		}
		cctx, cancel := context.WithTimeout(ctx, b.opts.CheckTimeout)
		err := sub.checkLogin(cctx, b.opts.Domain)
		cancel()
		if err != nil {
			return nil, b.refuseServer(user, "Your SMTP server cannot be used", "smtp_server", err)
		}
	}
	cfg, mailbox := mailboxFromFields(fields)
	if mailbox {
		if cfg.IMAPUser == "" || cfg.IMAPPassword == "" {
			return nil, stanza.Errorf("not-acceptable", "imap_username and imap_password are needed to read your mailbox.")
		}
		cctx, cancel := context.WithTimeout(ctx, b.opts.CheckTimeout)
		start, sentErr, err := checkMailbox(cctx, b.secure(cfg))
		cancel()
		if err != nil {
			return nil, b.refuseServer(user, "Your mailbox could not be opened", "imap_server", err)
		}
		if sentErr != nil {
			b.host.Log().Warn("the Sent mailbox could not be read at registration; its watcher starts from its end when it can", "user", user, "imap", cfg.IMAPServer, "err", sentErr)
		}
		// Mail from now on is forwarded, and sent mail shown (unless a
		// position is kept already).
		for mailbox, pos := range start {
			if old, ok, err := b.loadPosOf(ctx, user, mailbox); err != nil {
				return nil, err
			} else if !ok || old.UIDValidity != pos.UIDValidity {
				if err := b.savePosOf(ctx, user, mailbox, pos); err != nil {
					return nil, err
				}
			}
		}
		b.startWatcher(user, cfg)
	} else {
		b.stopWatcher(user)
	}
	return &bridges.Registered{Fields: fields, Secret: []string{"imap_password", "smtp_password"}, Claims: []string{addr}}, nil
}

// refuseServer is the registration error for a server the user named that
// cannot be used: a generic text (userServerText) for the user, the detail
// in the log.
func (b *Bridge) refuseServer(user, what, field string, err error) *stanza.Error {
	if b.host != nil {
		b.host.Log().Info("registration refused: the server cannot be used", "user", user, "field", field, "err", err)
	}
	return stanza.Errorf("not-acceptable", what+" ("+field+"): "+userServerText(err))
}

// Unregistered implements bridges.Bridge.
func (b *Bridge) Unregistered(ctx context.Context, user string) {
	b.stopWatcher(user)
	if b.host != nil {
		if err := b.deletePos(ctx, user); err != nil {
			b.host.Log().Warn("cannot forget a mailbox position", "user", user, "err", err)
		}
	}
}

// Prompt implements bridges.Bridge.
func (b *Bridge) Prompt() (string, string) {
	return "Enter the email address of the contact.", "Email address"
}

// Translate implements bridges.Bridge.
func (b *Bridge) Translate(ctx context.Context, input string) (string, error) {
	local, err := mapping.EmailToLocal(input)
	if err == nil {
		_, err = mapping.LocalToEmail(local) // a single-label domain cannot receive mail
	}
	if err != nil {
		return "", stanza.Errorf("jid-malformed", "“"+input+"” is not an email address.")
	}
	if b.host != nil {
		// Keep the spelling typed (the server may fold the localpart).
		if addr, err := mapping.LocalToEmail(local); err == nil {
			if err := b.host.Store().PutIdentity(ctx, b.host.Domain(), strings.ToLower(local), addr); err != nil {
				b.host.Log().Warn("cannot store an address", "err", err)
			}
		}
	}
	return local, nil
}
