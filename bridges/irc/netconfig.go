package irc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/mapping"
	"passerelle/store"
)

// netConfig is a user's settings for one network (ad-hoc "configure").
type netConfig struct {
	Ports         []int  `json:"ports"`
	TLSPorts      []int  `json:"tls_ports"`
	VerifyCert    bool   `json:"verify_cert"`
	Nick          string `json:"nick,omitempty"`
	Password      string `json:"password,omitempty"`      // sealed at rest
	SASLPassword  string `json:"sasl_password,omitempty"` // sealed at rest
	Username      string `json:"username,omitempty"`
	Realname      string `json:"realname,omitempty"`
	ThrottleLimit int    `json:"throttle_limit"` // lines per second; 0: default
}

// secret is a setting sealed at rest, with its JSON name.
type secret struct {
	field string
	value *string
}

func (cfg *netConfig) secrets() []secret {
	return []secret{{"password", &cfg.Password}, {"sasl_password", &cfg.SASLPassword}}
}

// binding is where a sealed setting of user's for server belongs.
func (b *Bridge) binding(user, server, field string) store.Binding {
	return store.Binding{Domain: b.host.Domain(), JID: user, Field: store.NetworkField(server, field)}
}

func defaultNetConfig() netConfig {
	return netConfig{Ports: []int{6667}, TLSPorts: []int{6697}, VerifyCert: true}
}

// loadNetConfig reads user's settings for server (defaults when none). A
// password that does not open (copied from another user's or network's
// settings, or sealed under another key) is logged and left out: it is
// never used, and the user can configure it again.
func (b *Bridge) loadNetConfig(ctx context.Context, user, server string) (netConfig, error) {
	cfg := defaultNetConfig()
	raw, err := b.db.IRCNetworkSettings(ctx, user, server)
	if errors.Is(err, store.ErrNotFound) {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return cfg, fmt.Errorf("failed to decode the irc network settings: %w", err)
	}
	for _, p := range cfg.secrets() {
		v, err := b.opts.Sealer.Open(*p.value, b.binding(user, server, p.field))
		if err != nil {
			b.host.Log().Error("a stored irc password does not open: not used, the user must configure it again", "user", user, "server", server, "field", p.field, "err", err)
		}
		*p.value = v
	}
	return cfg, nil
}

