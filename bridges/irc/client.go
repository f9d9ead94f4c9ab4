package irc

import (
	"strconv"
	"strings"
	"time"

	irc "gopkg.in/irc.v4"

	"passerelle/mapping"
)

// ircClient is the IRC side of a network, as the IRC protocol sees it:
// the connection, the registration, the negotiated capabilities, what
// the server supports (ISUPPORT) and its open batches. It knows nothing
// of XMPP; the network holds it and mirrors the rooms over it.
type ircClient struct {
	c           *conn // nil while connecting
	link        link  // how the current connection was made
	upgrade     int   // the TLS port the server asked for on a plain connection (sts); 0: none
	registered  bool  // set on 001; before it, joins are queued
	connectedAt time.Time
	nick        string // the nick we asked for, then the one the server gave
	nickTries   int    // alternative nicks tried while reconnecting
	user0       string // user@host part of our prefix, once known
	caps        capState
	batch       batchState
	chantypes   string
	casemap     string // CASEMAPPING from ISUPPORT
	prefixMode  string // e.g. "qaohv"
	prefixSym   string // e.g. "~&@%+"
	// monitor is the MONITOR limit from ISUPPORT: 0 when the server has
	// no MONITOR, -1 when it sets no limit.
	monitor int
}

// newIRCClient returns a client that will ask for nick, with the
// defaults of a server that announces nothing.
func newIRCClient(nick string) ircClient {
	return ircClient{nick: nick, chantypes: mapping.DefaultChanTypes, casemap: caseRFC1459, prefixMode: "ov", prefixSym: "@+"}
}

// connected starts a connection: capabilities and batches do not outlive
// the one before.
func (cl *ircClient) connected(c *conn, lk link) {
	cl.c, cl.link = c, lk
	cl.caps = capState{}
	cl.batch.open = nil
	cl.monitor = 0
}

// disconnected ends the connection.
func (cl *ircClient) disconnected() {
	cl.c = nil
	cl.registered = false
}

// send builds and queues a line.
func (cl *ircClient) send(cmd string, params ...string) error {
	l, err := buildLine(cmd, params...)
	if err != nil {
		return err
	}
	if cl.c == nil {
		return errClosed
	}
	return cl.c.send(l)
}

// capAnswered counts an answer to a CAP REQ (or the end of SASL); the
// last ends the negotiation.
func (cl *ircClient) capAnswered() {
	if cl.caps.awaiting > 0 {
		cl.caps.awaiting--
		if cl.caps.awaiting == 0 {
			cl.capEnd()
		}
	}
}

func (cl *ircClient) capEnd() {
	if !cl.caps.done {
		cl.caps.done = true
		cl.send("CAP", "END")
	}
}

// labeled reports whether own messages come back as labeled echoes.
func (cl *ircClient) labeled() bool {
	return cl.caps.enabled.has("echo-message") && cl.caps.enabled.has("labeled-response")
}

// isupport takes CHANTYPES and PREFIX from a 005, and returns its
// CASEMAPPING (ok false when it has none).
func (cl *ircClient) isupport(m *irc.Message) (casemap string, ok bool) {
	for _, tok := range m.Params[1 : len(m.Params)-1] {
		k, v, _ := strings.Cut(tok, "=")
		switch k {
		case "CASEMAPPING":
			casemap, ok = strings.ToLower(v), true
		case "CHANTYPES":
			if v != "" {
				cl.chantypes = strings.Clone(v) // not a slice of the whole line
			}
		case "MONITOR":
			cl.monitor = -1
			if l, err := strconv.Atoi(v); err == nil && l > 0 {
				cl.monitor = l
			}
		case "PREFIX":
			if i := strings.IndexByte(v, ')'); strings.HasPrefix(v, "(") && i > 0 && len(v[1:i]) == len(v[i+1:]) {
				cl.prefixMode, cl.prefixSym = strings.Clone(v[1:i]), strings.Clone(v[i+1:])
			}
		}
	}
	return casemap, ok
}

// prefixModes splits the prefix symbols off a NAMES entry ("@+nick"),
// returning them as modes ("ov") and the rest.
func (cl *ircClient) prefixModes(e string) (modes, rest string) {
	for e != "" {
		i := strings.IndexByte(cl.prefixSym, e[0])
		if i < 0 {
			break
		}
		modes += cl.prefixMode[i : i+1]
		e = e[1:]
	}
	return modes, e
}
