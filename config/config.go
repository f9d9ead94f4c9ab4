// Package config loads Passerelle's configuration from PASSERELLE_*
// environment variables and validates it once at start.
//
// The variables are described by the struct tags of spec: envconfig derives
// each name (PASSERELLE_ + the field name split into words) and prints the
// usage table from them. Values are read by a small loader of our own so
// that LoadFrom can take any lookup function without touching the process
// environment.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nyaruka/phonenumbers"

	"mellium.im/xmpp/jid"
	"passerelle/mapping"
)

const prefix = "PASSERELLE"

// fileSuffixes lists the name endings of variables that may instead be
// given as <NAME>_FILE, naming a file that holds the value.
var fileSuffixes = []string{"_SECRET", "_PASSWORD", "_TOKEN", "_KEY"}

// spec is the environment contract. Field names are chosen so that
// split_words yields the variable name (SMSApiURL -> SMS_API_URL).
type spec struct {
	XMPPAddr                string        `split_words:"true" default:"127.0.0.1:5347" desc:"component port of the XMPP server (host:port)"`
	XMPPSecret              string        `split_words:"true" required:"true" desc:"component secret, shared by all bridge components"`
	DB                      string        `split_words:"true" default:"passerelle.db" desc:"SQLite database file, or a postgres:// URL for PostgreSQL"`
	Admins                  []string      `split_words:"true" desc:"bare JIDs with admin rights, comma-separated"`
	Allow                   []string      `split_words:"true" desc:"who may use the gateway: comma-separated domains or bare JIDs (default: the parent domain of each component)"`
	IRCDomain               string        `split_words:"true" desc:"component domain of the IRC bridge (empty: bridge off)"`
	IRCAllowPrivate         bool          `split_words:"true" default:"false" desc:"allow IRC connections to loopback/private addresses"`
	IRCPresencePoll         time.Duration `split_words:"true" default:"60s" desc:"how often the presence of IRC contacts is polled (ISON, USERHOST) on networks without MONITOR, and their away state on networks without away-notify and extended-monitor (duration, at least 1s)"`
	MailboxAllowPrivate     bool          `split_words:"true" default:"false" desc:"allow users' own IMAP/SMTP servers (mailbox mode) on loopback/private/link-local addresses"`
	EmailDomain             string        `split_words:"true" desc:"component domain of the email bridge, also mail domain of hosted addresses (empty: bridge off)"`
	SMTPListen              string        `split_words:"true" desc:"inbound SMTP listener (host:port), e.g. 127.0.0.1:2525"`
	SMTPRelay               string        `split_words:"true" desc:"outbound relay, smtp://[user:pass@]host:port (STARTTLS when offered; required with credentials unless on loopback) or smtps://..."`
	SMTPMaxSize             int64         `split_words:"true" default:"10485760" desc:"largest inbound mail in bytes"`
	SMTPMaxConnections      int64         `split_words:"true" default:"100" desc:"most simultaneous inbound SMTP connections (more: 421)"`
	SMTPMaxConnectionsPerIP int64         `split_words:"true" default:"10" desc:"most simultaneous inbound SMTP connections from one client address, at most PASSERELLE_SMTP_MAX_CONNECTIONS; the relay's addresses are exempt"`
	SMTPTimeout             time.Duration `split_words:"true" default:"5m" desc:"inbound SMTP: how long the gateway waits for a client's next command or data, and to write an answer (idle clients are closed with 421)"`
	SMTPTrustedAuthserv     string        `split_words:"true" desc:"authserv-id of a fronting MTA whose Authentication-Results header is trusted instead of the gateway's own SPF/DKIM/DMARC checks (others are ignored)"`
	DNSResolver             string        `split_words:"true" desc:"DNS server (host:port) for the SPF, DKIM and DMARC lookups of inbound mail (empty: the system's resolver)"`
	SMSDomain               string        `split_words:"true" desc:"component domain of the SMS bridge (empty: bridge off)"`
	SMSApiURL               string        `split_words:"true" default:"https://api.twilio.com" desc:"base URL of the Twilio-compatible provider API"`
	SMSAccountSID           string        `split_words:"true" desc:"provider account SID"`
	SMSAuthToken            string        `split_words:"true" desc:"provider token"`
	SMSWebhookListen        string        `split_words:"true" desc:"HTTP listener (host:port) for inbound SMS/status webhooks"`
	SMSWebhookURL           string        `split_words:"true" desc:"public base URL of that listener"`
	SMSNumbers              []string      `split_words:"true" desc:"provider numbers users may claim (E.164, comma-separated)"`
	SMSRegion               string        `split_words:"true" default:"US" desc:"default region for numbers typed without +"`
	StoreKey                string        `split_words:"true" desc:"key that seals stored foreign credentials: 64 hex digits or base64 of 32+ bytes is a random key (HKDF-SHA256), anything else a passphrase (Argon2id, salt kept in the database); a wrong key stops the start (exit 2); empty: clear text, with a warning at start"`
	RetryMaxDelay           time.Duration `split_words:"true" default:"10m" desc:"cap of the retry backoff (duration)"`
	HTTPListen              string        `split_words:"true" desc:"/healthz and /metrics listener (host:port)"`
	LogLevel                string        `split_words:"true" default:"info" desc:"log level: debug, info, warn or error"`
}

