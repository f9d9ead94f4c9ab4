package irc

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"time"

	gosasl "github.com/emersion/go-sasl"
	irc "gopkg.in/irc.v4"

	"passerelle/component/stanza"
)

// wantedCaps are the capabilities requested when the server offers them.
// away-notify and extended-monitor tell the away state of contacts
// (presence.go).
var wantedCaps = []string{"multi-prefix", "server-time", "message-tags", "batch", "away-notify", "extended-monitor"}

// capNames are the capabilities the gateway may request.
var capNames = append(slices.Clone(wantedCaps), "sasl", "echo-message", "labeled-response")

// capSet is a set of capNames.
type capSet uint16

func capBit(name string) capSet {
	if i := slices.Index(capNames, name); i >= 0 {
		return 1 << i
	}
	return 0
}

func (s capSet) has(name string) bool { return s&capBit(name) != 0 }

// capState tracks capability negotiation during registration.
type capState struct {
	ls       []string // offered, accumulated over multi-line LS until the last line
	enabled  capSet
	done     bool // CAP END sent (or never needed)
	awaiting int  // outstanding REQ answers
}

func (n *network) startRegistration() {
	n.send("CAP", "LS", "302")
	if n.cfg.Password != "" {
		n.send("PASS", n.cfg.Password)
	}
	username := n.cfg.Username
	if username == "" {
		username = strings.Map(func(r rune) rune {
			if r < 0x80 && r != ' ' && r != '@' && r != '!' && r != ':' {
				return r
			}
			return -1
		}, n.nick)
		if username == "" {
			username = "passerelle"
		}
	}
	realname := n.cfg.Realname
	if realname == "" {
		realname = n.nick
	}
	n.send("NICK", n.nick)
	n.send("USER", username, "0", "*", realname)
}

// handleCap processes CAP LS/ACK/NAK during registration.
func (n *network) handleCap(ctx context.Context, m *irc.Message) {
	if len(m.Params) < 3 {
		return
	}
	sub := strings.ToUpper(m.Params[1])
	switch sub {
	case "LS":
		if n.caps.done {
			return
		}
		n.caps.ls = append(n.caps.ls, strings.Fields(m.Trailing())...)
		if len(m.Params) > 3 && m.Params[2] == "*" {
			return // more to come
		}
		// The list (slices of the LS lines) is not kept past its last line.
		ls := n.caps.ls
		n.caps.ls = nil
		if v, ok := capValue(ls, "sts"); ok && n.sts(ctx, v, true) {
			return // reconnecting with TLS
		}
		var req []string
		sasl := false
		for _, c := range ls {
			name, val, _ := strings.Cut(c, "=")
			for _, w := range wantedCaps {
				if name == w {
					req = append(req, name)
				}
			}
			if name == "sasl" && n.cfg.SASLPassword != "" && (val == "" || hasToken(val, "PLAIN")) {
				sasl = true
				req = append(req, name)
			}
		}
		if offered(ls, "echo-message") && offered(ls, "labeled-response") {
			req = append(req, "echo-message", "labeled-response")
		}
		if n.cfg.SASLPassword != "" && !sasl {
			n.saslFailed(ctx, n.server+" does not offer SASL PLAIN authentication, but a SASL password is configured.")
			return
		}
		if len(req) == 0 {
			n.capEnd()
			return
		}
		n.caps.awaiting = 1
		n.send("CAP", "REQ", strings.Join(req, " "))
	case "ACK":
		for _, c := range strings.Fields(m.Trailing()) {
			if !strings.HasPrefix(c, "-") {
				n.caps.enabled |= capBit(c)
			}
		}
		if n.caps.enabled.has("sasl") && !n.registered {
			n.send("AUTHENTICATE", "PLAIN")
			return // CAP END after the SASL outcome
		}
		n.capAnswered()
	case "NEW":
		if v, ok := capValue(strings.Fields(m.Trailing()), "sts"); ok {
			n.sts(ctx, v, false)
		}
	case "NAK":
		if n.cfg.SASLPassword != "" {
			n.saslFailed(ctx, n.server+" refused the SASL capability.")
			return
		}
		n.capAnswered()
	}
}

