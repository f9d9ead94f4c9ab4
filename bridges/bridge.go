// Package bridges defines the adapter every foreign network implements to
// plug into a Passerelle component, and the services a component offers it.
//
// The component (package component) owns the XMPP side: the XEP-0114
// stream, disco, registration, ad-hoc commands, the persistent outbox and one
// goroutine per local user. A bridge owns the foreign side and translates.
package bridges

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"passerelle/component/form"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// Identity is an XEP-0030 identity.
type Identity struct {
	Category, Type, Name string
}

// Registered is what a bridge keeps of a validated registration.
type Registered struct {
	Fields map[string]string // stored values, by form field var
	Secret []string          // fields sealed at rest (PASSERELLE_STORE_KEY)
	Claims []string          // foreign addresses owned exclusively (mailbox, number)
}

// Registration is a stored registration as bridges see it: secrets opened.
type Registration struct {
	JID    string
	Fields map[string]string
	Claims []string
}

// User is the local user a stanza comes from.
type User struct {
	JID  string // bare JID
	Full string // full JID of the sending resource
	// Registration is the user's registration with this bridge, or nil.
	Registration *Registration
	// Admin is true for the JIDs listed in PASSERELLE_ADMINS.
	Admin bool
}

// Bridge is the adapter interface of a foreign network.
type Bridge interface {
	// Kind names the bridge: "irc", "email" or "sms".
	Kind() string
	// Identities and Features describe the component domain in disco#info
	// (the component adds the protocol features it implements itself).
	Identities() []Identity
	Features() []string

	// RegistrationRequired is true when users must register before
	// exchanging messages through the bridge.
	RegistrationRequired() bool
	// RegistrationForm returns the XEP-0077 form, with the user's current
	// values filled in (never secrets) when current is non-nil.
	RegistrationForm(current *Registration) *form.Form
	// Register validates submitted values against the user's current
	// registration (nil when new). Errors should be *stanza.Error
	// (not-acceptable, conflict, ...); others become internal-server-error.
	Register(ctx context.Context, user string, values map[string]string, current *Registration) (*Registered, error)
	// Unregistered is called after a user's registration was removed.
	Unregistered(ctx context.Context, user string)

	// Prompt returns the jabber:iq:gateway description and prompt.
	Prompt() (desc, prompt string)
	// Translate turns what a user typed into a JID localpart at this
	// bridge's domain, or an *stanza.Error (jid-malformed, item-not-found).
	Translate(ctx context.Context, input string) (string, error)

	// Run does the bridge's own work (listeners, queues, foreign
	// connections) until ctx is done. It sets up what the other methods
	// need, calls host.Ready, and returns once its work is finished and
	// its listeners are closed (a goodbye to a foreign network is
	// bounded), so that the store can be closed. An error is fatal to
	// the gateway.
	Run(ctx context.Context, host Host) error
	// Handle processes a stanza the component does not answer itself
	// (anything addressed to a JID with a localpart, and messages to the
	// domain). It runs on the user's goroutine: it must not block for long.
	Handle(ctx context.Context, u *User, st *xmlel.Element)
}

// Settings is implemented by bridges with per-user settings, shown in the
// "settings" ad-hoc command and stored per user.
type Settings interface {
	// SettingsFields returns the fields with their default values.
	SettingsFields() []form.Field
}

// Commander is implemented by bridges offering ad-hoc commands of their own,
// on the domain (local == "") or on a JID with a localpart.
type Commander interface {
	Commands(u *User, local string) []*Command
}

// Connected is implemented by bridges that want to know when the component
// stream is (re)established.
type Connected interface {
	Connected(ctx context.Context)
}

// UserPresence is implemented by bridges that want to know when a user
// comes online (a first available resource) or goes offline (the last
// one), as the component learns it from the presence the server sends
// the domain: the user's own broadcast (the gateway is in the user's
// roster), the server's forwards under the XEP-0356 presence permission,
// or, without that permission, the answers to the probes the component
// sends registered users when its stream begins. Both run on the user's
// goroutine.
type UserPresence interface {
	UserOnline(ctx context.Context, user string)
	UserOffline(ctx context.Context, user string)
}