// Config is the validated configuration.
type Config struct {
	XMPPAddr   string // host:port of the XMPP server's component port
	XMPPSecret string
	DB         string

	Admins []string // normalised bare JIDs
	Allow  []string // normalised domains or bare JIDs, as given; see AllowDefault

	IRCDomain       string // empty: bridge off
	IRCAllowPrivate bool
	IRCPresencePoll time.Duration

	MailboxAllowPrivate bool

	EmailDomain string // empty: bridge off
	SMTPListen  string
	SMTPRelay   string // smtp:// or smtps:// URL with host:port
	SMTPMaxSize int64
	// Inbound SMTP connection limits and timeout.
	SMTPMaxConnections      int
	SMTPMaxConnectionsPerIP int
	SMTPTimeout             time.Duration
	SMTPTrustedAuthserv     string // empty: the gateway checks SPF, DKIM and DMARC itself
	DNSResolver             string // host:port; empty: the system's resolver

	SMSDomain        string // empty: bridge off
	SMSAPIURL        string // without trailing slash
	SMSAccountSID    string
	SMSAuthToken     string
	SMSWebhookListen string
	SMSWebhookURL    string   // without trailing slash
	SMSNumbers       []string // E.164
	SMSRegion        string   // upper-case region code

	StoreKey      string // empty: credentials are stored in clear
	RetryMaxDelay time.Duration
	HTTPListen    string
	LogLevel      slog.Level
}

// Error is a configuration error; Var names the environment variable at fault.
type Error struct {
	Var string
	Err error
}

func (e *Error) Error() string { return e.Var + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func errorf(name, format string, args ...any) *Error {
	return &Error{Var: name, Err: fmt.Errorf(format, args...)}
}

// Load reads the configuration from the process environment.
func Load() (*Config, error) { return LoadFrom(os.LookupEnv) }

// LoadFrom reads the configuration through lookup, which behaves like
// os.LookupEnv. An empty variable counts as unset. All errors are *Error.
func LoadFrom(lookup func(string) (string, bool)) (*Config, error) {
	var s spec
	if err := s.load(lookup); err != nil {
		return nil, err
	}
	c := &Config{
		XMPPAddr:                s.XMPPAddr,
		XMPPSecret:              s.XMPPSecret,
		DB:                      s.DB,
		Admins:                  s.Admins,
		Allow:                   s.Allow,
		IRCDomain:               s.IRCDomain,
		IRCAllowPrivate:         s.IRCAllowPrivate,
		IRCPresencePoll:         s.IRCPresencePoll,
		MailboxAllowPrivate:     s.MailboxAllowPrivate,
		EmailDomain:             s.EmailDomain,
		SMTPListen:              s.SMTPListen,
		SMTPRelay:               s.SMTPRelay,
		SMTPMaxSize:             s.SMTPMaxSize,
		SMTPMaxConnections:      int(s.SMTPMaxConnections),
		SMTPMaxConnectionsPerIP: int(s.SMTPMaxConnectionsPerIP),
		SMTPTimeout:             s.SMTPTimeout,
		SMTPTrustedAuthserv:     s.SMTPTrustedAuthserv,
		DNSResolver:             s.DNSResolver,
		SMSDomain:               s.SMSDomain,
		SMSAPIURL:               s.SMSApiURL,
		SMSAccountSID:           s.SMSAccountSID,
		SMSAuthToken:            s.SMSAuthToken,
		SMSWebhookListen:        s.SMSWebhookListen,
		SMSWebhookURL:           s.SMSWebhookURL,
		SMSNumbers:              s.SMSNumbers,
		SMSRegion:               s.SMSRegion,
		StoreKey:                s.StoreKey,
		RetryMaxDelay:           s.RetryMaxDelay,
		HTTPListen:              s.HTTPListen,
	}
	if err := c.LogLevel.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return nil, errorf("PASSERELLE_LOG_LEVEL", "want debug, info, warn or error, got %q", s.LogLevel)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

const usageFormat = `Passerelle is configured through these environment variables:

VARIABLE	DEFAULT	DESCRIPTION
{{range .}}{{usage_key .}}	{{usage_default .}}{{if eq (usage_required .) "true"}}(required){{end}}	{{usage_description .}}
{{end}}
Variables ending in _SECRET, _PASSWORD, _TOKEN or _KEY may instead be given as
<NAME>_FILE=/path: the file's content, without trailing newlines, is the value.
Giving both is an error. An empty variable counts as unset.
`

// Usage prints every variable with its default and description.
func Usage(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if err := envconfig.Usagef(prefix, &spec{}, tw, usageFormat); err != nil {
		panic(err) // the template and spec are static
	}
	tw.Flush()
}

// Unknown returns the names of PASSERELLE_* variables in environ (as from
// os.Environ) that are not part of the configuration, so they can be warned
// about.
func Unknown(environ []string) []string {
	known := make(map[string]bool)
	for _, k := range keys() {
		known[k] = true
		if hasFile(k) {
			known[k+"_FILE"] = true
		}
	}
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, prefix+"_") && !known[name] {
			unknown = append(unknown, name)
		}
	}
	return unknown
}

