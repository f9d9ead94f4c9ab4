package component

import (
	"crypto/sha1"
	"encoding/base64"
	"sort"
	"strings"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// capsNode names the software in XEP-0115 entity capabilities.
const capsNode = "urn:passerelle"

// capsVer is the XEP-0115 verification string of the domain's disco#info
// (§5.1: identities, then features, sorted, hashed with SHA-1).
func capsVer(info *xmlel.Element) string {
	var ids, features []string
	for _, id := range info.ChildrenNamed(stanza.NSDiscoInfo, "identity") {
		ids = append(ids, id.Attr("category")+"/"+id.Attr("type")+"/"+id.Attr("xml:lang")+"/"+id.Attr("name"))
	}
	for _, f := range info.ChildrenNamed(stanza.NSDiscoInfo, "feature") {
		features = append(features, f.Attr("var"))
	}
	sort.Strings(ids)
	sort.Strings(features)
	var b strings.Builder
	for _, s := range append(ids, features...) {
		b.WriteString(s)
		b.WriteByte('<')
	}
	sum := sha1.Sum([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// caps is the <c/> element of the gateway's presence.
func (c *Component) caps() *xmlel.Element {
	return xmlel.New(stanza.NSCaps, "c").SetAttr("hash", "sha-1").SetAttr("node", capsNode).
		SetAttr("ver", capsVer(c.domainInfo()))
}

// presence is the gateway's own presence of type typ to user; available
// presence carries its capabilities.
func (c *Component) presence(user, typ string) *xmlel.Element {
	p := stanza.Presence(c.opts.Domain, user, typ)
	if typ == "" {
		p.Add(c.caps())
	}
	return p
}
