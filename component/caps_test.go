package component

import (
	"testing"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// The example of XEP-0115 §5.2.
func TestCapsVer(t *testing.T) {
	q := xmlel.New(stanza.NSDiscoInfo, "query")
	q.Add(xmlel.New(stanza.NSDiscoInfo, "identity").SetAttr("category", "client").SetAttr("type", "pc").SetAttr("name", "Exodus 0.9.1"))
	for _, f := range []string{"http://jabber.org/protocol/muc", "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#items"} {
		q.Add(xmlel.New(stanza.NSDiscoInfo, "feature").SetAttr("var", f))
	}
	if got, want := capsVer(q), "QgayPKawpkPSDYmwT/WM94uAlu0="; got != want {
		t.Fatalf("capsVer = %q, want %q", got, want)
	}
}
