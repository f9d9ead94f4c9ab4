// Package stanza builds and inspects the XMPP stanzas a component exchanges
// with its server: messages, presences, IQs and their errors.
package stanza

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"strings"

	"passerelle/component/xmlel"
)

// New returns a stanza element (message, presence or iq) with the given
// addressing. Empty attributes are left out.
func New(kind, from, to, typ, id string) *xmlel.Element {
	e := xmlel.New(NS, kind)
	e.Attrs = make([]xml.Attr, 0, 4) // from, to, type, id: one allocation
	e.SetAttr("from", from).SetAttr("to", to).SetAttr("type", typ).SetAttr("id", id)
	return e
}

// Message returns a message stanza with a body (omitted when empty).
func Message(from, to, typ, id, body string) *xmlel.Element {
	m := New("message", from, to, typ, id)
	if body != "" {
		m.AddText("body", xmlel.CleanText(body))
	}
	return m
}

// Presence returns a presence stanza.
func Presence(from, to, typ string) *xmlel.Element { return New("presence", from, to, typ, "") }

// IQ returns an IQ with one payload child.
func IQ(from, to, typ, id string, payload *xmlel.Element) *xmlel.Element {
	return New("iq", from, to, typ, id).Add(payload)
}

// NewID returns a random stanza id.
func NewID() string {
	b := make([]byte, 9)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Result returns the result IQ answering iq, with payload (may be nil).
func Result(iq *xmlel.Element, payload *xmlel.Element) *xmlel.Element {
	return IQ(iq.Attr("to"), iq.Attr("from"), "result", iq.Attr("id"), payload)
}

// Error conditions (RFC 6120 §8.3.3) and their default types.
var conditionType = map[string]string{
	"bad-request":             "modify",
	"conflict":                "cancel",
	"feature-not-implemented": "cancel",
	"forbidden":               "auth",
	"gone":                    "cancel",
	"internal-server-error":   "cancel",
	"item-not-found":          "cancel",
	"jid-malformed":           "modify",
	"not-acceptable":          "modify",
	"not-allowed":             "cancel",
	"not-authorized":          "auth",
	"policy-violation":        "modify",
	"recipient-unavailable":   "wait",
	"redirect":                "modify",
	"registration-required":   "auth",
	"remote-server-not-found": "cancel",
	"remote-server-timeout":   "wait",
	"resource-constraint":     "wait",
	"service-unavailable":     "cancel",
	"subscription-required":   "auth",
	"undefined-condition":     "cancel",
	"unexpected-request":      "wait",
}

// Error is a stanza error.
type Error struct {
	Type      string // auth, cancel, continue, modify, wait; empty: the condition's default
	Condition string
	Text      string
}

func (e *Error) Error() string {
	if e.Text != "" {
		return e.Condition + ": " + e.Text
	}
	return e.Condition
}

// Errorf returns an *Error with condition and text.
func Errorf(condition, text string) *Error { return &Error{Condition: condition, Text: text} }

// Element renders the <error/> child.
func (e *Error) Element() *xmlel.Element {
	typ := e.Type
	if typ == "" {
		typ = conditionType[e.Condition]
		if typ == "" {
			typ = "cancel"
		}
	}
	el := xmlel.New(NS, "error").SetAttr("type", typ)
	el.Add(xmlel.New(NSStanzas, e.Condition))
	if e.Text != "" {
		el.Add(xmlel.New(NSStanzas, "text").WithText(xmlel.CleanText(e.Text)))
	}
	return el
}

// ErrorReply returns the error stanza answering st: addresses swapped, same
// kind and id, type="error". For messages the original body is not echoed.
func ErrorReply(st *xmlel.Element, e *Error) *xmlel.Element {
	r := New(st.Local, st.Attr("to"), st.Attr("from"), "error", st.Attr("id"))
	if st.Local == "iq" && len(st.Children) > 0 && st.Children[0].Local != "error" {
		r.Add(st.Children[0].Copy())
	}
	return r.Add(e.Element())
}

// ErrorOf returns the error carried by an error stanza, or nil.
func ErrorOf(st *xmlel.Element) *Error {
	el := st.Child("", "error")
	if el == nil {
		return nil
	}
	e := &Error{Type: el.Attr("type")}
	for _, c := range el.Children {
		if c.Space == NSStanzas {
			if c.Local == "text" {
				e.Text = c.Text
			} else if e.Condition == "" {
				e.Condition = c.Local
			}
		}
	}
	if e.Condition == "" {
		e.Condition = "undefined-condition"
	}
	return e
}

// Bare returns the bare form of a JID string (no resource).
func Bare(jid string) string {
	if i := strings.IndexByte(jid, '/'); i >= 0 {
		return jid[:i]
	}
	return jid
}

// Resource returns the resource of a JID string, or "".
func Resource(jid string) string {
	if i := strings.IndexByte(jid, '/'); i >= 0 {
		return jid[i+1:]
	}
	return ""
}

// Local returns the localpart of a JID string, or "".
func Local(jid string) string {
	b := Bare(jid)
	if i := strings.LastIndexByte(b, '@'); i >= 0 {
		return b[:i]
	}
	return ""
}

// Domain returns the domainpart of a JID string.
func Domain(jid string) string {
	b := Bare(jid)
	if i := strings.LastIndexByte(b, '@'); i >= 0 {
		return b[i+1:]
	}
	return b
}
