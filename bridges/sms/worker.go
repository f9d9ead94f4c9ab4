package sms

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/store"
)

const (
	firstRetry = bridges.FirstRetry
	batchSize  = 50
)

// worker sends the queued texts, oldest first, until ctx is done. It wakes
// when a text is queued and when the next retry is due.
func (b *Bridge) worker(ctx context.Context) {
	st, domain, log := b.host.Store(), b.host.Domain(), b.host.Log()
	for {
		jobs, err := st.DueJobs(ctx, domain, time.Now(), batchSize)
		if err != nil && ctx.Err() == nil {
			log.Error("cannot read the SMS queue", "err", err)
		}
		for _, j := range jobs {
			if ctx.Err() != nil {
				return
			}
			b.send(ctx, j)
		}
		if len(jobs) == batchSize {
			continue
		}
		wait := time.Hour
		if next, ok, err := st.NextJobTime(ctx, domain); err == nil && ok {
			wait = max(time.Until(next), 0)
		} else if err != nil && ctx.Err() == nil {
			log.Error("cannot read the SMS queue", "err", err)
			wait = firstRetry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-b.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// send hands one queued text to the provider: done, retried later, or
// refused for good (an error stanza to the sender).
func (b *Bridge) send(ctx context.Context, j store.Job) {
	st, log := b.host.Store(), b.host.Log()
	var t job
	if err := json.Unmarshal(j.Payload, &t); err != nil || j.Kind != jobKind {
		log.Error("dropping an unreadable SMS job", "id", j.ID, "kind", j.Kind, "err", err)
		st.DeleteJob(ctx, j.ID)
		return
	}
	sid, err := b.provider.Send(ctx, Text{From: t.From, To: t.To, Body: t.Body, Media: t.Media,
		StatusCallback: b.statusCallback()})
	if ctx.Err() != nil {
		return // shutting down: the job stays queued
	}
	switch {
	case err == nil:
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
		if err := st.DeleteJob(ctx, j.ID); err != nil {
			log.Error("cannot remove a sent text from the queue", "id", j.ID, "err", err)
		}
		log.Info("text sent", "user", stanza.Bare(t.User), "to", t.To, "sid", sid, "attempts", j.Attempts+1)
		if s, err := b.takeEarlyStatus(ctx, sid); err != nil {
			log.Error("cannot read an early status report", "sid", sid, "err", err)
		} else if s != nil {
			if err := b.applyKnownStatus(ctx, &m, s); err != nil {
				log.Error("cannot apply an early status report", "sid", sid, "err", err)
			}
		}
	case temporary(err):
		d := b.backoff(j.Attempts)
		log.Warn("cannot send a text; will retry", "user", stanza.Bare(t.User), "to", t.To, "err", err,
			"attempts", j.Attempts+1, "retry_in", d.Round(time.Millisecond))
		if err := st.RetryJob(ctx, j.ID, time.Now().Add(d), err.Error()); err != nil {
			log.Error("cannot reschedule a text", "id", j.ID, "err", err)
		}
	default:
		log.Info("the provider refused a text", "user", stanza.Bare(t.User), "to", t.To, "err", err)
		if err := b.refused(ctx, t, err); err != nil {
			log.Error("cannot report a refused text; will retry", "id", j.ID, "err", err)
			st.RetryJob(ctx, j.ID, time.Now().Add(b.backoff(j.Attempts)), err.Error())
			return
		}
		if err := st.DeleteJob(ctx, j.ID); err != nil {
			log.Error("cannot remove a refused text from the queue", "id", j.ID, "err", err)
		}
	}
}

// refused sends the error stanza for a text the provider will not send.
func (b *Bridge) refused(ctx context.Context, t job, err error) error {
	text := "The SMS provider refused the text"
	var pe *ProviderError
	if errors.As(err, &pe) {
		if pe.Message != "" {
			text += ": " + pe.Message
		}
		if pe.Code != 0 {
			text += " (error " + itoa(pe.Code) + ")"
		}
	}
	if t.Parts > 1 {
		text += " (part " + itoa(t.Part) + " of " + itoa(t.Parts) + ")"
	}
	e := stanza.Errorf("not-acceptable", text+".")
	e.Type = "cancel"
	contact := t.To + "@" + b.host.Domain()
	return b.host.SendMessage(ctx, stanza.New("message", contact, t.User, "error", t.ID).Add(e.Element()))
}

// backoff is the delay before the next try after attempts failed ones.
func (b *Bridge) backoff(attempts int) time.Duration {
	return bridges.RetryDelay(attempts, b.host.RetryMaxDelay())
}

func (b *Bridge) statusCallback() string {
	if b.opts.WebhookURL == "" {
		return ""
	}
	return b.opts.WebhookURL + statusPath
}
