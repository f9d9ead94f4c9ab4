package email

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
	"passerelle/store"
)

// jobKind names the outbound mail jobs in the store's queue.
const jobKind = "email.send"

// outJob is a queued outbound mail (the payload of a store job).
type outJob struct {
	User    string `json:"user"`    // full JID of the sender, for errors and receipts
	Contact string `json:"contact"` // the correspondent's JID
	ID      string `json:"id"`      // id of the user's message
	From    string `json:"from"`    // envelope and header sender
	To      string `json:"to"`
	Raw     []byte `json:"raw"`
	Receipt bool   `json:"receipt"` // XEP-0184 requested
	// Own is set when the mail leaves through the user's own submission
	// server (mailbox mode), read from the registration at each try.
	Own bool `json:"own,omitempty"`
}

// handleMessage turns a user's message to a correspondent into a queued mail.
func (b *Bridge) handleMessage(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	switch st.Attr("type") {
	case "error", "groupchat":
		return
	}
	body := st.ChildText("", "body")
	if strings.TrimSpace(body) == "" {
		return // chat states, receipts, markers: nothing to mail
	}
	if u.Registration == nil || u.Registration.Fields["address"] == "" {
		bridges.Refuse(b.host, st, stanza.Errorf("registration-required", "Register with "+b.host.Domain()+" to send mail."))
		return
	}
	own := u.Registration.Fields["smtp_server"] != ""
	if b.relay == nil && !own {
		bridges.Refuse(b.host, st, stanza.Errorf("service-unavailable", "This gateway has no outbound mail relay (PASSERELLE_SMTP_RELAY)."))
		return
	}
	local := stanza.Local(st.Attr("to"))
	to, err := b.contactAddress(ctx, local)
	if err != nil {
		bridges.Refuse(b.host, st, stanza.Errorf("jid-malformed", "“"+local+"” is not an email address."))
		return
	}
	from := u.Registration.Fields["address"] + "@" + strings.ToLower(b.opts.Domain)
	if own {
		from = mailboxAddress(u.Registration.Fields)
	}
	id := st.Attr("id")
	if id == "" {
		id = stanza.NewID()
	}

	// The mail this one answers: by thread, or by XEP-0461 reply.
	var ref *store.MessageID
	if r := st.Child(stanza.NSReply, "reply"); r != nil && r.Attr("id") != "" {
		if m, err := b.host.Store().MessageByXMPPID(ctx, b.host.Domain(), u.JID, r.Attr("id")); err == nil {
			ref = m
		}
	}
	thread := strings.TrimSpace(st.ChildText("", "thread"))
	if ref == nil && thread != "" {
		if m, err := b.host.Store().MessageByThread(ctx, b.host.Domain(), u.JID, thread); err == nil {
			ref = m
		}
	}
	if ref != nil && thread == "" {
		thread = ref.Thread
	}
	mid := stanza.NewID() + "@" + strings.ToLower(b.opts.Domain)
	subject := oneLine(st.ChildText("", "subject"))
	var info threadInfo
	if ref != nil {
		info = decodeThreadInfo(ref.Extra)
	}
	if subject == "" {
		if ref != nil && info.Subject != "" {
			subject = info.Subject
			if !strings.HasPrefix(strings.ToLower(subject), "re:") {
				subject = "Re: " + subject
			}
		} else {
			subject = firstWords(body, 8, 60)
		}
	}
	raw, err := ComposeMail(Compose{From: from, To: to, Subject: subject, MessageID: mid,
		InReplyTo: refID(ref), References: info.Refs, Body: body, Date: time.Now()})
	if err != nil {
		bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "Cannot write this message as a mail: "+err.Error()))
		return
	}
	if thread == "" {
		thread = threadID(mid)
	}
	refs := append(append([]string{}, info.Refs...), mid)
	if len(refs) > maxRefs {
		refs = append(refs[:1], refs[len(refs)-maxRefs+1:]...)
	}
	link := store.MessageID{Domain: b.host.Domain(), JID: u.JID, XMPPID: id, ForeignID: mid, Peer: to,
		Thread: thread, Extra: threadInfo{Subject: strings.TrimPrefix(subject, "Re: "), Refs: refs}.encode()}
	if err := b.host.Store().PutMessageID(ctx, link); err != nil {
		b.host.Log().Error("cannot store a message link", "err", err)
	}
	j := outJob{User: st.Attr("from"), Contact: stanza.Bare(st.Attr("to")), ID: st.Attr("id"), From: from, To: to, Raw: raw,
		Receipt: st.Child(stanza.NSReceipts, "request") != nil, Own: own}
	payload, _ := json.Marshal(j)
	if _, err := b.host.Store().EnqueueJob(ctx, b.host.Domain(), u.JID, jobKind, payload); err != nil {
		b.host.Log().Error("cannot queue a mail", "err", err)
		e := stanza.Errorf("internal-server-error", "The gateway could not queue your mail; try again.")
		e.Type = "wait"
		bridges.Refuse(b.host, st, e)
		return
	}
	b.host.Log().Info("queued a mail", "user", u.JID, "to", to, "message_id", mid)
	b.host.Contact(ctx, u.JID, local, to)
	b.jobs.Wake()
}

// contactAddress returns the email address of a contact JID localpart: the
// spelling stored when the contact wrote first, else the decoded localpart.
func (b *Bridge) contactAddress(ctx context.Context, local string) (string, error) {
	addr, err := mapping.LocalToEmail(local)
	if err != nil {
		return "", err
	}
	if stored, err := b.host.Store().Identity(ctx, b.host.Domain(), strings.ToLower(local)); err == nil {
		return stored, nil
	}
	return addr, nil
}

func refID(m *store.MessageID) string {
	if m == nil {
		return ""
	}
	return m.ForeignID
}

// firstWords returns up to n words of s, at most max bytes.
func firstWords(s string, n, max int) string {
	w := strings.Fields(s)
	if len(w) > n {
		w = w[:n]
	}
	out := strings.Join(w, " ")
	if len(out) > max {
		out = strings.ToValidUTF8(out[:max], "") + "…"
	}
	return out
}

// Compose describes an outbound mail.
type Compose struct {
	From, To, Subject, MessageID, InReplyTo string
	References                              []string
	Body                                    string
	Date                                    time.Time
}

// ComposeMail writes an RFC 5322 mail with a UTF-8 text body.
func ComposeMail(c Compose) ([]byte, error) {
	var h mail.Header
	h.SetDate(c.Date)
	h.SetAddressList("From", []*mail.Address{{Address: c.From}})
	h.SetAddressList("To", []*mail.Address{{Address: c.To}})
	h.SetSubject(c.Subject)
	h.SetMessageID(c.MessageID)
	if c.InReplyTo != "" {
		h.SetMsgIDList("In-Reply-To", []string{c.InReplyTo})
		refs := c.References
		if len(refs) == 0 || refs[len(refs)-1] != c.InReplyTo {
			refs = append(append([]string{}, refs...), c.InReplyTo)
		}
		h.SetMsgIDList("References", refs)
	}
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	var buf bytes.Buffer
	w, err := mail.CreateSingleInlineWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("failed to write the mail header: %w", err)
	}
	body := strings.ReplaceAll(strings.ReplaceAll(c.Body, "\r\n", "\n"), "\n", "\r\n")
	if _, err := w.Write([]byte(body)); err != nil {
		return nil, fmt.Errorf("failed to write the mail body: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("failed to write the mail body: %w", err)
	}
	return buf.Bytes(), nil
}

// errNoRelay is returned when a queued mail finds no relay configured.
var errNoRelay = errors.New("no outbound relay is configured")
