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
// with its roster name and what the bridge knows of it. It reports whether
// it answered.
func (c *Component) contactVCard(ctx context.Context, u *bridges.User, st *xmlel.Element, local string) bool {
	pr, ok := c.bridge.(bridges.Profiler)
	if !ok || st.Attr("type") != "get" || st.Child(stanza.NSVCard, "vCard") == nil || stanza.Resource(st.Attr("to")) != "" {
		return false
	}
	p, err := pr.Profile(ctx, local)
	if err != nil {
		c.Send(stanza.ErrorReply(st, c.stanzaError(err)))
		return true
	}
	if p == nil {
		return false
	}
	fn := p.Name
	ct, err := c.store.GetContact(ctx, c.opts.Domain, u.JID, stanza.Bare(st.Attr("to")))
	switch {
	case err == nil && ct.Name != "":
		fn = ct.Name
	case err != nil && !errors.Is(err, store.ErrNotFound):
		c.log.Error("cannot read a contact for its vCard", "user", u.JID, "err", err)
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
	c.Send(stanza.Result(st, v))
	return true
}