// Owner is implemented by bridges that hold foreign connections for a
// user: IRC connections, mailbox watchers. Instances sharing a store
// hold each user's on one instance at a time (a lease in the store, per
// bridge domain and user): the component hands a bridge a user's stanzas
// only once its instance holds the user; a bridge starts the standing
// work of users at start (persistent channels, watchers) only for those
// Host.Own gives it, and later for those Acquired names.
type Owner interface {
	// Acquired starts the standing work of users this instance came to
	// hold while running: users of an instance that stopped or died,
	// handed over by another, or whose stanzas now reach this one. It
	// must not block for long (post the work to each user's goroutine).
	Acquired(ctx context.Context, users []string)
	// Released closes user's foreign connections and stops its work:
	// another instance takes the user over, or this one cannot renew its
	// lease. It runs on user's goroutine and returns once they are
	// closed.
	Released(ctx context.Context, user string)
}

// Profile is what a bridge tells of a foreign contact in its vCard
// (XEP-0054); empty fields are left out.
type Profile struct {
	Name  string // the contact's full name, when the foreign side gives one
	Nick  string // an IRC nick
	Email string // an email address
	Phone string // a phone number in international format
}

// Profiler is implemented by bridges that describe their contacts: the
// component answers vcard-temp requests to a contact's bare JID with the
// profile; its FN is the contact's own name (Profile.Name), else the name
// in the user's roster (as the gateway gave it). Profile calls answer
// once, on the user's goroutine: at once, or later when it must ask the
// foreign network (an IRC WHOIS). A nil profile and error leave the
// request to the bridge's Handle; errors should be *stanza.Error.
type Profiler interface {
	Profile(ctx context.Context, u *User, local string, answer func(ctx context.Context, p *Profile, err error))
}

// Command is an ad-hoc command (XEP-0050). Execute is called with a nil form
// for the first step, then with each submitted form; it returns the next form
// to show (Done false) or the final note/form (Done true).
type Command struct {
	Node  string
	Name  string
	Admin bool
	Run   func(ctx context.Context, u *User, submitted *form.Form) (*CommandResult, error)
}

// CommandResult is one step's answer.
type CommandResult struct {
	Done bool
	Form *form.Form
	Note string // informational note shown when the command completes
}

// ErrDisconnected is returned by Host.Send while the XMPP server is away.
var ErrDisconnected = errors.New("not connected to the XMPP server")

// ErrNoPrivilege is returned by Host.SentCarbons when the user's XMPP
// server does not grant the component the XEP-0356 message permission
// ("outgoing").
var ErrNoPrivilege = errors.New("the XMPP server does not grant the message permission (XEP-0356)")

// ErrPrivilegeUnknown is returned by Host.SentCarbons while the component
// does not know yet what the user's XMPP server grants it: ask again once
// Host.PrivilegesKnown is closed.
var ErrPrivilegeUnknown = errors.New("what the XMPP server grants is not known yet")

