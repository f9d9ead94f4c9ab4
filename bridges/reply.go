package bridges

import (
	"context"
	"strconv"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// MaxQueueAge is how long a queued delivery (a mail, a text) is retried
// after temporary failures, from when it was queued, before it fails for
// good.
const MaxQueueAge = 24 * time.Hour

// MaxQueueAgeText is MaxQueueAge in words, for failure reports.
var MaxQueueAgeText = strconv.Itoa(int(MaxQueueAge/time.Hour)) + " hours"

// Refuse answers st with the stanza error e, unless st is itself an error,
// a result or an unavailable presence (those are never answered).
func Refuse(h Host, st *xmlel.Element, e *stanza.Error) {
	switch st.Attr("type") {
	case "error", "result", "unavailable", "unsubscribed":
		return
	}
	if err := h.Send(stanza.ErrorReply(st, e)); err != nil {
		h.Log().Warn("cannot send an error reply", "to", st.Attr("from"), "err", err)
	}
}

// ReportFailure tells a user that a queued delivery failed for good. The
// error e answers the user's message id, addressed to user, the resource
// that sent it, so that its client marks that message as failed. By now
// that resource may be gone, and servers drop errors addressed to an
// unavailable resource or to a bare JID (RFC 6121 section 8.5): notice (e's
// text when empty), which should say what failed, to whom and why, also
// goes from contact as a chat message to the user's bare JID, which the
// server delivers or keeps offline and in its archive. Both go through the
// persistent outbox together: on error, neither was committed.
func ReportFailure(ctx context.Context, h Host, contact, user, id string, e *stanza.Error, notice string) error {
	return h.SendMessage(ctx, failureReport(contact, user, id, e, notice)...)
}

// ReportFailureOnce is ReportFailure for a failure the foreign side may
// report more than once: the report is committed under key (see
// Host.Deliver), and a report under a key committed before sends nothing
// and returns false.
func ReportFailureOnce(ctx context.Context, h Host, key, contact, user, id string, e *stanza.Error, notice string) (bool, error) {
	return h.Deliver(ctx, key, nil, failureReport(contact, user, id, e, notice)...)
}

// failureReport returns the error and the notice of ReportFailure.
func failureReport(contact, user, id string, e *stanza.Error, notice string) []*xmlel.Element {
	if notice == "" {
		notice = e.Text
	}
	errMsg := stanza.New("message", contact, user, "error", id).Add(e.Element())
	note := stanza.Message(contact, stanza.Bare(user), "chat", stanza.NewID(), notice)
	note.Add(xmlel.New(stanza.NSHints, "store"))
	return []*xmlel.Element{errMsg, note}
}

// AnswerContactIQ answers the IQs every foreign contact JID supports
// (ping, disco#info with the given identity) and refuses the others with
// service-unavailable. It reports whether st was an IQ.
func AnswerContactIQ(h Host, st *xmlel.Element, id Identity, features ...string) bool {
	if st.Local != "iq" {
		return false
	}
	typ := st.Attr("type")
	if typ != "get" && typ != "set" {
		return true
	}
	var p *xmlel.Element
	if len(st.Children) > 0 {
		p = st.Children[0]
	}
	switch {
	case typ == "get" && p != nil && p.Space == stanza.NSPing:
		h.Send(stanza.Result(st, nil))
	case typ == "get" && p != nil && p.Space == stanza.NSDiscoInfo && p.Attr("node") == "":
		q := xmlel.New(stanza.NSDiscoInfo, "query")
		q.Add(xmlel.New(stanza.NSDiscoInfo, "identity").SetAttr("category", id.Category).SetAttr("type", id.Type).SetAttr("name", id.Name))
		for _, f := range append([]string{stanza.NSDiscoInfo, stanza.NSPing}, features...) {
			q.Add(xmlel.New(stanza.NSDiscoInfo, "feature").SetAttr("var", f))
		}
		h.Send(stanza.Result(st, q))
	default:
		Refuse(h, st, stanza.Errorf("service-unavailable", ""))
	}
	return true
}

// AnswerContactPresence gives the usual answers to presence for a foreign
// contact without presence of its own (an email correspondent, a phone):
// subscriptions are approved, probes get an unavailable presence,
// everything else is ignored. It reports whether st was a presence.
func AnswerContactPresence(h Host, st *xmlel.Element) bool {
	if st.Local != "presence" {
		return false
	}
	from, to := st.Attr("to"), stanza.Bare(st.Attr("from"))
	if stanza.Local(from) == "" {
		return true // the user's own presence to the gateway
	}
	switch st.Attr("type") {
	case "subscribe":
		h.Send(stanza.Presence(from, to, "subscribed"))
	case "unsubscribe":
		h.Send(stanza.Presence(from, to, "unsubscribed"))
	case "probe":
		h.Send(stanza.Presence(from, to, "unavailable"))
	}
	return true
}
