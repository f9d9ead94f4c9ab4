package email

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
	"passerelle/store"
)

// maxRefs bounds the References kept per message.
const maxRefs = 20

// threadInfo is kept with each message link (store.MessageID.Extra): what an
// answer in the thread needs for its headers.
type threadInfo struct {
	Subject string   `json:"s,omitempty"`
	Refs    []string `json:"r,omitempty"` // References of an answer to this mail, oldest first
}

func (t threadInfo) encode() string {
	b, _ := json.Marshal(t)
	return string(b)
}

func decodeThreadInfo(s string) threadInfo {
	var t threadInfo
	json.Unmarshal([]byte(s), &t)
	return t
}

// senderLocal returns the JID localpart of a mail sender and the address it
// stands for.
func (b *Bridge) senderLocal(p *Parsed, envFrom string) (local, addr string, err error) {
	for _, a := range []string{p.From, envFrom} {
		if a == "" {
			continue
		}
		if l, err := mapping.EmailToLocal(a); err == nil {
			return l, a, nil
		}
	}
	return "", "", fmt.Errorf("no usable sender address (From %q, MAIL FROM %q)", p.From, envFrom)
}

// BuildInbound turns a mail for user into the message stanza she receives
// and the link to store for answers. It never fails: a mail whose sender
// cannot be addressed comes from the gateway domain itself, with the
// sender's text in the body. The body of a mail whose sender is unverified
// starts with a line that says so. The subject is both in <subject> and
// on the first line of the body, for clients that show only the body.
func (b *Bridge) BuildInbound(ctx context.Context, user, envFrom string, raw []byte, unverified bool) (*xmlel.Element, store.MessageID, string, string) {
	p, err := ParseMail(raw)
	if err != nil {
		p = &Parsed{Text: cleanText(string(raw))}
	}
	domain := b.host.Domain()
	local, addr, err := b.senderLocal(p, envFrom)
	from := domain
	var body strings.Builder
	if unverified {
		body.WriteString(unverifiedMark + "\n")
	}
	if err == nil {
		from = local + "@" + domain
	} else {
		fmt.Fprintf(&body, "Mail from %s\n\n", oneLine(firstNonEmpty(p.From, envFrom, "an unknown sender")))
	}
	links := b.mailText(ctx, &body, p)
	if p.Text == "" && len(p.Attachments) == 0 && err == nil {
		body.WriteString("(empty mail)")
	}
	mid := mailID(p, domain)
	thread := b.threadFor(ctx, user, p.References, mid)
	id := stanza.NewID()
	msg := mailMessage(from, user, id, body.String(), p, thread, links)
	link := store.MessageID{Domain: domain, JID: user, XMPPID: id, ForeignID: mid, Peer: addr,
		Thread: thread, Extra: mailThreadInfo(p, mid)}
	return msg, link, local, addr
}

// mailText writes the text of mail p for its message body: the subject,
// emphasised, the text and the attachments (each uploaded when the
// server offers it). It returns the URLs of the uploads.
func (b *Bridge) mailText(ctx context.Context, body *strings.Builder, p *Parsed) []string {
	if subj := strings.TrimSpace(oneLine(p.Subject)); subj != "" {
		// Many clients ignore <subject> on a chat message: the body
		// carries it too, emphasised (XEP-0393).
		fmt.Fprintf(body, "*Subject: %s*\n\n", subj)
	}
	body.WriteString(p.Text)
	var links []string
	if len(p.Attachments) > 0 {
		if body.Len() > 0 {
			body.WriteString("\n\n")
		}
		for i, a := range p.Attachments {
			if i > 0 {
				body.WriteByte('\n')
			}
			body.WriteString(a.Describe())
			if url := b.tryUpload(ctx, a); url != "" {
				body.WriteString(" " + url)
				links = append(links, url)
			}
		}
	}
	return links
}

// mailID is the Message-ID of mail p, or one made up (missingID) for a
// mail without.
func mailID(p *Parsed, domain string) string {
	if p.MessageID != "" {
		return p.MessageID
	}
	return stanza.NewID() + missingID + domain
}

// mailMessage is the chat message from → to showing mail p in thread,
// with body and the URLs of its uploaded attachments.
func mailMessage(from, to, id, body string, p *Parsed, thread string, links []string) *xmlel.Element {
	msg := stanza.Message(from, to, "chat", id, body)
	if p.Subject != "" {
		msg.AddText("subject", p.Subject)
	}
	msg.AddText("thread", thread)
	for _, url := range links {
		msg.Add(xmlel.New(stanza.NSOOB, "x").Add(xmlel.New(stanza.NSOOB, "url").WithText(url)))
	}
	return msg
}

