package component

import (
	"reflect"
	"strings"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// Grant is what one server granted the component (XEP-0356 §4.2): the
// access type of each permission ("" when not granted, else "none",
// "get", "set", "both", "outgoing", "roster", "managed_entity").
type Grant struct {
	Server   string // the server's domain: the grant covers its users
	NS       string // the privilege namespace it spoke
	Roster   string
	Message  string
	Presence string
	// IQ holds the namespaces of the iq permission (:2) and their types.
	IQ map[string]string
}

// RosterGet reports whether the component may read users' rosters.
func (g Grant) RosterGet() bool { return g.Roster == "get" || g.Roster == "both" }

// RosterSet reports whether the component may change users' rosters.
func (g Grant) RosterSet() bool { return g.Roster == "set" || g.Roster == "both" }

// SendsMessages reports whether the component may send messages on
// behalf of users (message permission "outgoing").
func (g Grant) SendsMessages() bool { return g.Message == "outgoing" }

// logAttrs describes the grant for a log line.
func (g Grant) logAttrs() []any {
	or := func(s string) string {
		if s == "" {
			return "none"
		}
		return s
	}
	attrs := []any{"server", g.Server, "namespace", g.NS, "roster", or(g.Roster), "message", or(g.Message), "presence", or(g.Presence)}
	if len(g.IQ) > 0 {
		var ns []string
		for n, t := range g.IQ {
			ns = append(ns, n+"="+t)
		}
		attrs = append(attrs, "iq", strings.Join(ns, ","))
	}
	return attrs
}

// parsePrivilege reads a <privilege/> advertisement (either namespace) in
// a message from a server. It reports false for any other stanza, and for
// one from an address with a localpart or resource: only a server grants.
func parsePrivilege(st *xmlel.Element) (Grant, bool) {
	if st.Local != "message" {
		return Grant{}, false
	}
	from := st.Attr("from")
	if from == "" || stanza.Local(from) != "" || stanza.Resource(from) != "" {
		return Grant{}, false
	}
	var p *xmlel.Element
	for _, ns := range []string{stanza.NSPrivilege2, stanza.NSPrivilege1} {
		if p = st.Child(ns, "privilege"); p != nil {
			break
		}
	}
	if p == nil {
		return Grant{}, false
	}
	g := Grant{Server: strings.ToLower(from), NS: p.Space}
	for _, perm := range p.ChildrenNamed(p.Space, "perm") {
		typ := perm.Attr("type")
		switch perm.Attr("access") {
		case "roster":
			g.Roster = typ
		case "message":
			g.Message = typ
		case "presence":
			g.Presence = typ
		case "iq":
			for _, n := range perm.ChildrenNamed(p.Space, "namespace") {
				if g.IQ == nil {
					g.IQ = map[string]string{}
				}
				g.IQ[n.Attr("ns")] = n.Attr("type")
			}
		}
	}
	return g, true
}

// privileged records a server's advertisement, replacing what it granted
// before, and logs it.
//
// ejabberd sends the advertisement to every connected component each time
// one connects: one that repeats what is in force is not logged again.
func (c *Component) privileged(g Grant) {
	c.mu.Lock()
	if c.grants == nil {
		c.grants = map[string]Grant{}
	}
	old, had := c.grants[g.Server]
	c.grants[g.Server] = g
	s := c.cur
	c.mu.Unlock()
	if s != nil {
		s.grantedOnce.Do(func() { close(s.granted) })
	}
	c.grantsKnown()
	if !had || !reflect.DeepEqual(old, g) {
		c.log.Info("the XMPP server granted privileges (XEP-0356)", g.logAttrs()...)
	}
}

// grant returns what the server of user granted (the zero Grant when
// nothing).
func (c *Component) grant(user string) Grant {
	g, _ := c.grantOf(user)
	return g
}

// grantOf is grant, and whether that server's advertisement came.
func (c *Component) grantOf(user string) (Grant, bool) {
	d := strings.ToLower(stanza.Domain(user))
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.grants[d]
	if !ok {
		g.Server = d
	}
	return g, ok
}

// grantsKnown closes PrivilegesKnown's channel (once).
func (c *Component) grantsKnown() { c.knownOnce.Do(func() { close(c.known) }) }

// PrivilegesKnown implements bridges.Host.
func (c *Component) PrivilegesKnown() <-chan struct{} { return c.known }

// SentCarbons implements bridges.Host: the carbons go to the server of
// user in the privilege namespace it advertised.
func (c *Component) SentCarbons(user string) (func(msg *xmlel.Element) *xmlel.Element, error) {
	g, advertised := c.grantOf(user)
	if !g.SendsMessages() {
		select {
		case <-c.known:
		default:
			if !advertised {
				return nil, bridges.ErrPrivilegeUnknown
			}
		}
		return nil, bridges.ErrNoPrivilege
	}
	return func(msg *xmlel.Element) *xmlel.Element {
		return stanza.SentCarbon(g.NS, c.opts.Domain, g.Server, msg)
	}, nil
}

// revokeMessage forgets the message permission of a server that refused a
// privileged message (a sent carbon) despite its advertisement: no more
// carbons are sent to it until it advertises the permission again.
func (c *Component) revokeMessage(server string, err error) {
	c.revoke(server, func(g *Grant) *string { return &g.Message }, err,
		"the XMPP server refused a sent carbon despite its advertisement; no more are sent to it")
}

// revokeRoster forgets the roster permission of a server that refused a
// roster request: the gateway falls back to subscription requests until
// the server advertises the permission again.
func (c *Component) revokeRoster(server string, err error) {
	c.revoke(server, func(g *Grant) *string { return &g.Roster }, err,
		"the XMPP server refused a roster request despite its advertisement; new contacts ask for a subscription instead")
}

// revoke forgets the permission perm picks in the grant of server, and
// logs msg the first time (until the server advertises it again).
func (c *Component) revoke(server string, perm func(*Grant) *string, err error, msg string) {
	c.mu.Lock()
	g, ok := c.grants[server]
	p := perm(&g)
	ok = ok && *p != ""
	if ok {
		*p = ""
		c.grants[server] = g
	}
	c.mu.Unlock()
	if ok {
		c.log.Warn(msg, "server", server, "err", err)
	}
}
