package component

import (
	"context"
	"errors"
	"strings"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// register implements XEP-0077 on the component domain.
func (c *Component) register(ctx context.Context, u *bridges.User, st, p *xmlel.Element) {
	if st.Attr("type") == "get" {
		q := xmlel.New(stanza.NSRegister, "query")
		f := c.bridge.RegistrationForm(u.Registration)
		if u.Registration != nil {
			q.Add(xmlel.New(stanza.NSRegister, "registered"))
		}
		q.AddText("instructions", f.Instructions)
		// Legacy fields for clients without data forms.
		for _, fd := range f.Fields {
			if isLegacyField(fd.Var) {
				q.AddText(fd.Var, fd.Value())
			}
		}
		q.Add(f.Element())
		c.Send(stanza.Result(st, q))
		return
	}
	if p.Child(stanza.NSRegister, "remove") != nil {
		existed, err := c.unregister(ctx, u)
		if err != nil {
			c.Send(stanza.ErrorReply(st, stanza.Errorf("internal-server-error", "The gateway cannot update its database.")))
			return
		}
		if !existed {
			c.Send(stanza.ErrorReply(st, stanza.Errorf("registration-required", "You are not registered.")))
			return
		}
		c.Send(stanza.Result(st, nil))
		return
	}
	values, cancelled, err := submittedValues(p)
	if err != nil {
		c.Send(stanza.ErrorReply(st, stanza.Errorf("bad-request", err.Error())))
		return
	}
	if cancelled {
		c.Send(stanza.Result(st, nil))
		return
	}
	if err := c.saveRegistration(ctx, u, values); err != nil {
		c.Send(stanza.ErrorReply(st, err))
		return
	}
	c.Send(stanza.Result(st, nil))
}

func isLegacyField(v string) bool {
	switch v {
	case "username", "nick", "password", "email", "address", "phone":
		return true
	}
	return false
}

// submittedValues reads a registration submission: a data form, or legacy
// child elements.
func submittedValues(p *xmlel.Element) (map[string]string, bool, error) {
	f, err := form.Find(p)
	if err == nil {
		switch f.Type {
		case "cancel":
			return nil, true, nil
		case "submit":
			return f.Values(), false, nil
		}
		return nil, false, errors.New("submit the registration form with type=\"submit\"")
	}
	if !errors.Is(err, form.ErrNoForm) {
		return nil, false, err
	}
	values := map[string]string{}
	for _, ch := range p.Children {
		if ch.Space == stanza.NSRegister {
			values[ch.Local] = ch.Text
		}
	}
	return values, false, nil
}

// saveRegistration validates values and stores the registration; on first
// registration the gateway asks to be in the user's roster (XEP-0100).
func (c *Component) saveRegistration(ctx context.Context, u *bridges.User, values map[string]string) *stanza.Error {
	f := c.bridge.RegistrationForm(nil)
	for _, fd := range f.Fields {
		v := strings.TrimSpace(values[fd.Var])
		if fd.Type == form.TextPrivate && v == "" && u.Registration != nil {
			// An empty secret on re-registration keeps the stored one.
			values[fd.Var] = u.Registration.Fields[fd.Var]
			continue
		}
		if fd.Required && v == "" {
			label := fd.Label
			if label == "" {
				label = fd.Var
			}
			return stanza.Errorf("not-acceptable", "The field “"+label+"” ("+fd.Var+") is required.")
		}
	}
	reg, err := c.bridge.Register(ctx, u.JID, values, u.Registration)
	if err != nil {
		return c.stanzaError(err)
	}
	stored := make(map[string]string, len(reg.Fields))
	for k, v := range reg.Fields {
		stored[k] = v
	}
	for _, k := range reg.Secret {
		if v, ok := stored[k]; ok {
			stored[k] = c.opts.Sealer.Seal(v, store.Binding{Domain: c.opts.Domain, JID: u.JID, Field: k})
		}
	}
	if err := c.store.PutRegistration(ctx, c.opts.Domain, u.JID, stored, reg.Claims); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return stanza.Errorf("conflict", "That is already taken by another user.")
		}
		c.log.Error("cannot store a registration", "user", u.JID, "err", err)
		return stanza.Errorf("internal-server-error", "The gateway cannot update its database.")
	}
	if u.Registration == nil {
		c.log.Info("user registered", "user", u.JID)
		c.m.Registrations.Add(1)
		c.Send(stanza.Presence(c.opts.Domain, u.JID, "subscribe"))
		c.Send(c.presence(u.JID, ""))
	} else {
		c.log.Info("user updated the registration", "user", u.JID)
	}
	u.Registration = &bridges.Registration{JID: u.JID, Fields: reg.Fields, Claims: reg.Claims}
	return nil
}

// unregister deletes the user's data and takes the gateway, and the
// contacts it added, out of the roster.
func (c *Component) unregister(ctx context.Context, u *bridges.User) (bool, error) {
	contacts, err := c.store.Contacts(ctx, c.opts.Domain, u.JID)
	if err != nil {
		c.log.Error("cannot read the contacts of a user who unregisters", "user", u.JID, "err", err)
		return false, err
	}
	existed, err := c.store.DeleteRegistration(ctx, c.opts.Domain, u.JID)
	if err != nil {
		c.log.Error("cannot delete a registration", "user", u.JID, "err", err)
		return false, err
	}
	if existed {
		c.log.Info("user unregistered", "user", u.JID)
		c.bridge.Unregistered(ctx, u.JID)
		c.removeContacts(ctx, u.JID, contacts)
		for _, typ := range []string{"unavailable", "unsubscribe", "unsubscribed"} {
			c.Send(stanza.Presence(c.opts.Domain, u.JID, typ))
		}
	}
	u.Registration = nil
	return existed, nil
}

// stanzaError maps an error to a stanza error, logging internal ones (the
// peer gets a generic text, the log the detail).
func (c *Component) stanzaError(err error) *stanza.Error {
	var se *stanza.Error
	if errors.As(err, &se) {
		return se
	}
	if errors.Is(err, store.ErrConflict) {
		return stanza.Errorf("conflict", "That is already taken by another user.")
	}
	c.log.Error("request failed", "err", err)
	return stanza.Errorf("internal-server-error", "The gateway failed to handle the request.")
}

// handleDomainPresence implements the gateway's own presence (XEP-0100):
// subscriptions are approved, probes answered. The user's availability
// (broadcast to the gateway, forwarded under the presence permission of
// XEP-0356, or answering a probe) is recorded: see userPresence.
func (c *Component) handleDomainPresence(ctx context.Context, u *bridges.User, st *xmlel.Element) bool {
	d := c.opts.Domain
	online := u.Registration != nil || !c.bridge.RegistrationRequired()
	switch st.Attr("type") {
	case "subscribe":
		c.Send(stanza.Presence(d, u.JID, "subscribed"))
		if online {
			c.Send(c.presence(u.JID, ""))
		}
	case "probe":
		if online {
			c.Send(c.presence(u.JID, ""))
		} else {
			c.Send(stanza.Presence(d, u.JID, "unavailable"))
		}
	case "unsubscribe":
		c.Send(stanza.Presence(d, u.JID, "unsubscribed"))
	case "", "unavailable":
		c.userPresence(ctx, u, st)
	case "subscribed", "unsubscribed", "error":
	default:
		return false
	}
	return true
}