func (b *Bridge) saveNetConfig(ctx context.Context, user, server string, cfg netConfig) error {
	for _, p := range cfg.secrets() {
		*p.value = b.opts.Sealer.Seal(*p.value, b.binding(user, server, p.field))
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return b.db.PutIRCNetworkSettings(ctx, user, server, raw)
}

func joinPorts(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func parsePorts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == ';' }) {
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%q is not a port number", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// Commands implements bridges.Commander: "configure" on a network JID.
func (b *Bridge) Commands(u *bridges.User, local string) []*bridges.Command {
	if local == "" {
		return []*bridges.Command{{Node: "disconnect-from-irc-server", Name: "Disconnect from IRC servers", Run: b.disconnectCommand}}
	}
	a, err := mapping.ParseIRCLocal(local, "")
	if err == nil && a.Kind == mapping.IRCChannel {
		return []*bridges.Command{{Node: "configure", Name: "Configure " + a.Name,
			Run: func(ctx context.Context, u *bridges.User, f *form.Form) (*bridges.CommandResult, error) {
				return b.channelCommand(ctx, u, a, f)
			}}}
	}
	if err != nil || a.Kind != mapping.IRCServer {
		return nil
	}
	server := a.Server
	return []*bridges.Command{{Node: "configure", Name: "Configure the IRC network " + server,
		Run: func(ctx context.Context, u *bridges.User, f *form.Form) (*bridges.CommandResult, error) {
			return b.configure(ctx, u, server, f)
		}}, {Node: "get-irc-connection-info", Name: "Connection information for " + server,
		Run: func(ctx context.Context, u *bridges.User, f *form.Form) (*bridges.CommandResult, error) {
			return b.connectionInfo(u, server), nil
		}}}
}

func (b *Bridge) configure(ctx context.Context, u *bridges.User, server string, f *form.Form) (*bridges.CommandResult, error) {
	cfg, err := b.loadNetConfig(ctx, u.JID, server)
	if err != nil {
		return nil, err
	}
	if f == nil {
		verify := "false"
		if cfg.VerifyCert {
			verify = "true"
		}
		return &bridges.CommandResult{Form: &form.Form{Type: "form", Title: "Configure " + server,
			Instructions: "Ports are comma-separated; TLS ports are tried first. Passwords are never shown; leave them empty to keep them.",
			Fields: []form.Field{
				{Var: "ports", Type: form.TextSingle, Label: "Plain-text ports", Values: []string{joinPorts(cfg.Ports)}},
				{Var: "tls_ports", Type: form.TextSingle, Label: "TLS ports", Values: []string{joinPorts(cfg.TLSPorts)}},
				{Var: "verify_cert", Type: form.Boolean, Label: "Verify the TLS certificate", Values: []string{verify}},
				{Var: "nick", Type: form.TextSingle, Label: "Nick", Values: []string{cfg.Nick}},
				{Var: "password", Type: form.TextPrivate, Label: "Server password (PASS)"},
				{Var: "sasl_password", Type: form.TextPrivate, Label: "SASL password"},
				{Var: "username", Type: form.TextSingle, Label: "Username", Values: []string{cfg.Username}},
				{Var: "realname", Type: form.TextSingle, Label: "Real name", Values: []string{cfg.Realname}},
				{Var: "throttle_limit", Type: form.TextSingle, Label: "Lines per second (0: default)", Values: []string{strconv.Itoa(cfg.ThrottleLimit)}},
			}}}, nil
	}
	bad := func(field string, err error) error {
		return stanza.Errorf("not-acceptable", field+": "+err.Error())
	}
	if _, ok := f.Field("ports"); ok {
		if cfg.Ports, err = parsePorts(f.Get("ports")); err != nil {
			return nil, bad("ports", err)
		}
	}
	if _, ok := f.Field("tls_ports"); ok {
		if cfg.TLSPorts, err = parsePorts(f.Get("tls_ports")); err != nil {
			return nil, bad("tls_ports", err)
		}
	}
	if v, ok := f.Field("verify_cert"); ok && v.Value() != "" {
		if cfg.VerifyCert, err = form.ParseBool(v.Value()); err != nil {
			return nil, bad("verify_cert", err)
		}
	}
	if _, ok := f.Field("nick"); ok {
		n := strings.TrimSpace(f.Get("nick"))
		if n != "" {
			if e := ValidNick(n); e != nil {
				return nil, e
			}
		}
		cfg.Nick = n
	}
	for _, s := range []struct {
		field string
		dst   *string
	}{{"password", &cfg.Password}, {"sasl_password", &cfg.SASLPassword}, {"username", &cfg.Username}, {"realname", &cfg.Realname}} {
		v := f.Get(s.field)
		if v == "" && (s.field == "password" || s.field == "sasl_password") {
			continue // keep the stored secret
		}
		if strings.ContainsAny(v, "\r\n\x00") || (s.field == "username" && strings.ContainsAny(v, " @!")) {
			return nil, stanza.Errorf("not-acceptable", s.field+" contains characters IRC cannot carry")
		}
		if _, ok := f.Field(s.field); ok {
			*s.dst = v
		}
	}
	if v := strings.TrimSpace(f.Get("throttle_limit")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1000 {
			return nil, stanza.Errorf("not-acceptable", "throttle_limit must be a number of lines per second between 0 and 1000")
		}
		cfg.ThrottleLimit = n
	}
	if len(cfg.Ports)+len(cfg.TLSPorts) == 0 {
		return nil, stanza.Errorf("not-acceptable", "give at least one port or TLS port")
	}
	if err := b.saveNetConfig(ctx, u.JID, server, cfg); err != nil {
		return nil, err
	}
	b.host.Log().Info("irc network configured", "user", u.JID, "server", server)
	return &bridges.CommandResult{Done: true, Note: "Settings for " + server + " saved; they apply to the next connection." + b.stsNote(ctx, server)}, nil
}

// stsNote tells, after the settings, that the server's strict transport
// security policy overrides the ports and verify_cert.
func (b *Bridge) stsNote(ctx context.Context, server string) string {
	pol, err := b.db.STSPolicyAt(ctx, server, time.Now())
	switch {
	case err != nil:
		b.host.Log().Error("cannot read an irc strict transport security policy", "server", server, "err", err)
		return " The strict transport security policy of " + server + " could not be read; until it can, the gateway does not connect."
	case pol == nil:
		return ""
	}
	return " " + server + " has a strict transport security policy until " + pol.Expires.UTC().Format(time.RFC3339) +
		": the gateway connects to it only with TLS (port " + strconv.Itoa(pol.Port) + " first, then the TLS ports) and verifies its certificate, whatever the ports and verify_cert say."
}
