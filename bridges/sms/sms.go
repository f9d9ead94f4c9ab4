// Package sms bridges XMPP and SMS through a Twilio-compatible provider:
// each registered user claims one of the gateway's numbers and texts any
// phone number as +E164@sms-domain.
//
// Start reading at Run, below: it serves the provider's webhooks
// (webhook.go: inbound texts and delivery reports) and runs the queue of
// texts to send (worker.go, runJob). Handle, after it, takes what users
// send (outbound.go); registration follows.
package sms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// Options configures the SMS bridge.
type Options struct {
	Numbers       []string // E.164 numbers users may claim
	Region        string   // default region for national numbers
	APIURL        string
	AccountSID    string
	AuthToken     string
	WebhookListen string // inbound and status webhooks; empty: none
	WebhookURL    string // public base URL of WebhookListen, no trailing slash
	// Provider sends the texts; nil: a Twilio provider at APIURL.
	Provider Provider
}

// Bridge is the SMS bridge.
type Bridge struct {
	opts     Options
	host     bridges.Host
	provider Provider
	// webhookAddr is where the webhooks are served (set by Run);
	// shutdownWait bounds how long a stop waits for the webhooks being
	// answered.
	webhookAddr  net.Addr
	shutdownWait time.Duration
	// jobs sends the queued texts (runJob).
	jobs *bridges.Runner
}

// New returns an SMS bridge.
func New(opts Options) *Bridge {
	opts.WebhookURL = strings.TrimRight(opts.WebhookURL, "/")
	b := &Bridge{opts: opts, provider: opts.Provider, shutdownWait: 5 * time.Second}
	if b.provider == nil {
		b.provider = NewTwilio(opts.APIURL, opts.AccountSID, opts.AuthToken)
	}
	return b
}

// Run implements bridges.Bridge: the webhook listener and the runner
// sending queued texts run until ctx is done. It returns once the runner
// has recorded the text it was sending and no webhook handler runs (those
// still running after shutdownWait are cut off), so the store is not
// closed under them.
func (b *Bridge) Run(ctx context.Context, host bridges.Host) error {
	b.host = host
	var work sync.WaitGroup
	if b.opts.WebhookListen != "" {
		ln, err := net.Listen("tcp", b.opts.WebhookListen)
		if err != nil {
			return fmt.Errorf("PASSERELLE_SMS_WEBHOOK_LISTEN: %w", err)
		}
		if b.opts.AuthToken == "" {
			host.Log().Warn("PASSERELLE_SMS_AUTH_TOKEN is not set: every webhook will be refused (403)")
		}
		b.webhookAddr = ln.Addr()
		host.Log().Info("SMS webhooks listening", "addr", ln.Addr().String(), "url", b.opts.WebhookURL)
		work.Go(func() { b.serveWebhooks(ctx, ln) })
	} else {
		host.Log().Warn("PASSERELLE_SMS_WEBHOOK_LISTEN is not set: no inbound texts and no delivery reports")
	}
	b.jobs = bridges.NewRunner(host, jobKind, b.runJob)
	work.Go(func() { b.jobs.Run(ctx) })
	host.Ready()
	work.Wait()
	return nil
}

// Handle implements bridges.Bridge.
func (b *Bridge) Handle(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	if bridges.AnswerContactIQ(b.host, st, bridges.Identity{Category: "client", Type: "sms", Name: "SMS"},
		stanza.NSReceipts, stanza.NSOOB) {
		return
	}
	if bridges.AnswerContactPresence(b.host, st) {
		return
	}
	local := stanza.Local(st.Attr("to"))
	if local != "" {
		if _, err := mapping.NumberFromLocal(local); err != nil {
			bridges.Refuse(b.host, st, stanza.Errorf("jid-malformed", "“"+local+"” is not a phone number in international format."))
			return
		}
	}
	if st.Local == "message" {
		b.handleMessage(ctx, u, st)
	}
}

// Kind implements bridges.Bridge.
func (b *Bridge) Kind() string { return "sms" }

// Identities implements bridges.Bridge.
func (b *Bridge) Identities() []bridges.Identity {
	return []bridges.Identity{{Category: "gateway", Type: "sms", Name: "SMS"}}
}

// Features implements bridges.Bridge.
func (b *Bridge) Features() []string { return nil }

// RegistrationRequired implements bridges.Bridge: texts leave from the
// user's claimed number.
func (b *Bridge) RegistrationRequired() bool { return true }

// RegistrationForm implements bridges.Bridge.
func (b *Bridge) RegistrationForm(current *bridges.Registration) *form.Form {
	number := form.Field{Var: "number", Type: form.ListSingle, Label: "Your phone number", Required: true,
		Desc: "The gateway number your texts leave from and replies reach."}
	for _, n := range b.opts.Numbers {
		number.Options = append(number.Options, form.Option{Label: n, Value: n})
	}
	if current != nil {
		number.Values = []string{current.Fields["number"]}
	}
	return &form.Form{Type: "form", Title: "SMS registration",
		Instructions: "Choose the phone number to send and receive texts with.",
		Fields: []form.Field{
			{Var: "FORM_TYPE", Type: form.Hidden, Values: []string{stanza.NSRegister}},
			number,
		}}
}

// Register implements bridges.Bridge: the number must be one of the
// gateway's; the store makes it the user's alone.
func (b *Bridge) Register(ctx context.Context, user string, values map[string]string, current *bridges.Registration) (*bridges.Registered, error) {
	n, err := mapping.NormalizeNumber(values["number"], b.opts.Region)
	if err != nil || !slices.Contains(b.opts.Numbers, n) {
		return nil, stanza.Errorf("not-acceptable", "“"+values["number"]+"” is not one of this gateway's numbers.")
	}
	return &bridges.Registered{Fields: map[string]string{"number": n}, Claims: []string{n}}, nil
}

// Unregistered implements bridges.Bridge.
func (b *Bridge) Unregistered(ctx context.Context, user string) {}

// Prompt implements bridges.Bridge.
func (b *Bridge) Prompt() (string, string) {
	return "Enter the phone number of the contact, in international (+44 20 7946 0958) or national format.", "Phone number"
}

// Translate implements bridges.Bridge.
func (b *Bridge) Translate(ctx context.Context, input string) (string, error) {
	n, err := mapping.NormalizeNumber(input, b.opts.Region)
	if err != nil {
		return "", stanza.Errorf("jid-malformed", "“"+input+"” is not a phone number: "+errText(err))
	}
	return n, nil
}

func errText(err error) string {
	if errors.Is(err, mapping.ErrMalformed) {
		return err.Error()
	}
	return "invalid"
}
