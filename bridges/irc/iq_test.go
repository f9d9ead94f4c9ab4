package irc

import (
	"testing"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// IQs reach the handler of their target and payload, or the usual
// answers of the target.
func TestIQDispatch(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	const room, network = "#c%localhost@irc.example", "localhost@irc.example"
	for _, c := range []struct {
		to, typ, payload string
		want             func(*xmlel.Element) bool
	}{
		{room, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", identity("conference", "irc")},
		{room + "/bob", "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", identity("client", "pc")},
		{"bob%localhost@irc.example", "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", identity("client", "pc")},
		{network, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", identity("gateway", "irc")},
		{network, "get", "<query xmlns='http://jabber.org/protocol/disco#items'/>", iqErr("recipient-unavailable")},
		{network, "get", "<query xmlns='http://jabber.org/protocol/disco#items' node='x'/>", iqErr("service-unavailable")},
		{"bob%localhost@irc.example", "set", "<query xmlns='urn:xmpp:mam:2'/>", iqErr("service-unavailable")},
		{"bob%localhost@irc.example", "get", "<query xmlns='jabber:iq:version'/>", iqErr("recipient-unavailable")},
		{room + "/bob", "get", "<query xmlns='jabber:iq:version'/>", iqErr("service-unavailable")},
		{room + "/bob", "get", "<ping xmlns='urn:xmpp:ping'/>", iqErr("not-acceptable")},
		{room + "/bob", "set", "<ping xmlns='urn:xmpp:ping'/>", iqErr("service-unavailable")},
		{room, "get", "<ping xmlns='urn:xmpp:ping'/>", func(e *xmlel.Element) bool { return e.Attr("type") == "result" }},
		{room, "get", "<query xmlns='jabber:iq:version'/>", iqErr("service-unavailable")},
		{room, "get", "", iqErr("service-unavailable")},
	} {
		id := stanza.NewID()
		fx.handle(t, "<iq xmlns='jabber:component:accept' id='"+id+"' type='"+c.typ+"' from='"+testUser+"/r' to='"+c.to+"'>"+c.payload+"</iq>")
		if e := fx.h.Expect(t, c.to+" "+c.payload, func(e *xmlel.Element) bool { return e.Attr("id") == id }); !c.want(e) {
			t.Errorf("%s %s %s: %s", c.typ, c.to, c.payload, e)
		}
	}
}

func identity(category, typ string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool {
		id := e.Child("http://jabber.org/protocol/disco#info", "query").Child("http://jabber.org/protocol/disco#info", "identity")
		return e.Attr("type") == "result" && id.Attr("category") == category && id.Attr("type") == typ
	}
}

func iqErr(cond string) func(*xmlel.Element) bool {
	return func(e *xmlel.Element) bool { return e.Attr("type") == "error" && stanza.ErrorOf(e).Condition == cond }
}
