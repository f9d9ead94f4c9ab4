// Package irc bridges XMPP and IRC: channels are MUC rooms
// #chan%server@irc-domain, users nick%server@irc-domain and networks
// server@irc-domain.
//
// Start reading at Run, below: it restores the persistent channels
// (persist.go) and prunes the archive (retention.go). Stanzas come in
// through Handle (handle.go); a user's connection to a server is a
// network (session.go), whose IRC lines are handled in messages.go.
package irc

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/mapping"
	"passerelle/store"
)

// Options configures the IRC bridge.
type Options struct {
	AllowPrivate bool          // allow connections to loopback/private addresses
	Sealer       *store.Sealer // encrypts stored IRC passwords
	HistoryLimit int           // messages kept per user and channel (0: 10,000); older ones are pruned in the background
	// PresencePoll is how often the presence of IRC contacts is polled
	// where the server does not push it (0: a minute): see presence.go.
	PresencePoll time.Duration
}

// Bridge is the IRC bridge.
type Bridge struct {
	opts Options
	host bridges.Host
	db   ircStore // the host's store, unless a test gave another before Start
	// runCtx is Run's context: the networks a stanza starts (their
	// dialing, reconnect timers and readers posting to the user's
	// goroutine) outlive that stanza and stop with the bridge.
	runCtx context.Context
	dialer *dialer

	mu       sync.Mutex
	sessions map[string]map[string]*network // networks by bare JID, then server; see networkOf
	conns    map[*conn]string               // open connections, to QUIT on shutdown, with the host of the sts policy each saw ("": none)

	keys  storedKeys // the case mapping of each server's stored keys, with its own locks
	lines lineLog    // the channels' recent lines, archived once for all users

	realnames map[string]realname // by server and folded nick, guarded by mu: see whois.go

	stopped      chan struct{} // closed when the connections were told to QUIT, after Start's ctx ends
	joinTimeout  time.Duration // how long a first JOIN may go unanswered
	banTimeout   time.Duration // how long a ban list request may go unanswered
	pruneEvery   time.Duration // how often the archive is pruned
	whoisTimeout time.Duration // how long a WHOIS may go unanswered
	echoWait     time.Duration // how long a line waits for its echo to be taken (echoFirst)
}

// New returns an IRC bridge.
func New(opts Options) *Bridge {
	if opts.Sealer == nil {
		opts.Sealer = &store.Sealer{}
	}
	return &Bridge{opts: opts, sessions: map[string]map[string]*network{}, conns: map[*conn]string{}, joinTimeout: time.Minute, banTimeout: 30 * time.Second, pruneEvery: pruneEvery, whoisTimeout: whoisTimeout, echoWait: echoFirstWait,
		dialer: &dialer{allowPrivate: opts.AllowPrivate, resolver: net.DefaultResolver}}
}

// Run implements bridges.Bridge: persistent channels are restored and
// the archive pruned until ctx ends. It returns once every IRC connection
// was sent its QUIT and flushed (at most quitWait), and the restoring and
// the pruning have stopped using the store.
func (b *Bridge) Run(ctx context.Context, host bridges.Host) error {
	b.host = host
	if b.db == nil {
		b.db = host.Store()
	}
	b.runCtx = ctx
	if b.opts.AllowPrivate {
		host.Log().Warn("IRC connections to loopback and private addresses are allowed (PASSERELLE_IRC_ALLOW_PRIVATE)")
	}
	// Nobody is in a channel yet: the archive windows left open by the
	// last run are closed before anyone joins (or is rejoined).
	if err := b.db.CloseIRCWindows(ctx, host.Domain()); err != nil {
		host.Log().Error("cannot close the irc archive windows of the last run: users may see lines archived while they were away", "err", err)
	}
	var work sync.WaitGroup // what reads or writes the store on its own
	work.Go(func() { b.restore(ctx) })
	work.Go(func() { b.pruneLoop(ctx) })
	host.Ready()
	<-ctx.Done()
	b.quitAll(ctx)
	work.Wait()
	return nil
}

// track records an open connection (untrack when it ends). The end of
// one that saw a strict transport security policy reschedules the
// policy's expiry (at shutdown quitAll does).
func (b *Bridge) track(c *conn, open bool) {
	b.mu.Lock()
	host := b.conns[c]
	if open {
		b.conns[c] = ""
	} else {
		delete(b.conns, c)
	}
	b.mu.Unlock()
	if !open && host != "" && b.runCtx.Err() == nil {
		b.rescheduleSTS(b.runCtx, host)
	}
}

