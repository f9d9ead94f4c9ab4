package email

// Mails a user sends from her own mail client, shown in her chats.
//
// A mail she sends from her mail client lands in her Sent mailbox. The
// watcher of her mailbox reads the new ones and shows each in her chat
// with each of its recipients as her own message: an XEP-0280 sent
// carbon, which only her XMPP server can hand her clients, so the
// component asks it to with the XEP-0356 message permission
// (bridges.Host.SentCarbons). Without the permission nothing is shown
// (a message from the contact would lie about who wrote it).
//
// INBOX keeps the connection's IDLE; the Sent mailbox is looked at with a
// STATUS (its UIDNEXT and UIDVALIDITY) after each round on INBOX, and is
// read only when it moved. While a Sent mailbox is watched, IDLE is
// renewed every poll interval instead of every five, so that a mail sent
// while INBOX stays quiet shows within that interval: a second connection
// in IDLE on Sent would double the connections each user holds on her
// server, which limits them per user.
//
// The position in Sent is kept like the INBOX one (imap_state, under the
// mailbox's name): from the registration on, or from the first look at
// the mailbox for a user registered before; a mailbox renumbered
// (UIDVALIDITY) starts again from its end. The carbons of a mail and its
// position are committed as an INBOX mail's: its delivery under a key
// (its UID, its UIDVALIDITY and its lines), then the position; a mail
// read again after a stop between the two is not shown twice.
//
// The gateway does not put the mails it sends into the user's Sent
// mailbox; a provider that files a copy there itself (as Gmail does for
// mail submitted through it) gives back one the user wrote in XMPP: a
// mail with a Message-ID of the gateway's is not shown again. A mail she
// also received (a Cc to herself, a list post) is shown all the same, to
// its recipients other than her own address, at most maxSentRecipients.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
	"passerelle/store"
)

// sentDelayAfter is how old a sent mail is when its carbon says when it
// was sent (XEP-0203), as IRC lines with server-time.
const sentDelayAfter = 5 * time.Second

// sentNames are the names a Sent mailbox goes by on servers without the
// \Sent special use, in the order they are looked for.
var sentNames = []string{"Sent", "Sent Items", "Sent Messages", "INBOX.Sent"}

// findSent returns the name of the user's Sent mailbox: the one with the
// \Sent special use (RFC 6154), else the first of sentNames that exists;
// "" when there is none.
func findSent(c *imapclient.Client) (string, error) {
	if c.Caps().Has(imap.CapSpecialUse) {
		var opts *imap.ListOptions
		if c.Caps().Has(imap.CapListExtended) || c.Caps().Has(imap.CapIMAP4rev2) {
			opts = &imap.ListOptions{SelectSpecialUse: true, ReturnSpecialUse: true}
		}
		list, err := c.List("", "*", opts).Collect()
		if err != nil {
			return "", fmt.Errorf("failed to list the special-use mailboxes: %w", err)
		}
		for _, m := range list {
			if slices.Contains(m.Attrs, imap.MailboxAttrSent) && usableSent(m) {
				return m.Mailbox, nil
			}
		}
	}
	for _, name := range sentNames {
		list, err := c.List("", name, nil).Collect()
		if err != nil {
			return "", fmt.Errorf("failed to look for the Sent mailbox: %w", err)
		}
		for _, m := range list {
			if usableSent(m) {
				return m.Mailbox, nil
			}
		}
	}
	return "", nil
}

// usableSent reports whether a listed mailbox can be read as Sent (INBOX
// never is: its position is INBOX's).
func usableSent(m *imap.ListData) bool {
	return !strings.EqualFold(m.Mailbox, "INBOX") &&
		!slices.Contains(m.Attrs, imap.MailboxAttrNoSelect) && !slices.Contains(m.Attrs, imap.MailboxAttrNonExistent)
}

// errSentStatus is a STATUS of the Sent mailbox without its UIDNEXT or
// UIDVALIDITY: which mails are new cannot be told.
var errSentStatus = errors.New("the server's STATUS of the Sent mailbox gives no UIDNEXT or no UIDVALIDITY")

