package irc

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"passerelle/store"
)

// Strict transport security (IRCv3 sts). A server announces its policy
// in its capabilities: on a plain (or unverified) connection the port to
// reconnect to with TLS, on a verified TLS connection how long clients
// must use TLS only. The policy is the server's, kept per host in the
// store: while it is in force every connection to the host, whichever
// user makes it and whatever ports that user configured, is TLS with a
// verified certificate, and a failing TLS connection fails rather than
// falling back to plain text.

// stsValue is a parsed sts capability value.
type stsValue struct {
	port     int // 0: none (or not a valid port)
	duration time.Duration
	hasDur   bool
}

func parseSTS(v string) stsValue {
	var s stsValue
	for _, tok := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(tok, "=")
		switch k {
		case "port":
			if p, err := strconv.Atoi(val); err == nil && p > 0 && p < 65536 {
				s.port = p
			}
		case "duration":
			if d, err := strconv.ParseInt(val, 10, 64); err == nil && d >= 0 {
				s.duration = time.Duration(min(d, int64(store.MaxSTSDuration/time.Second))) * time.Second
				s.hasDur = true
			}
		}
	}
	return s
}

// capValue returns the value of capability name in an LS or NEW list.
func capValue(caps []string, name string) (string, bool) {
	for _, c := range caps {
		if n, v, _ := strings.Cut(c, "="); n == name {
			return v, true
		}
	}
	return "", false
}

// tlsOnly is cfg for a connection that must be TLS with a verified
// certificate: port first (when not 0), then the configured TLS ports;
// no plain port.
func tlsOnly(cfg netConfig, port int) netConfig {
	var ports []int
	if port != 0 {
		ports = append(ports, port)
	}
	for _, p := range cfg.TLSPorts {
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	cfg.TLSPorts, cfg.Ports, cfg.VerifyCert = ports, nil, true
	return cfg
}

// dialSTS dials server with cfg, or with TLS only when the server has a
// policy in force or asked this network (upgrade, a port) for TLS. When
// the policy cannot be read, it does not connect: whether plain text is
// allowed is unknown.
func (b *Bridge) dialSTS(ctx context.Context, server string, cfg netConfig, upgrade int) (net.Conn, link, error) {
	pol, err := b.db.STSPolicyAt(ctx, server, time.Now())
	if err != nil {
		b.host.Log().Error("cannot read an irc strict transport security policy", "server", server, "err", err)
		return nil, link{}, &connError{msg: "cannot read its strict transport security policy; the gateway does not connect without it"}
	}
	why := ""
	switch {
	case pol != nil:
		cfg = tlsOnly(cfg, pol.Port)
		why = "its strict transport security policy (until " + pol.Expires.UTC().Format(time.RFC3339) + ") allows only TLS"
	case upgrade != 0:
		cfg = tlsOnly(cfg, upgrade)
		why = "it asked for TLS (strict transport security)"
	}
	nc, lk, err := b.dialer.dial(ctx, server, cfg)
	if err != nil && why != "" {
		var ce *connError
		var condition string
		permanent := errors.As(err, &ce) && ce.permanent
		if ce != nil {
			condition = ce.condition
		}
		err = &connError{msg: why + ", and no TLS connection with a valid certificate could be made; plain text is not used: " + err.Error(), permanent: permanent, condition: condition}
	}
	return nc, lk, err
}

// sts handles the sts capability announced on the current connection
// (in CAP LS, or CAP NEW when ls is false). It reports whether the
// connection is being replaced by a TLS one, ending the negotiation.
func (n *network) sts(ctx context.Context, value string, ls bool) bool {
	v := parseSTS(value)
	if n.link.secure() {
		if !v.hasDur {
			return false // no persistence policy: nothing is stored
		}
		n.b.stsSeen(n.c, n.server, v.duration > 0)
		err := n.b.db.PutSTSPolicy(ctx, n.server, n.link.port, v.duration, time.Now())
		if err != nil {
			n.b.host.Log().Error("cannot store an irc strict transport security policy", "server", n.server, "err", err)
			n.status(ctx, "The strict transport security policy of "+n.server+" could not be stored: "+err.Error())
			return false
		}
		n.b.host.Log().Info("irc strict transport security policy", "server", n.server, "port", n.link.port, "duration", v.duration)
		return false
	}
	if v.port == 0 || !ls {
		return false // no upgrade policy; or one in CAP NEW, which the next connection's CAP LS carries
	}
	n.b.host.Log().Info("irc server asks for TLS (sts); reconnecting", "user", n.user, "server", n.server, "port", v.port)
	n.status(ctx, n.server+" asks for TLS on port "+strconv.Itoa(v.port)+" (strict transport security); reconnecting with TLS.")
	n.upgrade = v.port
	c := n.c
	n.c = nil // its end is not a lost connection
	l, _ := buildLine("QUIT", "Reconnecting with TLS")
	c.close(l)
	n.b.connect(n)
	return true
}

// stsSeen records whether connection c saw a policy of host in force,
// for rescheduling its expiry when c ends.
func (b *Bridge) stsSeen(c *conn, host string, inForce bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, open := b.conns[c]; !open {
		return
	}
	if !inForce {
		host = ""
	}
	b.conns[c] = host
}

// rescheduleSTS moves the expiry of host's policy to its duration from
// now: a connection that saw it ends.
func (b *Bridge) rescheduleSTS(ctx context.Context, host string) {
	if err := b.db.RescheduleSTSPolicy(ctx, host, time.Now()); err != nil {
		b.host.Log().Error("cannot reschedule an irc strict transport security policy", "server", host, "err", err)
	}
}
