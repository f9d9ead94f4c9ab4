package irc

import (
	irc "gopkg.in/irc.v4"
)

// seenMax bounds the memory of recent messages used to drop replays.
const seenMax = 2048

// batchState tracks the IRCv3 batches open on a connection and the
// messages recently shown, so that a batch replaying them (a bouncer's
// or server's chathistory playback) does not show them twice.
type batchState struct {
	open map[string]string   // reference → batch type
	seen map[string]struct{} // keys of messages shown
	ring []string            // the same keys, oldest first
}

// onBatch handles BATCH +ref type … and BATCH -ref.
func (cl *ircClient) onBatch(m *irc.Message) {
	ref := m.Param(0)
	if len(ref) < 2 {
		return
	}
	if cl.batch.open == nil {
		cl.batch.open = map[string]string{}
	}
	switch ref[0] {
	case '+':
		cl.batch.open[ref[1:]] = m.Param(1)
	case '-':
		delete(cl.batch.open, ref[1:])
	}
}

// messageKey identifies a PRIVMSG or NOTICE across replays: its msgid,
// else its server time, sender, target and text; "" when it has neither
// tag.
func messageKey(m *irc.Message) string {
	if id := m.Tags["msgid"]; id != "" {
		return "id " + id
	}
	if t := m.Tags["time"]; t != "" {
		return "t " + t + " " + m.Name + " " + m.Param(0) + " " + m.Param(1)
	}
	return ""
}

// replayed reports whether m, a PRIVMSG or NOTICE, was already shown;
// messages that can be recognised are remembered. Only messages inside
// a playback batch (chathistory, a bouncer's, or any unknown type) are
// checked: live ones are never dropped. The lines of netsplit and
// netjoin batches are plain QUITs and JOINs, handled one by one.
func (cl *ircClient) replayed(m *irc.Message) bool {
	key := messageKey(m)
	if key == "" {
		return false
	}
	if ref, inBatch := m.Tags["batch"]; inBatch && cl.batch.open[ref] != "netsplit" && cl.batch.open[ref] != "netjoin" {
		if _, ok := cl.batch.seen[key]; ok {
			return true
		}
	}
	if cl.batch.seen == nil {
		cl.batch.seen = map[string]struct{}{}
	}
	if _, ok := cl.batch.seen[key]; ok {
		return false
	}
	cl.batch.seen[key] = struct{}{}
	cl.batch.ring = append(cl.batch.ring, key)
	if len(cl.batch.ring) > seenMax {
		delete(cl.batch.seen, cl.batch.ring[0])
		cl.batch.ring = cl.batch.ring[1:]
	}
	return false
}