// keys returns the variable name of each spec field, in field order, as
// envconfig derives it.
var keys = sync.OnceValue(func() []string {
	var b strings.Builder
	if err := envconfig.Usagef(prefix, &spec{}, &b, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		panic(err)
	}
	return strings.Fields(b.String())
})

func hasFile(name string) bool {
	return slices.ContainsFunc(fileSuffixes, func(s string) bool { return strings.HasSuffix(name, s) })
}

// load fills s through lookup, applying defaults and _FILE variants.
func (s *spec) load(lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(s).Elem()
	for i, name := range keys() {
		tag := v.Type().Field(i).Tag
		val, err := value(lookup, name)
		if err != nil {
			return err
		}
		if val == "" {
			val = tag.Get("default")
		}
		if val == "" {
			if tag.Get("required") == "true" {
				if hasFile(name) {
					return errorf(name, "required: set it or %s_FILE", name)
				}
				return errorf(name, "required")
			}
			continue
		}
		if err := parse(v.Field(i).Addr().Interface(), val); err != nil {
			return &Error{Var: name, Err: err}
		}
	}
	return nil
}

// value returns the value of variable name, or the content of the file named by
// name_FILE for the variables that accept it.
func value(lookup func(string) (string, bool), name string) (string, error) {
	val, _ := lookup(name)
	if !hasFile(name) {
		return val, nil
	}
	path, _ := lookup(name + "_FILE")
	if path == "" {
		return val, nil
	}
	if val != "" {
		return "", errorf(name, "both %s and %s_FILE are set", name, name)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &Error{Var: name + "_FILE", Err: err}
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// parse converts s into the field dst points to.
func parse(dst any, s string) error {
	var err error
	switch p := dst.(type) {
	case *string:
		*p = s
	case *[]string:
		for e := range strings.SplitSeq(s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				*p = append(*p, e)
			}
		}
	case *bool:
		if *p, err = strconv.ParseBool(s); err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
	case *int64:
		if *p, err = strconv.ParseInt(s, 10, 64); err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
	case *time.Duration:
		if *p, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("not a duration such as 30s or 10m: %q", s)
		}
	default:
		panic(fmt.Sprintf("config: unsupported field type %T", dst))
	}
	return nil
}

