package config

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// contract lists every variable, in order.
var contract = []string{
	"PASSERELLE_XMPP_ADDR",
	"PASSERELLE_XMPP_SECRET",
	"PASSERELLE_DB",
	"PASSERELLE_ADMINS",
	"PASSERELLE_ALLOW",
	"PASSERELLE_IRC_DOMAIN",
	"PASSERELLE_IRC_ALLOW_PRIVATE",
	"PASSERELLE_IRC_PRESENCE_POLL",
	"PASSERELLE_MAILBOX_ALLOW_PRIVATE",
	"PASSERELLE_EMAIL_DOMAIN",
	"PASSERELLE_SMTP_LISTEN",
	"PASSERELLE_SMTP_RELAY",
	"PASSERELLE_SMTP_MAX_SIZE",
	"PASSERELLE_SMTP_MAX_CONNECTIONS",
	"PASSERELLE_SMTP_MAX_CONNECTIONS_PER_IP",
	"PASSERELLE_SMTP_TIMEOUT",
	"PASSERELLE_SMTP_TRUSTED_AUTHSERV",
	"PASSERELLE_DNS_RESOLVER",
	"PASSERELLE_SMS_DOMAIN",
	"PASSERELLE_SMS_API_URL",
	"PASSERELLE_SMS_ACCOUNT_SID",
	"PASSERELLE_SMS_AUTH_TOKEN",
	"PASSERELLE_SMS_WEBHOOK_LISTEN",
	"PASSERELLE_SMS_WEBHOOK_URL",
	"PASSERELLE_SMS_NUMBERS",
	"PASSERELLE_SMS_REGION",
	"PASSERELLE_STORE_KEY",
	"PASSERELLE_RETRY_MAX_DELAY",
	"PASSERELLE_HTTP_LISTEN",
	"PASSERELLE_LOG_LEVEL",
}

