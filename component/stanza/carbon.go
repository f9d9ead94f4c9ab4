package stanza

import (
	"strings"

	"passerelle/component/xmlel"
)

// carbonIDPrefix starts the id of the privileged message SentCarbon
// returns: the server's error answering it carries it (IsCarbonError).
const carbonIDPrefix = "carbon-"

// SentCarbon returns the privileged message (XEP-0356 §"message"
// permission, privilege namespace ns) by which the entity from asks the
// XMPP server to hand its user the XEP-0280 sent carbon of msg: a message
// the user sent from elsewhere (from her bare JID, a user of server). The
// server sends the carbon on as if from the user's own account, so her
// clients show msg in her chat with its recipient.
//
//	<message from=from to=server><privilege xmlns=ns><forwarded>
//	  <message from=user to=user type=chat><sent><forwarded>msg</forwarded></sent></message>
//	</forwarded></privilege></message>
//
// msg is copied into the jabber:client namespace. The carbon carries a
// no-copy hint: the server would otherwise carbon-copy the carbon itself
// (it comes from the user) to her clients a second time.
func SentCarbon(ns, from, server string, msg *xmlel.Element) *xmlel.Element {
	user := Bare(msg.Attr("from"))
	typ := msg.Attr("type")
	if typ == "" {
		typ = "chat"
	}
	carbon := xmlel.New(NSClient, "message").SetAttr("from", user).SetAttr("to", user).SetAttr("type", typ)
	carbon.Add(
		xmlel.New(NSCarbons, "sent").Add(xmlel.New(NSForward, "forwarded").Add(AsClient(msg.Copy()))),
		xmlel.New(NSHints, "no-copy"))
	return New("message", from, server, "", carbonIDPrefix+NewID()).Add(
		xmlel.New(ns, "privilege").Add(xmlel.New(NSForward, "forwarded").Add(carbon)))
}

// AsClient moves e and its children of the component namespace (a stanza
// as the gateway builds it) into jabber:client, and returns e.
func AsClient(e *xmlel.Element) *xmlel.Element {
	if e.Space == NS {
		e.Space = NSClient
	}
	for _, c := range e.Children {
		AsClient(c)
	}
	return e
}

// IsCarbonError reports whether st is a server's error answering a
// privileged message of SentCarbon.
func IsCarbonError(st *xmlel.Element) bool {
	return st.Local == "message" && st.Attr("type") == "error" && strings.HasPrefix(st.Attr("id"), carbonIDPrefix)
}
