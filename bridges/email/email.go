// Package email bridges XMPP and email: hosted addresses at the email
// domain (inbound SMTP, outbound relay) and users' own mailboxes (IMAP and
// SMTP submission). A correspondent bob@example.com is the JID
// bob%example.com@mail-domain.
package email

import (
	"context"
	"net"
	"strconv"
	"strings"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// Options configures the email bridge.
type Options struct {
	Domain  string // the mail domain of hosted addresses (= component domain)
	Listen  string // inbound SMTP listener
	Relay   string // outbound relay URL
	MaxSize int64
}

// Bridge is the email bridge.
type Bridge struct {
	opts Options
	host bridges.Host
}

// New returns an email bridge.
func New(opts Options) *Bridge { return &Bridge{opts: opts} }

// Kind implements bridges.Bridge.
func (b *Bridge) Kind() string { return "email" }

// Identities implements bridges.Bridge.
func (b *Bridge) Identities() []bridges.Identity {
	return []bridges.Identity{{Category: "gateway", Type: "smtp", Name: "Email"}}
}

// Features implements bridges.Bridge.
func (b *Bridge) Features() []string { return nil }

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
			{Var: "FORM_TYPE", Type: form.Hidden, Values: []string{"jabber:iq:register"}},
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
	return &bridges.Registered{Fields: fields, Secret: []string{"imap_password", "smtp_password"}, Claims: []string{addr}}, nil
}

// Unregistered implements bridges.Bridge.
func (b *Bridge) Unregistered(ctx context.Context, user string) {}

// Prompt implements bridges.Bridge.
func (b *Bridge) Prompt() (string, string) {
	return "Enter the email address of the contact.", "Email address"
}

// Translate implements bridges.Bridge.
func (b *Bridge) Translate(ctx context.Context, input string) (string, error) {
	local, err := mapping.EmailToLocal(input)
	if err != nil {
		return "", stanza.Errorf("jid-malformed", "“"+input+"” is not an email address.")
	}
	return local, nil
}

// Start implements bridges.Bridge.
func (b *Bridge) Start(ctx context.Context, host bridges.Host) error {
	b.host = host
	return nil
}

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
	bridges.Refuse(b.host, st, stanza.Errorf("service-unavailable", "Sending mail is not available on this gateway yet."))
}
