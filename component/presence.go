package component

import (
	"context"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// grantWait bounds how long a new stream waits for the server's privilege
// advertisement before it probes the users whose presence the server does
// not forward.
const grantWait = 2 * time.Second

// grantLastResort is how long a stream stays up without the server's
// privilege advertisement before the component takes it to grant nothing
// (PrivilegesKnown). Until then a permission that needs it waits (the
// mails a user sends from her mail client are not shown, nor skipped): an
// advertisement may come late (a busy server; ejabberd's over a sibling's
// stream), and one taken for "nothing" loses those mails for good. It is
// bounded all the same: a server without XEP-0356 never advertises, and
// the mails its users send would wait forever, to come all at once the day
// it does.
const grantLastResort = 10 * time.Minute

// ForwardsPresence reports whether the server sends the component its
// users' presence (XEP-0356 presence permission): then it need not probe
// them to know who is online.
func (g Grant) ForwardsPresence() bool {
	return g.Presence == "managed_entity" || g.Presence == "roster"
}

// userPresence records the availability of one of u's resources, from a
// presence the server sent the domain: the user's broadcast (the gateway
// is in the user's roster), a forward under the presence permission, or
// the answer to a probe. It runs on the user's goroutine. When the user
// comes online (a first resource) or goes offline (the last one), a
// bridge that implements bridges.UserPresence is told.
func (c *Component) userPresence(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	up, ok := c.bridge.(bridges.UserPresence)
	if !ok {
		return
	}
	res := stanza.Resource(u.Full)
	avail := st.Attr("type") == ""
	c.mu.Lock()
	rs := c.online[u.JID]
	was := len(rs) > 0
	switch {
	case avail:
		if rs == nil {
			rs = map[string]struct{}{}
			if c.online == nil {
				c.online = map[string]map[string]struct{}{}
			}
			c.online[u.JID] = rs
		}
		rs[res] = struct{}{}
	case res == "":
		delete(c.online, u.JID) // the bare JID's unavailable: no resource is
	default:
		delete(rs, res)
		if len(rs) == 0 {
			delete(c.online, u.JID)
		}
	}
	now := len(c.online[u.JID]) > 0
	c.mu.Unlock()
	switch {
	case now && !was:
		c.log.Debug("a user came online", "user", u.JID, "resource", res)
		up.UserOnline(ctx, u.JID)
	case was && !now:
		c.log.Debug("a user went offline", "user", u.JID)
		up.UserOffline(ctx, u.JID)
	}
}

// Online reports whether the component knows user to be online: the
// server sent an available presence of one of the user's resources since
// the stream began, and no unavailable presence of it since.
func (c *Component) Online(user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.online[stanza.Bare(user)]) > 0
}

// forgetPresence forgets who is online when the stream ends: the next
// stream learns it again (from the server's forwards, or by probing).
func (c *Component) forgetPresence() {
	c.mu.Lock()
	c.online = nil
	c.mu.Unlock()
}

// settleGrants waits, on a new stream, for the server's privilege
// advertisement: at most grantWait before the registered users are
// probed (probeUsers), and at most c.grantLastResort before what the
// server grants is known to be nothing (PrivilegesKnown; an advertisement
// makes it known as it comes).
func (c *Component) settleGrants(ctx context.Context, s *session) {
	probe := time.NewTimer(grantWait)
	defer probe.Stop()
	last := time.NewTimer(c.grantLastResort)
	defer last.Stop()
	probed := false
	for {
		select {
		case <-s.granted:
			if !probed {
				c.probeUsers(ctx, s)
			}
			return
		case <-probe.C:
			probed = true
			c.probeUsers(ctx, s)
		case <-last.C:
			c.log.Warn("the XMPP server advertised no privileges (XEP-0356): it is taken to grant none", "waited", c.grantLastResort)
			c.grantsKnown()
			if !probed {
				c.probeUsers(ctx, s)
			}
			return
		case <-s.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// probeUsers learns, on a new stream whose grants are known, which
// registered users are online, for a bridge that wants to know
// (bridges.UserPresence): a server that forwards its users' presence
// sends the current ones itself, and its users are not probed; the
// others' are, from the domain (the gateway is in a registered user's
// roster), and their answers come back as presence to the domain.
func (c *Component) probeUsers(ctx context.Context, s *session) {
	if _, ok := c.bridge.(bridges.UserPresence); !ok {
		return
	}
	users, err := c.store.ListRegistrations(ctx, c.opts.Domain)
	if err != nil {
		c.log.Error("cannot list registered users to probe their presence", "err", err)
		return
	}
	n, forwarded := 0, 0
	for _, u := range users {
		if c.grant(u).ForwardsPresence() {
			forwarded++
			continue
		}
		// On this stream only, waiting while its queue is full: when it
		// ends, the next one probes again.
		select {
		case s.queue <- stanza.Presence(c.opts.Domain, u, "probe").Bytes():
		case <-s.done:
			return
		case <-ctx.Done():
			return
		}
		n++
	}
	if n > 0 || forwarded > 0 {
		c.log.Info("asked for the presence of registered users", "probed", n, "forwarded_by_the_server", forwarded)
	}
}
