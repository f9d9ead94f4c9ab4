package sms

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/store"
)

// runJob hands one queued text to the provider: done, retried later, or
// failed for good (refused, or still failing temporarily on the last
// try): reported to the sender, with the later parts of its message.
func (b *Bridge) runJob(ctx context.Context, j bridges.Job) bridges.Outcome {
	st, log := b.host.Store(), b.host.Log()
	var t job
	if err := json.Unmarshal(j.Payload, &t); err != nil {
		log.Error("dropping an unreadable SMS job", "id", j.ID, "err", err)
		return bridges.Done()
	}
	if t.Part > 1 {
		// The parts of a message go out in order: this one waits while an
		// earlier one is queued for a retry.
		earlier, err := b.otherParts(ctx, j.Job, t, -1)
		if err != nil {
			log.Error("cannot read the SMS queue", "err", err)
			return bridges.Retry(err)
		}
		if len(earlier) > 0 {
			return bridges.Later(earlier[0].NextTry)
		}
	}
	sid, err := b.provider.Send(ctx, Text{From: t.From, To: t.To, Body: t.Body, Media: t.Media,
		StatusCallback: b.statusCallback()})
	if err != nil && ctx.Err() != nil {
		return bridges.Outcome{} // shutting down: the job stays queued
	}
	switch {
	case err == nil:
		// The provider took the text: it is recorded as sent even when
		// the gateway is stopping meanwhile.
		ctx, cancel := bridges.RecordContext(ctx)
		defer cancel()
		x, _ := json.Marshal(sent{User: t.User, ID: t.ID, Receipt: t.Receipt, Part: t.Part, Parts: t.Parts})
		xmppID := t.ID
		if t.Parts > 1 {
			xmppID += "#" + itoa(t.Part)
		}
		m := store.MessageID{Domain: b.host.Domain(), JID: stanza.Bare(t.User), XMPPID: xmppID,
			ForeignID: sid, Peer: t.To, Extra: string(x)}
		if err := st.PutMessageID(ctx, m); err != nil {
			log.Error("cannot remember a text's sid; its status will not be reported", "sid", sid, "err", err)
		}
		log.Info("text sent", "user", stanza.Bare(t.User), "to", t.To, "sid", sid, "attempts", j.Attempts+1)
		if s, err := b.takeEarlyStatus(ctx, sid); err != nil {
			log.Error("cannot read an early status report", "sid", sid, "err", err)
		} else if s != nil {
			if err := b.applyKnownStatus(ctx, &m, s); err != nil {
				log.Error("cannot apply an early status report", "sid", sid, "err", err)
			}
		}
		return bridges.Done()
	case temporary(err) && !j.Final:
		log.Warn("cannot send a text; will retry", "user", stanza.Bare(t.User), "to", t.To, "err", err,
			"attempts", j.Attempts+1)
		return bridges.Retry(err)
	}
	expired := temporary(err)
	if expired {
		log.Warn("cannot send a text; giving up after "+bridges.MaxQueueAgeText, "user", stanza.Bare(t.User), "to", t.To,
			"err", err, "attempts", j.Attempts+1, "queued", j.Created.Format(time.RFC3339))
	} else {
		log.Info("the provider refused a text", "user", stanza.Bare(t.User), "to", t.To, "err", err)
	}
	// The later parts of the message are not sent either: one report
	// covers them.
	later, lerr := b.otherParts(ctx, j.Job, t, +1)
	if lerr != nil {
		log.Error("cannot report a failed text; will retry", "id", j.ID, "err", lerr)
		return bridges.Retry(err)
	}
	ids := make([]int64, len(later))
	for i, l := range later {
		ids[i] = l.ID
	}
	return bridges.Failed(err, func(ctx context.Context) error {
		return b.failed(ctx, t, err, expired, t.Parts-1-len(later))
	}).With(ids...)
}

// otherParts returns the queued jobs of the same message as t (job j):
// the earlier parts when dir < 0, the later ones when dir > 0, in order.
func (b *Bridge) otherParts(ctx context.Context, j store.Job, t job, dir int) ([]store.Job, error) {
	if t.Parts < 2 {
		return nil, nil
	}
	jobs, err := b.host.Store().UserJobs(ctx, b.host.Domain(), j.JID)
	if err != nil {
		return nil, err
	}
	var out []store.Job
	for _, o := range jobs {
		var ot job
		if o.ID == j.ID || o.Kind != jobKind || json.Unmarshal(o.Payload, &ot) != nil ||
			ot.User != t.User || ot.ID != t.ID || ot.To != t.To || ot.Parts != t.Parts {
			continue
		}
		if (dir < 0 && ot.Part < t.Part) || (dir > 0 && ot.Part > t.Part) {
			out = append(out, o)
		}
	}
	slices.SortStableFunc(out, func(a, b store.Job) int { return cmp.Compare(a.NextTry.UnixMilli(), b.NextTry.UnixMilli()) })
	return out, nil
}

// failed reports a text that will not be sent: refused by the provider, or
// still failing temporarily maxAge after it was queued (expired). The
// sender gets an error stanza and, since this comes late, a notice at its
// bare JID (bridges.ReportFailure). For a part of a longer message, sent
// says how many of its parts went out.
func (b *Bridge) failed(ctx context.Context, t job, err error, expired bool, sent int) error {
	what := "The text to " + t.To
	if t.Parts > 1 {
		what += " (part " + itoa(t.Part) + " of " + itoa(t.Parts) + ")"
	}
	var text, cond string
	if expired {
		text = what + " could not be sent for " + bridges.MaxQueueAgeText + "; the last error: " + err.Error()
		cond = "remote-server-timeout"
	} else {
		text, cond = what+" was refused by the SMS provider", "not-acceptable"
		var pe *ProviderError
		if errors.As(err, &pe) { // a permanent error is the provider's answer
			if pe.Message != "" {
				text += ": " + pe.Message
			}
			if pe.Code != 0 {
				text += " (error " + itoa(pe.Code) + ")"
			}
		}
	}
	if !strings.HasSuffix(text, ".") {
		text += "."
	}
	switch {
	case t.Parts < 2:
	case sent <= 0:
		text += " None of its " + itoa(t.Parts) + " parts was sent."
	case sent == 1:
		text += " Of its " + itoa(t.Parts) + " parts, only the first was sent."
	default:
		text += " Of its " + itoa(t.Parts) + " parts, only the first " + itoa(sent) + " were sent."
	}
	e := stanza.Errorf(cond, text)
	e.Type = "cancel"
	notice := text + "\nYour message: “" + excerpt(t.Body, t.Media) + "”"
	return bridges.ReportFailure(ctx, b.host, t.To+"@"+b.host.Domain(), t.User, t.ID, e, notice)
}

// excerpt quotes the start of a text in a failure notice: its body, or
// its first attachment.
func excerpt(body string, media []string) string {
	const max = 80
	s := strings.Join(strings.Fields(body), " ")
	if s == "" && len(media) > 0 {
		s = media[0]
	}
	if r := []rune(s); len(r) > max {
		s = strings.TrimSpace(string(r[:max-1])) + "…"
	}
	return s
}

func (b *Bridge) statusCallback() string {
	if b.opts.WebhookURL == "" {
		return ""
	}
	return b.opts.WebhookURL + statusPath
}
