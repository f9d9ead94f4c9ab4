package component

import (
	"context"
	"errors"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// contactVCard answers a vcard-temp get to a foreign contact's bare JID
// with what the bridge knows of it (at once, or once the foreign network
// answered) and the name in the user's roster. It reports whether the
// request is the bridge's Profiler's.
func (c *Component) contactVCard(ctx context.Context, u *bridges.User, st *xmlel.Element, local string) bool {
	pr, ok := c.bridge.(bridges.Profiler)
	if !ok || st.Attr("type") != "get" || st.Child(stanza.NSVCard, "vCard") == nil || stanza.Resource(st.Attr("to")) != "" {
		return false
	}
	pr.Profile(ctx, u, local, func(ctx context.Context, p *bridges.Profile, err error) {
		switch {
		case err != nil:
			c.Send(stanza.ErrorReply(st, c.stanzaError(err)))
		case p == nil:
			c.bridge.Handle(ctx, u, st)
		default:
			c.Send(stanza.Result(st, c.vCard(ctx, u, st, local, p)))
		}
	})
	return true
}

// vCard is a contact's vCard: FN is its own name, else its name in the
// user's roster, else its address.
func (c *Component) vCard(ctx context.Context, u *bridges.User, st *xmlel.Element, local string, p *bridges.Profile) *xmlel.Element {
	fn := p.Name
	if fn == "" {
		ct, err := c.store.GetContact(ctx, c.opts.Domain, u.JID, stanza.Bare(st.Attr("to")))
		switch {
		case err == nil:
			fn = ct.Name
		case !errors.Is(err, store.ErrNotFound):
			c.log.Error("cannot read a contact for its vCard", "user", u.JID, "err", err)
		}
	}
	for _, s := range []string{p.Nick, p.Email, p.Phone, local} {
		if fn == "" {
			fn = s
		}
	}
	v := xmlel.New(stanza.NSVCard, "vCard")
	v.Add(xmlel.New(stanza.NSVCard, "FN").WithText(fn))
	if p.Nick != "" {
		v.Add(xmlel.New(stanza.NSVCard, "NICKNAME").WithText(p.Nick))
	}
	if p.Email != "" {
		v.Add(xmlel.New(stanza.NSVCard, "EMAIL").Add(xmlel.New(stanza.NSVCard, "INTERNET"), xmlel.New(stanza.NSVCard, "USERID").WithText(p.Email)))
	}
	if p.Phone != "" {
		v.Add(xmlel.New(stanza.NSVCard, "TEL").Add(xmlel.New(stanza.NSVCard, "CELL"), xmlel.New(stanza.NSVCard, "NUMBER").WithText(p.Phone)))
	}
	return v
}