// env returns a lookup function over the minimal valid environment plus
// vars; a value "-" removes a variable.
func env(vars map[string]string) func(string) (string, bool) {
	m := map[string]string{
		"PASSERELLE_XMPP_SECRET": "s3cret",
		"PASSERELLE_IRC_DOMAIN":  "irc.example.org",
	}
	for k, v := range vars {
		if v == "-" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	if got := keys(); !slices.Equal(got, contract) {
		t.Errorf("keys() = %q\nwant %q", got, contract)
	}
	if n := reflect.TypeFor[spec]().NumField(); n != len(keys()) {
		t.Errorf("spec has %d fields, %d keys", n, len(keys()))
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := LoadFrom(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		XMPPAddr:                "127.0.0.1:5347",
		XMPPSecret:              "s3cret",
		DB:                      "passerelle.db",
		IRCDomain:               "irc.example.org",
		IRCPresencePoll:         time.Minute,
		SMTPMaxSize:             10485760,
		SMTPMaxConnections:      100,
		SMTPMaxConnectionsPerIP: 10,
		SMTPTimeout:             5 * time.Minute,
		SMSAPIURL:               "https://api.twilio.com",
		SMSRegion:               "US",
		RetryMaxDelay:           10 * time.Minute,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadFrom = %+v\nwant %+v", c, want)
	}
}

func TestEmptyIsUnset(t *testing.T) {
	t.Parallel()
	vars := map[string]string{}
	for _, k := range contract {
		vars[k] = ""
	}
	vars["PASSERELLE_XMPP_SECRET"] = "s3cret"
	vars["PASSERELLE_SMS_DOMAIN"] = "sms.example.org"
	c, err := LoadFrom(env(vars))
	if err != nil {
		t.Fatal(err)
	}
	if c.XMPPAddr != "127.0.0.1:5347" || c.SMSRegion != "US" || c.RetryMaxDelay != 10*time.Minute {
		t.Errorf("empty variables did not take defaults: %+v", c)
	}
}

func TestEveryVariable(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"PASSERELLE_XMPP_ADDR":                   "xmpp.internal:5275",
		"PASSERELLE_XMPP_SECRET":                 "other",
		"PASSERELLE_DB":                          "/var/lib/passerelle/db.sqlite",
		"PASSERELLE_ADMINS":                      "Alice@Example.ORG, bob@example.org",
		"PASSERELLE_ALLOW":                       "Example.org,carol@other.net,",
		"PASSERELLE_IRC_DOMAIN":                  "IRC.example.org",
		"PASSERELLE_IRC_ALLOW_PRIVATE":           "true",
		"PASSERELLE_IRC_PRESENCE_POLL":           "5m",
		"PASSERELLE_MAILBOX_ALLOW_PRIVATE":       "true",
		"PASSERELLE_EMAIL_DOMAIN":                "mail.example.org.",
		"PASSERELLE_SMTP_LISTEN":                 "127.0.0.1:2525",
		"PASSERELLE_SMTP_RELAY":                  "smtps://u:p@smtp.example.org:465",
		"PASSERELLE_SMTP_MAX_SIZE":               "1024",
		"PASSERELLE_SMTP_MAX_CONNECTIONS":        "40",
		"PASSERELLE_SMTP_MAX_CONNECTIONS_PER_IP": "4",
		"PASSERELLE_SMTP_TIMEOUT":                "90s",
		"PASSERELLE_SMTP_TRUSTED_AUTHSERV":       "mx.example.org",
		"PASSERELLE_DNS_RESOLVER":                "127.0.0.53:53",
		"PASSERELLE_SMS_DOMAIN":                  "sms.example.org",
		"PASSERELLE_SMS_API_URL":                 "http://127.0.0.1:9000/",
		"PASSERELLE_SMS_ACCOUNT_SID":             "AC123",
		"PASSERELLE_SMS_AUTH_TOKEN":              "tok",
		"PASSERELLE_SMS_WEBHOOK_LISTEN":          ":0",
		"PASSERELLE_SMS_WEBHOOK_URL":             "https://gw.example.org/sms",
		"PASSERELLE_SMS_NUMBERS":                 "06 12 34 56 78,+1 415 555 2671",
		"PASSERELLE_SMS_REGION":                  "fr",
		"PASSERELLE_STORE_KEY":                   "k",
		"PASSERELLE_RETRY_MAX_DELAY":             "90s",
		"PASSERELLE_HTTP_LISTEN":                 "[::1]:9090",
		"PASSERELLE_LOG_LEVEL":                   "DEBUG",
	}
	if got := slices.Sorted(maps.Keys(vars)); !slices.Equal(got, slices.Sorted(slices.Values(contract))) {
		t.Fatalf("test does not set every variable: %q", got)
	}
	c, err := LoadFrom(env(vars))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		XMPPAddr:                "xmpp.internal:5275",
		XMPPSecret:              "other",
		DB:                      "/var/lib/passerelle/db.sqlite",
		Admins:                  []string{"alice@example.org", "bob@example.org"},
		Allow:                   []string{"example.org", "carol@other.net"},
		IRCDomain:               "irc.example.org",
		IRCAllowPrivate:         true,
		IRCPresencePoll:         5 * time.Minute,
		MailboxAllowPrivate:     true,
		EmailDomain:             "mail.example.org",
		SMTPListen:              "127.0.0.1:2525",
		SMTPRelay:               "smtps://u:p@smtp.example.org:465",
		SMTPMaxSize:             1024,
		SMTPMaxConnections:      40,
		SMTPMaxConnectionsPerIP: 4,
		SMTPTimeout:             90 * time.Second,
		SMTPTrustedAuthserv:     "mx.example.org",
		DNSResolver:             "127.0.0.53:53",
		SMSDomain:               "sms.example.org",
		SMSAPIURL:               "http://127.0.0.1:9000",
		SMSAccountSID:           "AC123",
		SMSAuthToken:            "tok",
		SMSWebhookListen:        ":0",
		SMSWebhookURL:           "https://gw.example.org/sms",
		SMSNumbers:              []string{"+33612345678", "+14155552671"},
		SMSRegion:               "FR",
		StoreKey:                "k",
		RetryMaxDelay:           90 * time.Second,
		HTTPListen:              "[::1]:9090",
		LogLevel:                slog.LevelDebug,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadFrom = %+v\nwant %+v", c, want)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	email := map[string]string{"PASSERELLE_EMAIL_DOMAIN": "mail.example.org"}
	sms := map[string]string{"PASSERELLE_SMS_DOMAIN": "sms.example.org"}
	with := func(base map[string]string, k, v string) map[string]string {
		m := maps.Clone(base)
		m[k] = v
		return m
	}
	tests := []struct {
		name string
		vars map[string]string
		want string // Var of the error
		in   string // in the message
	}{
		{"secret missing", map[string]string{"PASSERELLE_XMPP_SECRET": "-"}, "PASSERELLE_XMPP_SECRET", "required"},
		{"secret empty", map[string]string{"PASSERELLE_XMPP_SECRET": ""}, "PASSERELLE_XMPP_SECRET", "PASSERELLE_XMPP_SECRET_FILE"},
		{"addr no port", map[string]string{"PASSERELLE_XMPP_ADDR": "localhost"}, "PASSERELLE_XMPP_ADDR", "missing port"},
		{"addr no host", map[string]string{"PASSERELLE_XMPP_ADDR": ":5347"}, "PASSERELLE_XMPP_ADDR", "missing host"},
		{"addr port 0", map[string]string{"PASSERELLE_XMPP_ADDR": "localhost:0"}, "PASSERELLE_XMPP_ADDR", "1 to 65535"},
		{"addr port range", map[string]string{"PASSERELLE_XMPP_ADDR": "localhost:65536"}, "PASSERELLE_XMPP_ADDR", "1 to 65535"},
		{"addr port name", map[string]string{"PASSERELLE_XMPP_ADDR": "localhost:xmpp"}, "PASSERELLE_XMPP_ADDR", "1 to 65535"},
		{"no bridge", map[string]string{"PASSERELLE_IRC_DOMAIN": "-"}, "PASSERELLE_IRC_DOMAIN", "PASSERELLE_SMS_DOMAIN"},
		{"irc domain", map[string]string{"PASSERELLE_IRC_DOMAIN": "irc example"}, "PASSERELLE_IRC_DOMAIN", "invalid domain"},
		{"irc domain localpart", map[string]string{"PASSERELLE_IRC_DOMAIN": "a@irc.example.org"}, "PASSERELLE_IRC_DOMAIN", "localpart"},
		{"email domain", map[string]string{"PASSERELLE_EMAIL_DOMAIN": "mail_example.org"}, "PASSERELLE_EMAIL_DOMAIN", "invalid domain"},
		{"sms domain", map[string]string{"PASSERELLE_SMS_DOMAIN": "sms.example.org/res"}, "PASSERELLE_SMS_DOMAIN", "resource"},
		{"same domain", map[string]string{"PASSERELLE_EMAIL_DOMAIN": "IRC.example.org"}, "PASSERELLE_EMAIL_DOMAIN", "PASSERELLE_IRC_DOMAIN"},
		{"same domain sms", with(email, "PASSERELLE_SMS_DOMAIN", "mail.example.org"), "PASSERELLE_SMS_DOMAIN", "PASSERELLE_EMAIL_DOMAIN"},
		{"admins", map[string]string{"PASSERELLE_ADMINS": "alice@example.org,@bad"}, "PASSERELLE_ADMINS", `"@bad"`},
		{"admins resource", map[string]string{"PASSERELLE_ADMINS": "alice@example.org/phone"}, "PASSERELLE_ADMINS", "resource"},
		{"allow", map[string]string{"PASSERELLE_ALLOW": "exa mple.org"}, "PASSERELLE_ALLOW", "invalid JID"},
		{"allow resource", map[string]string{"PASSERELLE_ALLOW": "example.org/x"}, "PASSERELLE_ALLOW", "resource"},
		{"private", map[string]string{"PASSERELLE_IRC_ALLOW_PRIVATE": "maybe"}, "PASSERELLE_IRC_ALLOW_PRIVATE", "not a boolean"},
		{"smtp listen", with(email, "PASSERELLE_SMTP_LISTEN", "2525"), "PASSERELLE_SMTP_LISTEN", "host:port"},
		{"smtp listen off", map[string]string{"PASSERELLE_SMTP_LISTEN": ":2525"}, "PASSERELLE_SMTP_LISTEN", "PASSERELLE_EMAIL_DOMAIN"},
		{"smtp relay off", map[string]string{"PASSERELLE_SMTP_RELAY": "smtp://relay:25"}, "PASSERELLE_SMTP_RELAY", "PASSERELLE_EMAIL_DOMAIN"},
		{"smtp relay scheme", with(email, "PASSERELLE_SMTP_RELAY", "http://relay:25"), "PASSERELLE_SMTP_RELAY", "smtp or smtps"},
		{"smtp relay no port", with(email, "PASSERELLE_SMTP_RELAY", "smtp://relay"), "PASSERELLE_SMTP_RELAY", "host:port"},
		{"smtp relay no host", with(email, "PASSERELLE_SMTP_RELAY", "smtp://:25"), "PASSERELLE_SMTP_RELAY", "host:port"},
		{"smtp relay port", with(email, "PASSERELLE_SMTP_RELAY", "smtp://relay:0"), "PASSERELLE_SMTP_RELAY", "1 to 65535"},
		{"smtp relay parse", with(email, "PASSERELLE_SMTP_RELAY", "smtp://u:p%zz@relay:25"), "PASSERELLE_SMTP_RELAY", "invalid URL"},
		{"smtp max size", map[string]string{"PASSERELLE_SMTP_MAX_SIZE": "0"}, "PASSERELLE_SMTP_MAX_SIZE", "positive"},
		{"smtp max connections", map[string]string{"PASSERELLE_SMTP_MAX_CONNECTIONS": "0"}, "PASSERELLE_SMTP_MAX_CONNECTIONS", "from 1"},
		{"smtp per ip above max", map[string]string{"PASSERELLE_SMTP_MAX_CONNECTIONS": "5", "PASSERELLE_SMTP_MAX_CONNECTIONS_PER_IP": "6"}, "PASSERELLE_SMTP_MAX_CONNECTIONS_PER_IP", "from 1 to"},
		{"smtp timeout", map[string]string{"PASSERELLE_SMTP_TIMEOUT": "10ms"}, "PASSERELLE_SMTP_TIMEOUT", "at least 1s"},
		{"trusted authserv", map[string]string{"PASSERELLE_SMTP_TRUSTED_AUTHSERV": "mx.example.org; spf=pass"}, "PASSERELLE_SMTP_TRUSTED_AUTHSERV", "one authserv-id"},
		{"dns resolver", map[string]string{"PASSERELLE_DNS_RESOLVER": "127.0.0.1"}, "PASSERELLE_DNS_RESOLVER", "host:port"},
		{"smtp max size parse", map[string]string{"PASSERELLE_SMTP_MAX_SIZE": "10M"}, "PASSERELLE_SMTP_MAX_SIZE", "not an integer"},
		{"sms api url", map[string]string{"PASSERELLE_SMS_API_URL": "ftp://api.example.org"}, "PASSERELLE_SMS_API_URL", "http or https"},
		{"sms api url relative", map[string]string{"PASSERELLE_SMS_API_URL": "/api"}, "PASSERELLE_SMS_API_URL", "absolute"},
		{"sms api url parse", map[string]string{"PASSERELLE_SMS_API_URL": "https://[::1"}, "PASSERELLE_SMS_API_URL", "invalid URL"},
		{"sms webhook url", with(sms, "PASSERELLE_SMS_WEBHOOK_URL", "gw.example.org/sms"), "PASSERELLE_SMS_WEBHOOK_URL", "absolute"},
		{"sms webhook listen", with(sms, "PASSERELLE_SMS_WEBHOOK_LISTEN", "localhost:99999"), "PASSERELLE_SMS_WEBHOOK_LISTEN", "1 to 65535"},
		{"sms webhook no url", with(sms, "PASSERELLE_SMS_WEBHOOK_LISTEN", ":8080"), "PASSERELLE_SMS_WEBHOOK_LISTEN", "PASSERELLE_SMS_WEBHOOK_URL"},
		{"sms region", map[string]string{"PASSERELLE_SMS_REGION": "XX"}, "PASSERELLE_SMS_REGION", `"XX"`},
		{"sms numbers", map[string]string{"PASSERELLE_SMS_NUMBERS": "+14155552671,12"}, "PASSERELLE_SMS_NUMBERS", `"12"`},
		{"sms numbers text", map[string]string{"PASSERELLE_SMS_NUMBERS": "call me"}, "PASSERELLE_SMS_NUMBERS", `"call me"`},
		{"irc presence poll min", map[string]string{"PASSERELLE_IRC_PRESENCE_POLL": "0s"}, "PASSERELLE_IRC_PRESENCE_POLL", "at least 1s"},
		{"retry min", map[string]string{"PASSERELLE_RETRY_MAX_DELAY": "500ms"}, "PASSERELLE_RETRY_MAX_DELAY", "at least 1s"},
		{"retry parse", map[string]string{"PASSERELLE_RETRY_MAX_DELAY": "10"}, "PASSERELLE_RETRY_MAX_DELAY", "not a duration"},
		{"log level", map[string]string{"PASSERELLE_LOG_LEVEL": "loud"}, "PASSERELLE_LOG_LEVEL", "loud"},
		{"http listen", map[string]string{"PASSERELLE_HTTP_LISTEN": "localhost"}, "PASSERELLE_HTTP_LISTEN", "host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(env(tt.vars))
			checkError(t, c, err, tt.want, tt.in)
		})
	}
}

