package component

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// Nodes of the component's own ad-hoc commands.
const (
	NodeSettings   = "settings"
	NodeUnregister = "unregister"
	NodeListUsers  = "list-users"
	NodeStats      = "stats"
)

// commands returns the commands offered to u on the domain (local == "") or
// on a JID with a localpart, including admin-only ones.
func (c *Component) commands(u *bridges.User, local string) []*bridges.Command {
	var cmds []*bridges.Command
	if local == "" {
		cmds = append(cmds, c.settingsCommand(), c.unregisterCommand(), c.listUsersCommand(), c.statsCommand())
	}
	if cm, ok := c.bridge.(bridges.Commander); ok {
		cmds = append(cmds, cm.Commands(u, local)...)
	}
	return cmds
}

func (c *Component) findCommand(u *bridges.User, local, node string) *bridges.Command {
	for _, cmd := range c.commands(u, local) {
		if cmd.Node == node {
			return cmd
		}
	}
	return nil
}

// commandItems answers disco#items on the commands node: the commands u may run.
func (c *Component) commandItems(ctx context.Context, u *bridges.User, st *xmlel.Element, local string) {
	q := xmlel.New(stanza.NSDiscoItems, "query").SetAttr("node", stanza.NSCommands)
	jid := c.opts.Domain
	if local != "" {
		jid = local + "@" + jid
	}
	for _, cmd := range c.commands(u, local) {
		if cmd.Admin && !u.Admin {
			continue
		}
		if cmd.Node == NodeUnregister && u.Registration == nil {
			continue
		}
		q.Add(xmlel.New(stanza.NSDiscoItems, "item").SetAttr("jid", jid).SetAttr("node", cmd.Node).SetAttr("name", cmd.Name))
	}
	c.Send(stanza.Result(st, q))
}

// handleCommandIQ serves ad-hoc commands on JIDs with a localpart, for
// bridges that offer them there. It reports whether it handled st.
func (c *Component) handleCommandIQ(ctx context.Context, u *bridges.User, st *xmlel.Element, local string) bool {
	if _, ok := c.bridge.(bridges.Commander); !ok || len(st.Children) == 0 {
		return false
	}
	p := st.Children[0]
	switch {
	case st.Attr("type") == "get" && p.Space == stanza.NSDiscoItems && p.Attr("node") == stanza.NSCommands:
		c.commandItems(ctx, u, st, local)
	case st.Attr("type") == "set" && p.Space == stanza.NSCommands && p.Local == "command":
		if c.findCommand(u, local, p.Attr("node")) == nil {
			return false
		}
		c.executeCommand(ctx, u, st, p, local)
	default:
		return false
	}
	return true
}

// executeCommand runs one step of an XEP-0050 command.
func (c *Component) executeCommand(ctx context.Context, u *bridges.User, st, p *xmlel.Element, local string) {
	node := p.Attr("node")
	cmd := c.findCommand(u, local, node)
	if cmd == nil {
		c.Send(stanza.ErrorReply(st, stanza.Errorf("item-not-found", "No such command.")))
		return
	}
	if cmd.Admin && !u.Admin {
		c.log.Info("refused an admin command to a non-admin", "user", u.JID, "node", node)
		c.Send(stanza.ErrorReply(st, stanza.Errorf("forbidden", "This command is for the gateway's administrators.")))
		return
	}
	us := c.userSession(u.JID)
	sid := p.Attr("sessionid")
	action := p.Attr("action")
	reply := func(status string, f *form.Form, note string) {
		r := xmlel.New(stanza.NSCommands, "command").SetAttr("node", node).SetAttr("sessionid", sid).SetAttr("status", status)
		if status == "executing" {
			r.Add(xmlel.New(stanza.NSCommands, "actions").SetAttr("execute", "complete").Add(xmlel.New(stanza.NSCommands, "complete")))
		}
		if note != "" {
			r.Add(xmlel.New(stanza.NSCommands, "note").SetAttr("type", "info").WithText(note))
		}
		if f != nil {
			r.Add(f.Element())
		}
		c.Send(stanza.Result(st, r))
	}
	var submitted *form.Form
	if sid == "" {
		sid = c.openCommand(u.JID, us, node)
	} else {
		cs := us.commands[sid]
		if cs == nil || cs.node != node {
			e := stanza.Errorf("bad-request", "Unknown or expired command session.")
			el := stanza.ErrorReply(st, e)
			el.Child("", "error").Add(xmlel.New(stanza.NSCommands, "bad-sessionid"))
			c.Send(el)
			return
		}
		if action == "cancel" {
			us.endCommand(sid)
			reply("canceled", nil, "")
			return
		}
		cs.step(c.commandTimeout)
		f, err := form.Find(p)
		if err != nil {
			c.Send(stanza.ErrorReply(st, stanza.Errorf("bad-request", "Submit the form to go on.")))
			return
		}
		submitted = f
	}
	res, err := cmd.Run(ctx, u, submitted)
	if err != nil {
		us.endCommand(sid)
		c.Send(stanza.ErrorReply(st, c.stanzaError(err)))
		return
	}
	if res.Done {
		us.endCommand(sid)
		reply("completed", res.Form, res.Note)
		return
	}
	reply("executing", res.Form, res.Note)
}