// mailThreadInfo is the link's Extra for mail p, whose Message-ID is mid.
func mailThreadInfo(p *Parsed, mid string) string {
	refs := append(append([]string{}, p.References...), mid)
	if len(refs) > maxRefs {
		refs = append(refs[:1], refs[len(refs)-maxRefs+1:]...)
	}
	return threadInfo{Subject: p.Subject, Refs: refs}.encode()
}

// tryUpload uploads an attachment when the server has an upload service
// and returns its URL ("" when it stays a mere mention).
func (b *Bridge) tryUpload(ctx context.Context, a Attachment) string {
	if jid, _ := b.upload.get(); jid == "" || len(a.Data) == 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	url, err := b.uploadAttachment(ctx, a)
	if err != nil {
		b.host.Log().Warn("cannot upload an attachment; it is only listed", "name", a.Name, "err", err)
		return ""
	}
	return url
}

// deliverMail commits the stanza for one mail from a user's own mailbox to
// the outbox (her provider received it; it is not marked).
func (b *Bridge) deliverMail(ctx context.Context, user, envFrom string, raw []byte) error {
	return b.deliverMailTo(ctx, []string{user}, envFrom, raw, false)
}

// deliverMailTo commits the stanzas of one inbound mail for all its users
// to the outbox together, with their message links: a failure leaves none
// of them, so that the sender's retry gives nobody the mail twice.
// unverified marks a mail whose sender could not be authenticated. A mail
// given again (by a sender that got no answer, or by a mailbox read again
// after a stop) is delivered once: its Message-ID, its content and its
// users are the key of its delivery, kept as long as the links.
func (b *Bridge) deliverMailTo(ctx context.Context, users []string, envFrom string, raw []byte, unverified bool) error {
	msgs := make([]*xmlel.Element, 0, len(users))
	links := make([]store.MessageID, 0, len(users))
	for _, user := range users {
		msg, link, local, addr := b.BuildInbound(ctx, user, envFrom, raw, unverified)
		if local != "" {
			// The server may fold the localpart; remember the original spelling.
			if err := b.host.Store().PutIdentity(ctx, b.host.Domain(), strings.ToLower(local), addr); err != nil {
				return fmt.Errorf("failed to store the sender: %w", err)
			}
			b.host.Contact(ctx, user, local, senderName(raw, addr))
		}
		msgs, links = append(msgs, msg), append(links, link)
	}
	ok, err := b.host.Deliver(ctx, b.mailKey(links, raw), links, msgs...)
	if err != nil {
		return fmt.Errorf("failed to queue the message: %w", err)
	}
	if !ok {
		b.host.Log().Info("ignored a mail delivered before", "message_id", links[0].ForeignID, "recipients", len(users))
	}
	return nil
}

// missingID ends the Message-ID BuildInbound makes up for a mail without one.
const missingID = ".missing-id@"

// mailKey is the key of the delivery of the mail raw to the users of
// links: its Message-ID, a digest of its lines (a sender gives the same
// lines again; another mail that merely takes the Message-ID is not
// dropped) and their JIDs, in any order. A mail without a Message-ID has
// none (each copy is delivered).
func (b *Bridge) mailKey(links []store.MessageID, raw []byte) string {
	mid := links[0].ForeignID
	if strings.HasSuffix(mid, missingID+b.host.Domain()) {
		return ""
	}
	users := make([]string, len(links))
	for i, l := range links {
		users[i] = l.JID
	}
	slices.Sort(users)
	return "mail <" + mid + "> " + linesDigest(raw) + " to " + strings.Join(users, " ")
}

// linesDigest is a digest of the lines of raw, however they end: the same
// mail over SMTP and read from a mailbox may end its lines differently.
func linesDigest(raw []byte) string {
	h := sha256.New()
	for line := range bytes.Lines(raw) {
		h.Write(bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")))
		h.Write([]byte("\n"))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// threadFor returns the XMPP thread of a mail: the thread of the latest mail
// it refers to that the user already has, else one derived from the first
// mail of the conversation.
func (b *Bridge) threadFor(ctx context.Context, user string, refs []string, mid string) string {
	for i := len(refs) - 1; i >= 0; i-- {
		m, err := b.host.Store().MessageByForeignID(ctx, b.host.Domain(), refs[i])
		if err == nil && m.JID == user && m.Thread != "" {
			return m.Thread
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			b.host.Log().Warn("cannot look a mail thread up", "err", err)
		}
	}
	root := mid
	if len(refs) > 0 {
		root = refs[0]
	}
	return threadID(root)
}

func threadID(root string) string {
	h := sha256.Sum256([]byte(strings.ToLower(root)))
	return "mail-" + hex.EncodeToString(h[:10])
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