func checkError(t *testing.T, c *Config, err error, wantVar, in string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("LoadFrom = %+v, %v; want *Error", c, err)
	}
	if e.Var != wantVar {
		t.Errorf("Var = %s, want %s (%v)", e.Var, wantVar, err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, wantVar+": ") || !strings.Contains(msg, in) {
		t.Errorf("error %q: want prefix %q and to contain %q", msg, wantVar+": ", in)
	}
}

func TestRelayErrorHidesPassword(t *testing.T) {
	t.Parallel()
	for _, relay := range []string{"smtp://user:hunter2@relay", "smtp://user:hunter2%zz@relay:25", "ftp://user:hunter2@relay:25"} {
		_, err := LoadFrom(env(map[string]string{"PASSERELLE_EMAIL_DOMAIN": "mail.example.org", "PASSERELLE_SMTP_RELAY": relay}))
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("relay %q: error %v", relay, err)
		}
	}
}

func TestFileVariants(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	if err := os.WriteFile(good, []byte("from file\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	fields := map[string]func(*Config) string{
		"PASSERELLE_XMPP_SECRET":    func(c *Config) string { return c.XMPPSecret },
		"PASSERELLE_SMS_AUTH_TOKEN": func(c *Config) string { return c.SMSAuthToken },
		"PASSERELLE_STORE_KEY":      func(c *Config) string { return c.StoreKey },
	}
	for name, get := range fields {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := LoadFrom(env(map[string]string{name: "-", name + "_FILE": good}))
			if err != nil {
				t.Fatal(err)
			}
			if got := get(c); got != "from file" {
				t.Errorf("%s = %q, want %q", name, got, "from file")
			}

			c, err = LoadFrom(env(map[string]string{name: "-", name + "_FILE": missing}))
			checkError(t, c, err, name+"_FILE", "no such file")

			c, err = LoadFrom(env(map[string]string{name: "x", name + "_FILE": good}))
			checkError(t, c, err, name, name+"_FILE")
		})
	}

	// Only these variables have a _FILE variant.
	c, err := LoadFrom(env(map[string]string{"PASSERELLE_DB_FILE": good}))
	if err != nil || c.DB != "passerelle.db" {
		t.Errorf("PASSERELLE_DB_FILE was read: %+v, %v", c, err)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = LoadFrom(env(map[string]string{"PASSERELLE_XMPP_SECRET": "-", "PASSERELLE_XMPP_SECRET_FILE": empty}))
	checkError(t, c, err, "PASSERELLE_XMPP_SECRET", "required")
}