// settingsCommand edits the registration (and the bridge's own settings).
func (c *Component) settingsCommand() *bridges.Command {
	return &bridges.Command{Node: NodeSettings, Name: "Settings", Run: func(ctx context.Context, u *bridges.User, f *form.Form) (*bridges.CommandResult, error) {
		var extra []form.Field
		if s, ok := c.bridge.(bridges.Settings); ok {
			extra = s.SettingsFields()
		}
		if f == nil {
			rf := c.bridge.RegistrationForm(u.Registration)
			rf.Title = "Settings for " + c.opts.Domain
			if len(extra) > 0 {
				stored, err := c.store.Settings(ctx, c.opts.Domain, u.JID)
				if err != nil {
					return nil, err
				}
				for _, fd := range extra {
					if v, ok := stored[fd.Var]; ok {
						fd.Values = []string{v}
					}
					rf.Fields = append(rf.Fields, fd)
				}
			}
			return &bridges.CommandResult{Form: rf}, nil
		}
		values := f.Values()
		for _, fd := range extra {
			v, ok := values[fd.Var]
			if !ok {
				continue
			}
			delete(values, fd.Var)
			if fd.Type == form.Boolean {
				b, err := form.ParseBool(v)
				if err != nil {
					return nil, stanza.Errorf("not-acceptable", fd.Label+": "+err.Error())
				}
				v = strconv.FormatBool(b)
			}
			if err := c.store.SetSetting(ctx, c.opts.Domain, u.JID, fd.Var, v); err != nil {
				return nil, err
			}
		}
		delete(values, "FORM_TYPE")
		if u.Registration != nil || hasValues(values) {
			if err := c.saveRegistration(ctx, u, values); err != nil {
				return nil, err
			}
		}
		return &bridges.CommandResult{Done: true, Note: "Settings saved."}, nil
	}}
}

func hasValues(m map[string]string) bool {
	for _, v := range m {
		if strings.TrimSpace(v) != "" {
			return true
		}
	}
	return false
}

// Setting implements bridges.Host.
func (c *Component) Setting(ctx context.Context, user, key string) (string, error) {
	stored, err := c.store.Settings(ctx, c.opts.Domain, user)
	if err != nil {
		return "", err
	}
	if v, ok := stored[key]; ok {
		return v, nil
	}
	if s, ok := c.bridge.(bridges.Settings); ok {
		for _, fd := range s.SettingsFields() {
			if fd.Var == key {
				return fd.Value(), nil
			}
		}
	}
	return "", nil
}

func (c *Component) unregisterCommand() *bridges.Command {
	return &bridges.Command{Node: NodeUnregister, Name: "Unregister", Run: func(ctx context.Context, u *bridges.User, f *form.Form) (*bridges.CommandResult, error) {
		if u.Registration == nil {
			return nil, stanza.Errorf("registration-required", "You are not registered.")
		}
		if f == nil {
			return &bridges.CommandResult{Form: &form.Form{Type: "form", Title: "Unregister from " + c.opts.Domain,
				Instructions: "This deletes your registration and everything the gateway keeps for you.",
				Fields:       []form.Field{{Var: "confirm", Type: form.Boolean, Label: "Yes, unregister", Required: true}}}}, nil
		}
		ok, err := form.ParseBool(f.Get("confirm"))
		if err != nil || !ok {
			return &bridges.CommandResult{Done: true, Note: "Nothing was changed."}, nil
		}
		if _, err := c.unregister(ctx, u); err != nil {
			return nil, err
		}
		return &bridges.CommandResult{Done: true, Note: "You are unregistered."}, nil
	}}
}

func (c *Component) listUsersCommand() *bridges.Command {
	return &bridges.Command{Node: NodeListUsers, Name: "List registered users", Admin: true, Run: func(ctx context.Context, u *bridges.User, f *form.Form) (*bridges.CommandResult, error) {
		users, err := c.store.ListRegistrations(ctx, c.opts.Domain)
		if err != nil {
			return nil, err
		}
		sort.Strings(users)
		return &bridges.CommandResult{Done: true, Form: &form.Form{Type: "result", Title: "Registered users of " + c.opts.Domain,
			Fields: []form.Field{
				{Var: "count", Type: form.TextSingle, Label: "Number of users", Values: []string{strconv.Itoa(len(users))}},
				{Var: "users", Type: form.JIDMulti, Label: "Users", Values: users},
			}}}, nil
	}}
}

func (c *Component) statsCommand() *bridges.Command {
	return &bridges.Command{Node: NodeStats, Name: "Statistics", Admin: true, Run: func(ctx context.Context, u *bridges.User, f *form.Form) (*bridges.CommandResult, error) {
		users, err := c.store.ListRegistrations(ctx, c.opts.Domain)
		if err != nil {
			return nil, err
		}
		outbox, err := c.store.CountStanzas(ctx, c.opts.Domain)
		if err != nil {
			return nil, err
		}
		jobs, err := c.store.CountJobs(ctx, c.opts.Domain)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		active := len(c.users)
		c.mu.Unlock()
		field := func(v, label string, n any) form.Field {
			return form.Field{Var: v, Type: form.TextSingle, Label: label, Values: []string{fmt.Sprint(n)}}
		}
		return &bridges.CommandResult{Done: true, Form: &form.Form{Type: "result", Title: "Statistics of " + c.opts.Domain,
			Fields: []form.Field{
				field("registered", "Registered users", len(users)),
				field("active", "Users with work in progress or a command open", active),
				field("stanzas_in", "Stanzas received", c.m.StanzasIn.Load()),
				field("stanzas_out", "Stanzas sent", c.m.StanzasOut.Load()),
				field("outbox", "Stanzas waiting for the server", outbox),
				field("jobs", "Deliveries waiting for the foreign network", jobs),
				field("uptime", "Uptime", time.Since(c.started).Round(time.Second).String()),
			}}}, nil
	}}
}
