package component

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// rosterTimeout bounds one roster request to the server.
const rosterTimeout = 10 * time.Second

// groups names the roster group of each bridge's contacts.
var groups = map[string]string{"email": "Email", "sms": "SMS", "irc": "IRC"}

// contactGroup is the roster group of this bridge's contacts.
func (c *Component) contactGroup() string {
	if g, ok := groups[c.bridge.Kind()]; ok {
		return g
	}
	return c.bridge.Kind()
}

// Contact implements bridges.Host: it makes sure the contact local@domain
// is in user's roster, named name, on user's goroutine (it returns at
// once). With the server's roster permission (XEP-0356) the item is added
// with subscription both; without it the contact asks for a subscription
// once, with its name (XEP-0172). A name the user gave the item is kept.
func (c *Component) Contact(ctx context.Context, user, local, name string) {
	if local == "" {
		return
	}
	user = stanza.Bare(user)
	jid := strings.ToLower(local) + "@" + c.opts.Domain
	if name == "" {
		name = local
	}
	err := c.Post(user, func(ctx context.Context) {
		if err := c.contact(ctx, user, jid, name); err != nil {
			c.log.Warn("cannot put a contact in the user's roster", "user", user, "contact", jid, "err", err)
		}
	})
	if err != nil {
		c.log.Warn("cannot put a contact in the user's roster", "user", user, "contact", jid, "err", err)
	}
}

// contact does Contact's work on the user's goroutine.
func (c *Component) contact(ctx context.Context, user, jid, name string) error {
	d := c.opts.Domain
	known, err := c.store.GetContact(ctx, d, user, jid)
	switch {
	case err == nil:
		if known.Name == name || known.State != store.ContactAdded || known.Renamed {
			return nil // nothing new, or not the gateway's to change
		}
	case errors.Is(err, store.ErrNotFound):
		known = nil
	default:
		return err
	}
	if _, err := c.store.GetRegistration(ctx, d, user); errors.Is(err, store.ErrNotFound) {
		return nil // contacts are kept for registered users only
	} else if err != nil {
		return err
	}
	g := c.grant(user)
	if !g.RosterSet() {
		if known != nil {
			return nil
		}
		return c.askSubscription(ctx, user, jid, name)
	}
	ct := store.Contact{Domain: d, JID: user, Contact: jid, Name: name, Group: c.contactGroup(), State: store.ContactAdded}
	if g.RosterGet() {
		item, err := c.rosterItem(ctx, user, jid)
		if errors.Is(err, errRosterRefused) {
			c.revokeRoster(g.Server, err)
			return c.askSubscription(ctx, user, jid, name)
		}
		if err != nil {
			return err
		}
		switch {
		case item != nil && known == nil:
			// The user's own item: recorded, never changed or removed.
			ct.Name, ct.State = item.Attr("name"), store.ContactFound
			c.log.Info("the contact was in the roster already: it stays the user's", "user", user, "contact", jid)
			return c.store.PutContact(ctx, ct)
		case item != nil && item.Attr("name") != known.Name:
			known.Renamed = true
			c.log.Info("the user renamed a contact: the name stays", "user", user, "contact", jid, "name", item.Attr("name"))
			return c.store.PutContact(ctx, *known)
		}
		// Not in the roster (new, or removed by the user since): added;
		// the gateway's item under the gateway's name: given the new one.
	} else if known != nil {
		return nil // cannot tell whether the user renamed it: leave it
	}
	if err := c.setRosterItem(ctx, user, rosterItem(jid, name, ct.Group, "both")); err != nil {
		if errors.Is(err, errRosterRefused) {
			c.revokeRoster(g.Server, err)
			if known == nil {
				return c.askSubscription(ctx, user, jid, name)
			}
			return nil
		}
		return err
	}
	if err := c.store.PutContact(ctx, ct); err != nil {
		return err
	}
	c.log.Info("put a contact in the user's roster", "user", user, "contact", jid, "name", name)
	return nil
}

// askSubscription sends a subscription request from the contact, with its
// name, and records it so that it is asked once.
func (c *Component) askSubscription(ctx context.Context, user, jid, name string) error {
	p := stanza.Presence(jid, user, "subscribe")
	p.Add(xmlel.New(stanza.NSNick, "nick").WithText(name))
	if err := c.Send(p); err != nil {
		return fmt.Errorf("failed to ask for a subscription: %w", err)
	}
	c.log.Info("asked the user to subscribe to a contact", "user", user, "contact", jid, "name", name)
	return c.store.PutContact(ctx, store.Contact{Domain: c.opts.Domain, JID: user, Contact: jid, Name: name,
		Group: c.contactGroup(), State: store.ContactAsked})
}

// errRosterRefused is a roster request the server answered with an error:
// forbidden when the permission is not, or no longer, granted; others when
// the server cannot serve it (ejabberd 23.01 fails every privileged roster
// set with internal-server-error). Either way the permission is not used
// again until the server advertises it anew.
var errRosterRefused = errors.New("the XMPP server refused the roster request")