// sentEnd returns the position at the end of mailbox (a STATUS).
func sentEnd(c *imapclient.Client, mailbox string) (imapPos, error) {
	st, err := c.Status(mailbox, &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
	if err != nil {
		return imapPos{}, fmt.Errorf("failed to read the state of %s: %w", mailbox, err)
	}
	if st.UIDNext == 0 || st.UIDValidity == 0 {
		return imapPos{}, fmt.Errorf("%s: %w", mailbox, errSentStatus)
	}
	return imapPos{UIDValidity: st.UIDValidity, LastUID: uint32(st.UIDNext) - 1}, nil
}

// sentState is what a watcher's session knows of the Sent mailbox.
type sentState struct {
	name   string // "": none
	pos    imapPos
	loaded bool // pos was read from the store
}

// openSent finds the Sent mailbox at the start of a session. A mailbox
// without one is logged once per watcher; one the server refuses to list
// is left out for the session (sentRefused).
func (w *watcher) openSent(c *imapclient.Client) (*sentState, error) {
	s := &sentState{}
	name, err := findSent(c)
	if err != nil {
		if !sentRefused(err) {
			return nil, err
		}
		w.dropSent(s, err)
		return s, nil
	}
	if name == "" && !w.noSent {
		w.noSent = true
		w.b.host.Log().Info("the mailbox has no Sent mailbox (special use \\Sent, or named Sent, Sent Items, Sent Messages or INBOX.Sent): mails the user sends from her mail client are not shown", "user", w.user, "imap", w.cfg.IMAPServer)
	}
	s.name = name
	return s, nil
}

// sentRefused reports whether err is the server refusing a command on the
// Sent mailbox (a NO or BAD answer: a permission, a mailbox gone) or
// answers it without what the watcher needs (errSentStatus), not a
// broken connection: INBOX is still read, without Sent.
func sentRefused(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie) || errors.Is(err, errSentStatus)
}

// dropSent leaves the Sent mailbox out for the rest of the session (the
// next one tries again, from the position kept), and logs why once per
// watcher.
func (w *watcher) dropSent(s *sentState, err error) {
	log := w.b.host.Log().Debug
	if !w.sentFailed {
		w.sentFailed = true
		log = w.b.host.Log().Warn
	}
	log("the Sent mailbox cannot be read: mails the user sends from her mail client are not shown until it can", "user", w.user, "imap", w.cfg.IMAPServer, "mailbox", s.name, "err", err)
	s.name = ""
}