func TestUsage(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	Usage(&b)
	out := b.String()
	for _, name := range contract {
		if !strings.Contains(out, name+" ") {
			t.Errorf("usage lacks %s", name)
		}
	}
	for _, s := range []string{"127.0.0.1:5347", "(required)", "passerelle.db", "10485760", "https://api.twilio.com", "10m", "_FILE", "parent domain"} {
		if !strings.Contains(out, s) {
			t.Errorf("usage lacks %q", s)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

func TestDomainsAndAccess(t *testing.T) {
	t.Parallel()
	c, err := LoadFrom(env(map[string]string{
		"PASSERELLE_SMS_DOMAIN":   "sms.other.net",
		"PASSERELLE_EMAIL_DOMAIN": "mail.example.org",
		"PASSERELLE_ADMINS":       "Admin@Example.org",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Domains(), []string{"irc.example.org", "mail.example.org", "sms.other.net"}; !slices.Equal(got, want) {
		t.Errorf("Domains = %q, want %q", got, want)
	}
	if got, want := c.AllowDefault(), []string{"example.org", "other.net"}; !slices.Equal(got, want) {
		t.Errorf("AllowDefault = %q, want %q", got, want)
	}
	for jid, want := range map[string]bool{
		"alice@example.org":   true,
		"bob@other.net":       true,
		"example.org":         true,
		"eve@evil.org":        false,
		"eve@sub.other.net":   false,
		"eve@irc.example.org": false,
	} {
		if got := c.Allowed(jid); got != want {
			t.Errorf("Allowed(%q) = %v, want %v", jid, got, want)
		}
	}
	if !c.IsAdmin("admin@example.org") || c.IsAdmin("alice@example.org") {
		t.Errorf("IsAdmin wrong for %q", c.Admins)
	}

	c.Allow = []string{"carol@other.net", "example.org"}
	if got := c.AllowDefault(); !slices.Equal(got, c.Allow) {
		t.Errorf("AllowDefault = %q, want Allow %q", got, c.Allow)
	}
	for jid, want := range map[string]bool{
		"alice@example.org": true,
		"carol@other.net":   true,
		"bob@other.net":     false,
	} {
		if got := c.Allowed(jid); got != want {
			t.Errorf("Allowed(%q) with Allow = %v, want %v", jid, got, want)
		}
	}

	c = &Config{IRCDomain: "irc", SMSDomain: "127.0.0.1"}
	if got := c.AllowDefault(); len(got) != 0 {
		t.Errorf("AllowDefault without parent domains = %q, want none", got)
	}
}

func TestUnknown(t *testing.T) {
	t.Parallel()
	environ := []string{
		"HOME=/root",
		"PASSERELLE_XMPP_SECRET=x",
		"PASSERELLE_XMPP_SECRET_FILE=/x",
		"PASSERELLE_STORE_KEY_FILE=/k",
		"PASSERELLE_DB_FILE=/db",
		"PASSERELLE_IRC_DOMIAN=irc.example.org",
	}
	if got, want := Unknown(environ), []string{"PASSERELLE_DB_FILE", "PASSERELLE_IRC_DOMIAN"}; !slices.Equal(got, want) {
		t.Errorf("Unknown = %q, want %q", got, want)
	}
}

// TestLoad reads the process environment, so it cannot run in parallel.
func TestLoad(t *testing.T) {
	for _, k := range contract {
		t.Setenv(k, "")
		if hasFile(k) {
			t.Setenv(k+"_FILE", "")
		}
	}
	t.Setenv("PASSERELLE_XMPP_SECRET", "env secret")
	t.Setenv("PASSERELLE_EMAIL_DOMAIN", "mail.example.org")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.XMPPSecret != "env secret" || c.EmailDomain != "mail.example.org" {
		t.Errorf("Load = %+v", c)
	}
}