// rosterItem element for a roster set.
func rosterItem(jid, name, group, subscription string) *xmlel.Element {
	it := xmlel.New(stanza.NSRoster, "item").SetAttr("jid", jid).SetAttr("subscription", subscription)
	if name != "" {
		it.SetAttr("name", name)
	}
	if group != "" {
		it.Add(xmlel.New(stanza.NSRoster, "group").WithText(group))
	}
	return it
}

// rosterIQ sends a privileged roster request (XEP-0356 §4.3) to user's
// bare JID and returns the answer's query, if any.
func (c *Component) rosterIQ(ctx context.Context, user, typ string, item *xmlel.Element) (*xmlel.Element, error) {
	ctx, cancel := context.WithTimeout(ctx, rosterTimeout)
	defer cancel()
	q := xmlel.New(stanza.NSRoster, "query")
	if item != nil {
		q.Add(item)
	}
	r, err := c.IQ(ctx, stanza.IQ(c.opts.Domain, user, typ, "", q))
	if err != nil {
		return nil, fmt.Errorf("failed to %s the roster of %s: %w", typ, user, err)
	}
	if r.Attr("type") == "error" {
		return nil, fmt.Errorf("%w: %s of the roster of %s: %w", errRosterRefused, typ, user, stanza.ErrorOf(r))
	}
	return r.Child(stanza.NSRoster, "query"), nil
}

// rosterItem returns jid's item in user's roster, or nil.
func (c *Component) rosterItem(ctx context.Context, user, jid string) (*xmlel.Element, error) {
	q, err := c.rosterIQ(ctx, user, "get", nil)
	if err != nil || q == nil {
		return nil, err
	}
	for _, it := range q.ChildrenNamed(stanza.NSRoster, "item") {
		if strings.EqualFold(it.Attr("jid"), jid) {
			return it, nil
		}
	}
	return nil, nil
}

func (c *Component) setRosterItem(ctx context.Context, user string, item *xmlel.Element) error {
	_, err := c.rosterIQ(ctx, user, "set", item)
	return err
}

// removeContacts takes the items the gateway added out of user's roster
// (on unregistering); the others stay. The contacts are forgotten by the
// caller with the registration.
func (c *Component) removeContacts(ctx context.Context, user string, contacts []store.Contact) {
	var added []store.Contact
	for _, ct := range contacts {
		if ct.State == store.ContactAdded {
			added = append(added, ct)
		}
	}
	if len(added) == 0 {
		return
	}
	if !c.grant(user).RosterSet() {
		c.log.Warn("the XMPP server grants no roster permission now: the contacts the gateway added stay in the roster of a user who unregistered", "user", user, "count", len(added))
		return
	}
	n := 0
	for _, ct := range added {
		err := c.setRosterItem(ctx, user, xmlel.New(stanza.NSRoster, "item").SetAttr("jid", ct.Contact).SetAttr("subscription", "remove"))
		if err != nil {
			c.log.Warn("cannot remove a contact from the roster of a user who unregistered", "user", user, "contact", ct.Contact, "err", err)
			continue
		}
		n++
	}
	if n > 0 {
		c.log.Info("removed the contacts the gateway had added", "user", user, "count", n)
	}
}

// rosterPush handles a roster push (XEP-0356 §4.4, roster permission get
// or both): an item the gateway added that the user renamed is marked so,
// one the user removed is forgotten. It answers the push.
func (c *Component) rosterPush(ctx context.Context, st, q *xmlel.Element) {
	from := st.Attr("from")
	if stanza.Resource(from) != "" || stanza.Local(from) == "" {
		c.Send(stanza.ErrorReply(st, stanza.Errorf("forbidden", "Roster pushes come from the user's bare JID.")))
		return
	}
	user := stanza.Bare(from)
	for _, it := range q.ChildrenNamed(stanza.NSRoster, "item") {
		jid := strings.ToLower(it.Attr("jid"))
		if !strings.EqualFold(stanza.Domain(jid), c.opts.Domain) || stanza.Local(jid) == "" {
			continue
		}
		known, err := c.store.GetContact(ctx, c.opts.Domain, user, jid)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			c.log.Error("cannot read a contact for a roster push", "user", user, "contact", jid, "err", err)
			continue
		}
		switch {
		case it.Attr("subscription") == "remove":
			err = c.store.DeleteContact(ctx, c.opts.Domain, user, jid)
		case known.State == store.ContactAdded && !known.Renamed && it.Attr("name") != known.Name:
			known.Renamed = true
			err = c.store.PutContact(ctx, *known)
		}
		if err != nil {
			c.log.Error("cannot record a roster push", "user", user, "contact", jid, "err", err)
		}
	}
	c.Send(stanza.Result(st, nil))
}