// checkSent shows the mails new in the Sent mailbox, when it moved. While
// the component does not know whether the server grants the message
// permission it leaves them, and returns a channel closed once it knows.
// INBOX is selected again (its UIDVALIDITY still inbox) before it
// returns; more reports that INBOX holds mail after last then (come while
// Sent was selected: its EXISTS came in the SELECT's answer, which wakes
// no IDLE). A command the server refuses on Sent leaves Sent out for the
// session (dropSent), not INBOX.
func (w *watcher) checkSent(ctx context.Context, c *imapclient.Client, s *sentState, inbox, last uint32) (known <-chan struct{}, more bool, err error) {
	if s.name == "" {
		return nil, false, nil
	}
	end, err := sentEnd(c, s.name)
	if err != nil {
		if !sentRefused(err) {
			return nil, false, err
		}
		w.dropSent(s, err)
		return nil, false, nil
	}
	if !s.loaded {
		p, ok, err := w.b.loadPosOf(ctx, w.user, s.name)
		if err != nil {
			return nil, false, err
		}
		s.pos, s.loaded = p, true
		if !ok {
			// Registered before the gateway read Sent (or when it could
			// not): from now on.
			s.pos = end
			return nil, false, w.b.savePosOf(ctx, w.user, s.name, end)
		}
	}
	if s.pos.UIDValidity != end.UIDValidity {
		w.b.host.Log().Info("the Sent mailbox changed its UIDVALIDITY: the mails in it are not shown again", "user", w.user, "mailbox", s.name, "old", s.pos.UIDValidity, "new", end.UIDValidity)
		s.pos = end
		return nil, false, w.b.savePosOf(ctx, w.user, s.name, end)
	}
	if end.LastUID <= s.pos.LastUID {
		return nil, false, nil
	}
	carbon, err := w.b.host.SentCarbons(w.user)
	switch {
	case errors.Is(err, bridges.ErrPrivilegeUnknown):
		return w.b.host.PrivilegesKnown(), false, nil
	case errors.Is(err, bridges.ErrNoPrivilege):
		w.b.noCarbons(stanza.Domain(w.user))
		// Skipped: were the permission granted later, these would not
		// come all at once.
		s.pos = end
		return nil, false, w.b.savePosOf(ctx, w.user, s.name, end)
	case err != nil:
		return nil, false, err
	}
	if err := w.readSent(ctx, c, s, carbon); err != nil {
		if !sentRefused(err) {
			return nil, false, err
		}
		// A refused SELECT leaves no mailbox selected: INBOX again.
		w.dropSent(s, err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return nil, false, fmt.Errorf("failed to select INBOX: %w", err)
	}
	if sel.UIDValidity != inbox {
		// The next session tells the user and starts from the new end.
		return nil, false, fmt.Errorf("INBOX changed its UIDVALIDITY (%d, now %d)", inbox, sel.UIDValidity)
	}
	return nil, sel.UIDNext == 0 || uint32(sel.UIDNext) > last+1, nil
}

// readSent selects the Sent mailbox and shows its new mails.
func (w *watcher) readSent(ctx context.Context, c *imapclient.Client, s *sentState, carbon func(*xmlel.Element) *xmlel.Element) error {
	sel, err := c.Select(s.name, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", s.name, err)
	}
	if sel.UIDValidity != s.pos.UIDValidity {
		return nil // renumbered since the STATUS: the next round starts over
	}
	return w.fetchSent(ctx, c, s, carbon)
}

// fetchSent shows the mails of the selected Sent mailbox after s.pos, in
// UID order, recording each.
func (w *watcher) fetchSent(ctx context.Context, c *imapclient.Client, s *sentState, carbon func(*xmlel.Element) *xmlel.Element) error {
	set := imap.UIDSet{imap.UIDRange{Start: imap.UID(s.pos.LastUID + 1), Stop: 0}}
	msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		return fmt.Errorf("failed to fetch new mail from %s: %w", s.name, err)
	}
	var own []string
	if len(msgs) > 0 {
		reg, err := w.b.host.Registration(ctx, w.user)
		if errors.Is(err, store.ErrNotFound) {
			return errUnregistered
		}
		if err != nil {
			return fmt.Errorf("failed to read the registration: %w", err)
		}
		own = []string{mailboxAddress(reg.Fields)}
	}
	slices.SortFunc(msgs, func(a, b *imapclient.FetchMessageBuffer) int { return int(a.UID) - int(b.UID) })
	for _, m := range msgs {
		if uint32(m.UID) <= s.pos.LastUID {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !w.fence() {
			return errFenced
		}
		// As for INBOX: the carbons and the position go together.
		dctx := context.WithoutCancel(ctx)
		key := "sent " + w.user + " " + strconv.FormatUint(uint64(s.pos.UIDValidity), 10) + "/" + strconv.FormatUint(uint64(m.UID), 10)
		if err := w.b.deliverSent(dctx, w.user, own, key, w.b.bounded(bodyOf(m)), carbon); err != nil {
			return err
		}
		s.pos.LastUID = uint32(m.UID)
		if err := w.b.savePosOf(dctx, w.user, s.name, s.pos); err != nil {
			return err
		}
	}
	return nil
}

// bodyOf is the whole mail of a fetched message.
func bodyOf(m *imapclient.FetchMessageBuffer) []byte {
	if len(m.BodySection) > 0 {
		return m.BodySection[0].Bytes
	}
	return nil
}

// bounded is raw, or a short mail saying how large it was when it is
// larger than the gateway forwards.
func (b *Bridge) bounded(raw []byte) []byte {
	if len(raw) > int(b.opts.MaxSize) {
		return []byte(fmt.Sprintf("Subject: (mail too large: %d bytes)\r\n\r\nA mail of %d bytes in your mailbox is larger than this gateway forwards.\r\n", len(raw), len(raw)))
	}
	return raw
}

// noCarbons logs, once per XMPP server, that its users' sent mails are not
// shown.
func (b *Bridge) noCarbons(server string) {
	b.mu.Lock()
	first := !b.noCarbonsLogged[server]
	if first {
		if b.noCarbonsLogged == nil {
			b.noCarbonsLogged = map[string]bool{}
		}
		b.noCarbonsLogged[server] = true
	}
	b.mu.Unlock()
	if first {
		b.host.Log().Info("mails users send from their mail client are not shown in their chats: the XMPP server does not grant the message permission (XEP-0356)", "server", server)
	}
}

// maxSentRecipients bounds the chats a mail in the Sent mailbox is shown
// in: each recipient costs a carbon and a contact (a roster push or a
// subscription request), and a mail to a long list is no chat.
const maxSentRecipients = 20

// sentByGateway reports whether a mail with Message-ID mid is one the
// gateway sent (its Message-IDs end in "@" and its domain, as outbound
// mail's): the user wrote it in XMPP, where her chat shows it already.
// Only those: a mail she got too (she wrote to herself, a list sent her
// post back) is in her chat with its sender, not with its recipients.
func sentByGateway(mid, domain string) bool {
	return mid != "" && strings.HasSuffix(strings.ToLower(mid), "@"+strings.ToLower(domain))
}

// sentRecipients is to without the user's own addresses (own): her chat
// with herself would show her mail twice.
func sentRecipients(to []Recipient, own []string) []Recipient {
	var out []Recipient
	for _, r := range to {
		if !slices.ContainsFunc(own, func(a string) bool { return a != "" && strings.EqualFold(a, r.Addr) }) {
			out = append(out, r)
		}
	}
	return out
}

// deliverSent commits the carbons of raw, a mail user sent from her mail
// client, under key: one for each recipient (To, Cc; not her own
// addresses, own; at most maxSentRecipients), in her chat with that
// recipient, with a link for answers as for an inbound mail. A mail the
// gateway sent is in her chats already.
func (b *Bridge) deliverSent(ctx context.Context, user string, own []string, key string, raw []byte, carbon func(*xmlel.Element) *xmlel.Element) error {
	p, err := ParseMail(raw)
	if err != nil {
		p = &Parsed{Text: cleanText(string(raw))}
	}
	domain := b.host.Domain()
	if sentByGateway(p.MessageID, domain) {
		b.host.Log().Info("a mail in the Sent mailbox is in the user's chats already", "user", user, "message_id", p.MessageID)
		return nil
	}
	recipients := sentRecipients(p.To, own)
	if len(recipients) > maxSentRecipients {
		b.host.Log().Info("a mail in the Sent mailbox has more recipients than are shown", "user", user, "message_id", p.MessageID,
			"recipients", len(recipients), "shown", maxSentRecipients)
		recipients = recipients[:maxSentRecipients]
	}
	var body strings.Builder
	urls := b.mailText(ctx, &body, p)
	if body.Len() == 0 {
		body.WriteString("(empty mail)")
	}
	mid := mailID(p, domain)
	thread := b.threadFor(ctx, user, p.References, mid)
	extra := mailThreadInfo(p, mid)
	var msgs []*xmlel.Element
	var links []store.MessageID
	for _, r := range recipients {
		local, err := mapping.EmailToLocal(r.Addr)
		if err != nil {
			b.host.Log().Info("a recipient of a sent mail has no address on the gateway: not shown", "user", user, "recipient", r.Addr, "err", err)
			continue
		}
		if err := b.host.Store().PutIdentity(ctx, domain, strings.ToLower(local), r.Addr); err != nil {
			return fmt.Errorf("failed to store the recipient: %w", err)
		}
		id := stanza.NewID()
		msg := mailMessage(user, local+"@"+domain, id, body.String(), p, thread, urls)
		if !p.Date.IsZero() && time.Since(p.Date) > sentDelayAfter {
			msg.Add(xmlel.New(stanza.NSDelay, "delay").SetAttr("stamp", p.Date.UTC().Format(time.RFC3339)))
		}
		msgs = append(msgs, carbon(msg))
		links = append(links, store.MessageID{Domain: domain, JID: user, XMPPID: id, ForeignID: mid, Peer: r.Addr,
			Thread: thread, Extra: extra})
		name := r.Name
		if name == "" {
			name = r.Addr
		}
		b.host.Contact(ctx, user, local, name)
	}
	if len(msgs) == 0 {
		b.host.Log().Info("a mail in the Sent mailbox has no recipient to show it to", "user", user, "message_id", p.MessageID)
		return nil
	}
	ok, err := b.host.Deliver(ctx, key+" "+linesDigest(raw), links, msgs...)
	if err != nil {
		return fmt.Errorf("failed to queue the carbons of a sent mail: %w", err)
	}
	if ok {
		b.host.Log().Info("showed a mail the user sent from her mail client", "user", user, "message_id", p.MessageID, "recipients", len(msgs))
	} else {
		b.host.Log().Info("ignored a sent mail shown before", "user", user, "message_id", p.MessageID)
	}
	return nil
}
