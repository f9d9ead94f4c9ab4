package component

import (
	"context"
	"runtime"
	"strings"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// handleDomainIQ answers IQs addressed to the component domain. It reports
// whether it handled st.
func (c *Component) handleDomainIQ(ctx context.Context, u *bridges.User, st *xmlel.Element) bool {
	typ := st.Attr("type")
	if typ != "get" && typ != "set" {
		return false // results and errors for the bridge (or nobody)
	}
	if len(st.Children) == 0 {
		c.Send(stanza.ErrorReply(st, stanza.Errorf("bad-request", "empty IQ")))
		return true
	}
	p := st.Children[0]
	switch {
	case p.Space == stanza.NSDiscoInfo && typ == "get":
		c.discoInfo(u, st, p.Attr("node"))
	case p.Space == stanza.NSDiscoItems && typ == "get":
		if p.Attr("node") == stanza.NSCommands {
			c.commandItems(ctx, u, st, "")
			return true
		}
		c.emptyItems(st)
	case p.Space == stanza.NSRegister:
		c.register(ctx, u, st, p)
	case p.Space == stanza.NSGateway:
		c.gateway(ctx, st, p)
	case p.Space == stanza.NSPing && typ == "get":
		c.Send(stanza.Result(st, nil))
	case p.Space == stanza.NSVersion && typ == "get":
		q := xmlel.New(stanza.NSVersion, "query")
		q.AddText("name", "Passerelle")
		q.AddText("version", c.opts.Version)
		q.AddText("os", runtime.GOOS)
		c.Send(stanza.Result(st, q))
	case p.Space == stanza.NSCommands && p.Local == "command" && typ == "set":
		c.executeCommand(ctx, u, st, p, "")
	case p.Space == stanza.NSRoster && typ == "set":
		c.rosterPush(ctx, st, p)
	default:
		return false
	}
	return true
}

// emptyItems answers disco#items on the domain: it has no items.
func (c *Component) emptyItems(st *xmlel.Element) {
	q := xmlel.New(stanza.NSDiscoItems, "query")
	if n := st.Children[0].Attr("node"); n != "" {
		q.SetAttr("node", n)
	}
	c.Send(stanza.Result(st, q))
}

func (c *Component) discoInfo(u *bridges.User, st *xmlel.Element, node string) {
	q := xmlel.New(stanza.NSDiscoInfo, "query")
	if node != "" {
		q.SetAttr("node", node)
	}
	switch {
	case node == "" || node == capsNode+"#"+capsVer(c.domainInfo()):
		q.Children = c.domainInfo().Children
	case node == stanza.NSCommands:
		q.Add(xmlel.New(stanza.NSDiscoInfo, "identity").SetAttr("category", "automation").SetAttr("type", "command-list").SetAttr("name", "Commands"))
	default:
		cmd := c.findCommand(u, "", node)
		if cmd == nil {
			c.Send(stanza.ErrorReply(st, stanza.Errorf("item-not-found", "")))
			return
		}
		q.Add(xmlel.New(stanza.NSDiscoInfo, "identity").SetAttr("category", "automation").SetAttr("type", "command-node").SetAttr("name", cmd.Name))
		q.Add(xmlel.New(stanza.NSDiscoInfo, "feature").SetAttr("var", stanza.NSCommands))
		q.Add(xmlel.New(stanza.NSDiscoInfo, "feature").SetAttr("var", stanza.NSData))
	}
	c.Send(stanza.Result(st, q))
}

// domainInfo is the domain's disco#info query: the bridge's identities and
// the features of the component and the bridge.
func (c *Component) domainInfo() *xmlel.Element {
	q := xmlel.New(stanza.NSDiscoInfo, "query")
	for _, id := range c.bridge.Identities() {
		q.Add(xmlel.New(stanza.NSDiscoInfo, "identity").SetAttr("category", id.Category).
			SetAttr("type", id.Type).SetAttr("name", id.Name))
	}
	features := []string{stanza.NSDiscoInfo, stanza.NSDiscoItems, stanza.NSRegister, stanza.NSGateway, stanza.NSPing, stanza.NSVersion, stanza.NSCommands, stanza.NSCaps}
	features = append(features, c.bridge.Features()...)
	seen := map[string]bool{}
	for _, f := range features {
		if !seen[f] {
			seen[f] = true
			q.Add(xmlel.New(stanza.NSDiscoInfo, "feature").SetAttr("var", f))
		}
	}
	return q
}

// gateway implements jabber:iq:gateway (XEP-0100 §6.3).
func (c *Component) gateway(ctx context.Context, st, p *xmlel.Element) {
	desc, prompt := c.bridge.Prompt()
	q := xmlel.New(stanza.NSGateway, "query")
	if st.Attr("type") == "get" {
		q.AddText("desc", desc)
		q.AddText("prompt", prompt)
		c.Send(stanza.Result(st, q))
		return
	}
	input := strings.TrimSpace(p.ChildText(stanza.NSGateway, "prompt"))
	if input == "" {
		c.Send(stanza.ErrorReply(st, stanza.Errorf("bad-request", "Type an address into the prompt.")))
		return
	}
	local, err := c.bridge.Translate(ctx, input)
	if err != nil {
		c.Send(stanza.ErrorReply(st, c.stanzaError(err)))
		return
	}
	q.AddText("jid", local+"@"+c.opts.Domain)
	c.Send(stanza.Result(st, q))
}