// quitWait bounds the time given to the connections to flush their QUIT.
const quitWait = 2 * time.Second

// quitAll sends QUIT on every connection when the gateway stops, and
// waits a little for the lines to go out.
func (b *Bridge) quitAll(ctx context.Context) {
	b.mu.Lock()
	conns := make([]*conn, 0, len(b.conns))
	hosts := map[string]bool{}
	for c, host := range b.conns {
		conns = append(conns, c)
		if host != "" {
			hosts[host] = true
		}
	}
	b.mu.Unlock()
	for host := range hosts {
		b.rescheduleSTS(context.WithoutCancel(ctx), host)
	}
	l, _ := buildLine("QUIT", "Gateway shutting down")
	for _, c := range conns {
		c.close(l)
	}
	deadline := time.After(quitWait)
	for _, c := range conns {
		select {
		case <-c.done:
		case <-deadline:
			return
		}
	}
}

// Kind implements bridges.Bridge.
func (b *Bridge) Kind() string { return "irc" }

// Identities implements bridges.Bridge.
func (b *Bridge) Identities() []bridges.Identity {
	return []bridges.Identity{
		{Category: "conference", Type: "irc", Name: "IRC"},
		{Category: "gateway", Type: "irc", Name: "IRC"},
	}
}

// Features implements bridges.Bridge.
func (b *Bridge) Features() []string { return []string{stanza.NSMUC} }

// RegistrationRequired implements bridges.Bridge: joining channels needs no
// registration; it only stores a default nick and password.
func (b *Bridge) RegistrationRequired() bool { return false }

// RegistrationForm implements bridges.Bridge.
func (b *Bridge) RegistrationForm(current *bridges.Registration) *form.Form {
	nick := form.Field{Var: "nick", Type: form.TextSingle, Label: "Default IRC nick", Required: true}
	if current != nil {
		nick.Values = []string{current.Fields["nick"]}
	}
	return &form.Form{Type: "form", Title: "IRC registration",
		Instructions: "Set the nick used on IRC networks (unless configured per network) and optionally a password (sent to NickServ/server).",
		Fields: []form.Field{
			{Var: "FORM_TYPE", Type: form.Hidden, Values: []string{stanza.NSRegister}},
			nick,
			{Var: "password", Type: form.TextPrivate, Label: "Default password (optional)"},
		}}
}

// ValidNick checks an IRC nick.
func ValidNick(n string) *stanza.Error {
	if _, err := mapping.ParseIRCLocal(n+"%irc.invalid", ""); err != nil || strings.ContainsAny(n, "%") {
		return stanza.Errorf("not-acceptable", "“"+n+"” is not a valid IRC nick.")
	}
	return nil
}

// Register implements bridges.Bridge.
func (b *Bridge) Register(ctx context.Context, user string, values map[string]string, current *bridges.Registration) (*bridges.Registered, error) {
	nick := strings.TrimSpace(values["nick"])
	if err := ValidNick(nick); err != nil {
		return nil, err
	}
	fields := map[string]string{"nick": nick}
	if p := values["password"]; p != "" {
		if strings.ContainsAny(p, "\r\n\x00 ") {
			return nil, stanza.Errorf("not-acceptable", "The password cannot contain spaces or line breaks.")
		}
		fields["password"] = p
	}
	return &bridges.Registered{Fields: fields, Secret: []string{"password"}}, nil
}

// Unregistered implements bridges.Bridge: the user's IRC contacts are
// no longer watched.
func (b *Bridge) Unregistered(ctx context.Context, user string) { b.unwatchAll(user) }

// Prompt implements bridges.Bridge.
func (b *Bridge) Prompt() (string, string) {
	return "Enter an IRC channel or nick with its network, e.g. #go@irc.libera.chat or alice@irc.libera.chat, or a network name.", "IRC address"
}

// Translate implements bridges.Bridge: "#chan@server", "#chan%server",
// "nick@server", "nick%server" or "server".
func (b *Bridge) Translate(ctx context.Context, input string) (string, error) {
	s := strings.TrimSpace(input)
	if i := strings.LastIndexByte(s, '@'); i >= 0 && !strings.Contains(s, "%") {
		s = s[:i] + "%" + s[i+1:]
	}
	a, err := mapping.ParseIRCLocal(s, "")
	if err != nil {
		return "", stanza.Errorf("jid-malformed", "“"+input+"” is not an IRC channel, nick or network: "+err.Error())
	}
	return a.Local(), nil
}