// Host is what a component offers its bridge.
type Host interface {
	// Domain is the component's domain.
	Domain() string
	// Ready is called by the bridge's Run once it is set up: only then
	// does the component connect to the XMPP server and hand it stanzas.
	Ready()
	// Send writes a transient stanza (presence, IQ reply); while the server
	// is away it fails with ErrDisconnected.
	Send(st *xmlel.Element) error
	// SendMessage stores messages in the persistent outbox (all of them or,
	// on error, none) and sends them as soon as the stream is up. It
	// returns once they are committed.
	SendMessage(ctx context.Context, sts ...*xmlel.Element) error
	// Deliver is SendMessage for an event the foreign side may send more
	// than once, even at the same moment (store.Delivery): key, the links
	// and the messages are committed in one transaction. When key was
	// committed before, it commits nothing and reports false. An empty
	// key is no check: the links and messages are still committed
	// together.
	Deliver(ctx context.Context, key string, links []store.MessageID, sts ...*xmlel.Element) (bool, error)
	// Queued tells the component that the bridge committed sts to the
	// outbox itself, in the transaction of a store write of its own
	// (store.IRCLine.Echo), each stanza with its "from" set: they are
	// sent as SendMessage's are.
	Queued(sts ...*xmlel.Element)
	// Flushed returns a channel closed once the XMPP server has confirmed
	// what the bridge committed to the outbox before the call, or once
	// the component stops sending it (closed already while it does not:
	// no stream). It may take as long as the outbox's backlog, or as long
	// as a failing store: a caller bounds its wait.
	Flushed() <-chan struct{}
	// IQ sends an IQ get/set and waits for its answer.
	IQ(ctx context.Context, iq *xmlel.Element) (*xmlel.Element, error)
	// Post runs fn on user's goroutine (the owner of that user's state).
	Post(user string, fn func(ctx context.Context)) error
	// Registration returns user's registration, or store.ErrNotFound.
	Registration(ctx context.Context, user string) (*Registration, error)
	// Registered lists the registered users.
	Registered(ctx context.Context) ([]string, error)
	// Own returns the users of users whose foreign connections this
	// instance may hold, and holds them: all of them unless instances
	// share the store, then those no other live instance holds (see
	// Owner). A bridge calls it before it starts their standing work.
	Own(ctx context.Context, users []string) ([]string, error)
	// Fence returns a check of the lease under which this instance holds
	// its users now (see Owner): it reports false once that lease may
	// have ended (by the clock: the process was frozen or starved past
	// it, and another instance may hold the users) or the instance let go
	// of them, and stays false. A bridge takes one when it starts a
	// user's foreign connection and checks it before it acts on it
	// (writes a line, forwards a mail): when it fails, the bridge closes
	// the connection without writing anything more and does not connect
	// again; Released follows. Alone with its store, it is always true.
	Fence() func() bool
	// Setting returns a user's setting (or its default).
	Setting(ctx context.Context, user, key string) (string, error)
	// Allowed reports whether a bare JID may use the gateway.
	Allowed(user string) bool
	// Contact puts the foreign contact local@Domain() in user's roster
	// with name, in the bridge's group, when user is registered: call it
	// when a contact writes to the user and when the user writes to an
	// address. It returns at once; the work is done on user's goroutine,
	// once per contact and name. A name the user gave is never changed.
	// Without the server's roster permission (XEP-0356) the contact asks
	// for a subscription once instead, with its name (XEP-0172).
	Contact(ctx context.Context, user, local, name string)
	// SentCarbons returns what turns a message user sent from elsewhere
	// (a foreign client of hers: from her bare JID to a contact JID of
	// the bridge) into the stanza that shows it in her chat with that
	// contact, to commit with SendMessage or Deliver: a privileged
	// message (XEP-0356 message permission) asking her server to hand
	// her clients the XEP-0280 sent carbon of it. It fails with
	// ErrNoPrivilege when her server does not grant the permission, and
	// with ErrPrivilegeUnknown before the component knows.
	SentCarbons(user string) (func(msg *xmlel.Element) *xmlel.Element, error)
	// PrivilegesKnown is closed once the component knows what the XMPP
	// server grants it (XEP-0356): the server's advertisement came, or,
	// as a last resort, a stream stayed up minutes without one (it grants
	// nothing).
	PrivilegesKnown() <-chan struct{}
	Store() *store.Store
	Log() *slog.Logger
	// RetryMaxDelay caps the backoff of queued deliveries.
	RetryMaxDelay() time.Duration
}

// Start runs b.Run(ctx, h) on a goroutine and returns once the bridge is
// ready: when ready (closed or sent to by h.Ready) is received from. wait
// returns once Run has returned, with its error. When Run returns before
// it is ready, Start returns its error, or an error of its own if the
// bridge stopped without one while ctx was not done.
func Start(ctx context.Context, b Bridge, h Host, ready <-chan struct{}) (wait func() error, err error) {
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, h) }()
	wait = sync.OnceValue(func() error { return <-done })
	select {
	case <-ready:
		return wait, nil
	case err := <-done:
		done <- nil
		if err == nil && ctx.Err() == nil {
			err = errors.New("it stopped before it was ready")
		}
		return wait, err
	}
}