func offered(ls []string, name string) bool {
	for _, c := range ls {
		if n, _, _ := strings.Cut(c, "="); n == name {
			return true
		}
	}
	return false
}

func hasToken(list, tok string) bool {
	for _, t := range strings.Split(list, ",") {
		if strings.EqualFold(t, tok) {
			return true
		}
	}
	return false
}

// authenticate answers the server's AUTHENTICATE challenge (PLAIN).
func (n *network) authenticate(m *irc.Message) {
	if m.Param(0) != "+" || n.cfg.SASLPassword == "" {
		n.send("AUTHENTICATE", "*")
		return
	}
	user := n.cfg.Username
	if user == "" {
		user = n.nick
	}
	_, ir, _ := gosasl.NewPlainClient("", user, n.cfg.SASLPassword).Start()
	enc := base64.StdEncoding.EncodeToString(ir)
	for len(enc) >= 400 {
		n.send("AUTHENTICATE", enc[:400])
		enc = enc[400:]
	}
	if enc == "" {
		enc = "+"
	}
	n.send("AUTHENTICATE", enc)
}

// saslResult handles 900-908.
func (n *network) saslResult(ctx context.Context, m *irc.Message) {
	switch m.Command {
	case "903":
		n.capAnswered()
	case "902", "904", "905", "906", "908":
		n.saslFailed(ctx, "SASL authentication with "+n.server+" failed: "+decodeText(m.Trailing()))
	}
}

// saslFailed is a permanent failure: reported, not retried.
func (n *network) saslFailed(ctx context.Context, text string) {
	n.b.host.Log().Info("irc sasl authentication failed", "user", n.user, "server", n.server)
	n.status(ctx, text)
	n.failWith(stanza.Errorf("not-authorized", text))
}

// welcome handles 001: registration is complete.
func (n *network) welcome(ctx context.Context, m *irc.Message) {
	n.registered = true
	n.caps.done = true
	n.attempts = 0
	n.nickTries = 0
	n.connectedAt = time.Now()
	if nick := m.Param(0); nick != "" {
		n.nick = strings.Clone(nick)
	}
	link := "not encrypted"
	if n.c != nil && n.c.encrypted {
		link = "encrypted with TLS"
	}
	n.b.host.Log().Info("irc connection registered", "user", n.user, "server", n.server, "encrypted", n.c != nil && n.c.encrypted)
	n.status(ctx, "Connected to "+n.server+" as "+n.nick+" (the link is "+link+").")
	for _, ch := range n.chans {
		if ch.state.shown() {
			n.roomMessage(ctx, ch, "", "Connected to "+n.server+" again (the link is "+link+"); rejoining.", nil)
		}
	}
	n.flushJoins()
}

// isupport handles 005; a new case mapping re-keys the rooms.
func (n *network) isupport(ctx context.Context, m *irc.Message) {
	if cm, ok := n.ircClient.isupport(m); ok {
		n.setCasemap(ctx, cm)
	}
}

// registrationError handles the numerics that end a registration
// attempt: 433 (nick in use), 432 (erroneous nick), 464 (bad password),
// 465 (banned), SASL failures.
func (n *network) registrationError(ctx context.Context, m *irc.Message) {
	text := m.Trailing()
	if (m.Command == "433" || m.Command == "436") && n.keepsTrying() && n.nickTries < 3 {
		// Reconnecting, or rejoining persistent channels after a restart,
		// while our old connection may still be there: take another nick
		// rather than leave every room.
		n.nickTries++
		n.nick += "_"
		n.send("NICK", n.nick)
		return
	}
	var e *stanza.Error
	switch m.Command {
	case "433", "436":
		e = stanza.Errorf("conflict", "The nick "+m.Param(1)+" is already in use on "+n.server+".")
	case "432":
		e = stanza.Errorf("not-acceptable", "The nick "+m.Param(1)+" is not accepted by "+n.server+": "+text)
	case "464":
		e = stanza.Errorf("not-authorized", n.server+" refused the password: "+text)
	default:
		e = stanza.Errorf("forbidden", n.server+" refused the connection: "+text)
	}
	n.b.host.Log().Info("irc registration failed", "user", n.user, "server", n.server, "numeric", m.Command)
	n.status(ctx, e.Text)
	n.failWith(e)
}