// check validates c and normalises domains, JIDs, numbers and URLs in place.
func (c *Config) check() error {
	if err := checkAddr("PASSERELLE_XMPP_ADDR", c.XMPPAddr, false); err != nil {
		return err
	}

	domains := []struct {
		name string
		val  *string
	}{
		{"PASSERELLE_IRC_DOMAIN", &c.IRCDomain},
		{"PASSERELLE_EMAIL_DOMAIN", &c.EmailDomain},
		{"PASSERELLE_SMS_DOMAIN", &c.SMSDomain},
	}
	for i, d := range domains {
		if *d.val == "" {
			continue
		}
		j, err := jid.Parse(*d.val)
		if err == nil && (j.Localpart() != "" || j.Resourcepart() != "") {
			err = errors.New("has a localpart or resource")
		}
		if err != nil {
			return errorf(d.name, "invalid domain %q: %v", *d.val, err)
		}
		*d.val = j.Domainpart()
		for _, prev := range domains[:i] {
			if *prev.val == *d.val {
				return errorf(d.name, "same domain as %s", prev.name)
			}
		}
	}
	if len(c.Domains()) == 0 {
		return errorf("PASSERELLE_IRC_DOMAIN", "no bridge enabled: set at least one of PASSERELLE_IRC_DOMAIN, PASSERELLE_EMAIL_DOMAIN, PASSERELLE_SMS_DOMAIN")
	}

	if err := bareJIDs("PASSERELLE_ADMINS", c.Admins); err != nil {
		return err
	}
	if err := bareJIDs("PASSERELLE_ALLOW", c.Allow); err != nil {
		return err
	}

	if err := checkAddr("PASSERELLE_SMTP_LISTEN", c.SMTPListen, true); err != nil {
		return err
	}
	if c.SMTPRelay != "" {
		if err := checkRelay(c.SMTPRelay); err != nil {
			return err
		}
	}
	if c.SMTPMaxSize <= 0 {
		return errorf("PASSERELLE_SMTP_MAX_SIZE", "must be positive, got %d", c.SMTPMaxSize)
	}
	if c.SMTPMaxConnections <= 0 || c.SMTPMaxConnections > 1<<20 {
		return errorf("PASSERELLE_SMTP_MAX_CONNECTIONS", "must be from 1 to %d, got %d", 1<<20, c.SMTPMaxConnections)
	}
	if c.SMTPMaxConnectionsPerIP <= 0 || c.SMTPMaxConnectionsPerIP > c.SMTPMaxConnections {
		return errorf("PASSERELLE_SMTP_MAX_CONNECTIONS_PER_IP", "must be from 1 to PASSERELLE_SMTP_MAX_CONNECTIONS (%d), got %d", c.SMTPMaxConnections, c.SMTPMaxConnectionsPerIP)
	}
	if c.SMTPTimeout < time.Second {
		return errorf("PASSERELLE_SMTP_TIMEOUT", "must be at least 1s, got %v", c.SMTPTimeout)
	}
	if strings.ContainsAny(c.SMTPTrustedAuthserv, " \t;") {
		return errorf("PASSERELLE_SMTP_TRUSTED_AUTHSERV", "want one authserv-id (a host name, without spaces or ';'), got %q", c.SMTPTrustedAuthserv)
	}
	if err := checkAddr("PASSERELLE_DNS_RESOLVER", c.DNSResolver, false); err != nil {
		return err
	}
	if c.EmailDomain == "" {
		const reason = "set but PASSERELLE_EMAIL_DOMAIN is empty, so the email bridge is off"
		if c.SMTPListen != "" {
			return errorf("PASSERELLE_SMTP_LISTEN", reason)
		}
		if c.SMTPRelay != "" {
			return errorf("PASSERELLE_SMTP_RELAY", reason)
		}
	}

	var err error
	if c.SMSAPIURL, err = httpURL("PASSERELLE_SMS_API_URL", c.SMSAPIURL); err != nil {
		return err
	}
	if c.SMSWebhookURL, err = httpURL("PASSERELLE_SMS_WEBHOOK_URL", c.SMSWebhookURL); err != nil {
		return err
	}
	if err := checkAddr("PASSERELLE_SMS_WEBHOOK_LISTEN", c.SMSWebhookListen, true); err != nil {
		return err
	}
	if c.SMSWebhookListen != "" && c.SMSWebhookURL == "" {
		return errorf("PASSERELLE_SMS_WEBHOOK_LISTEN", "set without PASSERELLE_SMS_WEBHOOK_URL, which is needed to check webhook signatures")
	}
	c.SMSRegion = strings.ToUpper(c.SMSRegion)
	if !phonenumbers.GetSupportedRegions()[c.SMSRegion] {
		return errorf("PASSERELLE_SMS_REGION", "unknown region %q, want a country code such as US or FR", c.SMSRegion)
	}
	for i, n := range c.SMSNumbers {
		e164, err := mapping.NormalizeNumber(n, c.SMSRegion)
		if err != nil {
			return errorf("PASSERELLE_SMS_NUMBERS", "invalid phone number %q", n)
		}
		c.SMSNumbers[i] = e164
	}

	if c.IRCPresencePoll < time.Second {
		return errorf("PASSERELLE_IRC_PRESENCE_POLL", "must be at least 1s, got %v", c.IRCPresencePoll)
	}
	if c.RetryMaxDelay < time.Second {
		return errorf("PASSERELLE_RETRY_MAX_DELAY", "must be at least 1s, got %v", c.RetryMaxDelay)
	}
	return checkAddr("PASSERELLE_HTTP_LISTEN", c.HTTPListen, true)
}

