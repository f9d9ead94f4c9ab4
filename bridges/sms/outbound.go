package sms

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// jobKind names the SMS bridge's jobs in the store's queue.
const jobKind = "sms"

// job is one queued outbound text (one part of a message).
type job struct {
	User    string   `json:"user"` // full JID of the sender (errors go there)
	From    string   `json:"from"`
	To      string   `json:"to"`
	Body    string   `json:"body,omitempty"`
	Media   []string `json:"media,omitempty"`
	ID      string   `json:"id"` // the XMPP message id
	Receipt bool     `json:"receipt,omitempty"`
	Part    int      `json:"part"`
	Parts   int      `json:"parts"`
}

// sent is what the message_ids map keeps (as extra) of a text handed to
// the provider, for its status callbacks.
type sent struct {
	User    string `json:"user"`
	ID      string `json:"id"`
	Receipt bool   `json:"receipt,omitempty"`
	Part    int    `json:"part"`
	Parts   int    `json:"parts"`
}

func itoa(n int) string { return strconv.Itoa(n) }

// handleMessage queues a user's message to a phone number as texts. It
// runs on the user's goroutine and returns once the texts are committed.
func (b *Bridge) handleMessage(ctx context.Context, u *bridges.User, st *xmlel.Element) {
	switch st.Attr("type") {
	case "error":
		return // an error about something the gateway sent: nothing to answer
	case "groupchat":
		bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "A phone number is not a chat room."))
		return
	}
	body := st.ChildText("", "body")
	var media []string
	for _, x := range st.ChildrenNamed(stanza.NSOOB, "x") {
		if v := strings.TrimSpace(x.ChildText("", "url")); v != "" {
			media = append(media, v)
		}
	}
	if strings.TrimSpace(body) == "" && len(media) == 0 {
		return // chat states, receipts, markers: nothing to text
	}
	local := stanza.Local(st.Attr("to"))
	if local == "" {
		bridges.Refuse(b.host, st, stanza.Errorf("service-unavailable",
			"Write to a phone number, for example +15551234567@"+b.host.Domain()+"."))
		return
	}
	to, err := mapping.NumberFromLocal(local)
	if err != nil {
		bridges.Refuse(b.host, st, stanza.Errorf("jid-malformed", "“"+local+"” is not a phone number in international format."))
		return
	}
	if u.Registration == nil || u.Registration.Fields["number"] == "" {
		bridges.Refuse(b.host, st, stanza.Errorf("registration-required", "Register with "+b.host.Domain()+" first."))
		return
	}
	from := u.Registration.Fields["number"]
	for _, m := range media {
		if !isHTTPURL(m) {
			bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "The attachment “"+m+"” is not an http(s) link."))
			return
		}
	}
	if len(media) > maxMedia {
		bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable", "A text carries at most "+itoa(maxMedia)+" attachments."))
		return
	}
	// A client sending an attachment puts its URL in the body too.
	if len(media) == 1 && strings.TrimSpace(body) == media[0] {
		body = ""
	}
	var parts []string
	if body != "" {
		parts = splitBody(body, maxTextChars)
	} else {
		parts = []string{""}
	}
	if len(parts) > maxParts {
		bridges.Refuse(b.host, st, stanza.Errorf("not-acceptable",
			"The message is too long for texts: at most "+itoa(maxParts*maxTextChars)+" characters."))
		return
	}
	id := st.Attr("id")
	receipt := id != "" && st.Child(stanza.NSReceipts, "request") != nil
	if id == "" {
		id = stanza.NewID()
	}
	// All the parts at once: the worker never sees a message half queued.
	payloads := make([][]byte, len(parts))
	for i, p := range parts {
		j := job{User: u.Full, From: from, To: to, Body: p, ID: id, Receipt: receipt, Part: i + 1, Parts: len(parts)}
		if i == 0 {
			j.Media = media
		}
		payloads[i], _ = json.Marshal(j) // strings, bools and ints only: cannot fail
	}
	if err := b.host.Store().EnqueueJobs(ctx, b.host.Domain(), u.JID, jobKind, payloads); err != nil {
		b.host.Log().Error("cannot queue a text", "user", u.JID, "to", to, "err", err)
		bridges.Refuse(b.host, st, stanza.Errorf("internal-server-error", "The gateway cannot queue the text."))
		return
	}
	b.host.Log().Debug("queued a text", "user", u.JID, "to", to, "parts", len(parts), "media", len(media))
	b.host.Contact(ctx, u.JID, local, to)
	b.jobs.Wake()
}