// checkAddr checks that addr, if set, is host:port. Listeners may leave the
// host empty (all interfaces) and use port 0 (any free port).
func checkAddr(name, addr string, listener bool) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errorf(name, "want host:port: %v", err)
	}
	if host == "" && !listener {
		return errorf(name, "missing host in %q", addr)
	}
	if err := checkPort(port, listener); err != nil {
		return &Error{Var: name, Err: err}
	}
	return nil
}

func checkPort(port string, zeroOK bool) error {
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !zeroOK) {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// bareJIDs normalises each entry of list, a bare JID or a domain.
func bareJIDs(name string, list []string) error {
	for i, s := range list {
		j, err := jid.Parse(s)
		if err != nil {
			return errorf(name, "invalid JID %q: %v", s, err)
		}
		if j.Resourcepart() != "" {
			return errorf(name, "%q has a resource; want a bare JID or a domain", s)
		}
		list[i] = j.String()
	}
	return nil
}

// checkRelay checks PASSERELLE_SMTP_RELAY. Errors do not quote the URL, which
// may hold a password.
func checkRelay(raw string) error {
	const name = "PASSERELLE_SMTP_RELAY"
	u, err := parseURL(raw)
	if err != nil {
		return &Error{Var: name, Err: err}
	}
	if u.Scheme != "smtp" && u.Scheme != "smtps" {
		return errorf(name, "scheme must be smtp or smtps, got %q", u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return errorf(name, "want smtp://[user:pass@]host:port or smtps://[user:pass@]host:port")
	}
	if err := checkPort(u.Port(), false); err != nil {
		return &Error{Var: name, Err: err}
	}
	return nil
}

// httpURL checks that raw, if set, is an absolute http or https URL, and
// returns it without trailing slash.
func httpURL(name, raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := parseURL(raw)
	if err != nil {
		return "", &Error{Var: name, Err: err}
	}
	switch {
	case u.Scheme == "" || u.Host == "":
		return "", errorf(name, "want an absolute URL such as https://example.org")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errorf(name, "scheme must be http or https, got %q", u.Scheme)
	}
	return strings.TrimRight(raw, "/"), nil
}

// parseURL is url.Parse with errors that do not repeat the URL.
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if ue, ok := err.(*url.Error); ok {
		return nil, fmt.Errorf("invalid URL: %v", ue.Err)
	}
	return u, err
}

// Domains returns the enabled component domains in the order irc, email, sms.
func (c *Config) Domains() []string {
	var ds []string
	for _, d := range []string{c.IRCDomain, c.EmailDomain, c.SMSDomain} {
		if d != "" {
			ds = append(ds, d)
		}
	}
	return ds
}

// AllowDefault returns Allow or, if it is empty, the parent domain of each
// enabled component (irc.example.org -> example.org), without duplicates.
// A component domain without a parent (a single label or an IP address)
// contributes nothing.
func (c *Config) AllowDefault() []string {
	if len(c.Allow) > 0 {
		return slices.Clone(c.Allow)
	}
	var allow []string
	for _, d := range c.Domains() {
		if _, parent, ok := strings.Cut(d, "."); ok && net.ParseIP(strings.Trim(d, "[]")) == nil && !slices.Contains(allow, parent) {
			allow = append(allow, parent)
		}
	}
	return allow
}

// IsAdmin reports whether bareJID, normalised (lower-cased), is an admin.
func (c *Config) IsAdmin(bareJID string) bool {
	return slices.Contains(c.Admins, bareJID)
}

// Allowed reports whether bareJID, normalised (lower-cased), may use the
// gateway: it equals a bare JID entry of AllowDefault, or its domain equals
// a domain entry.
func (c *Config) Allowed(bareJID string) bool {
	domain := bareJID[strings.IndexByte(bareJID, '@')+1:]
	for _, e := range c.AllowDefault() {
		if e == bareJID || e == domain {
			return true
		}
	}
	return false
}
