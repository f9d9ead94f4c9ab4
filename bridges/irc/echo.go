package irc

import (
	"context"

	irc "gopkg.in/irc.v4"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
)

// pendingEcho is a groupchat message sent with labels, waiting for the
// server's echo of every line before it is reflected.
type pendingEcho struct {
	st      *xmlel.Element // the original message
	channel string         // folded channel name
	body    string
	labels  []string
	echoed  int
}

func (n *network) dropEcho(p *pendingEcho) {
	if p == nil {
		return
	}
	for _, l := range p.labels {
		delete(n.echoes, l)
	}
}

// labeledResponse handles a message answering one of our labels; it
// reports whether m was consumed.
func (n *network) labeledResponse(ctx context.Context, label string, m *irc.Message) bool {
	p := n.echoes[label]
	if p == nil {
		return false
	}
	delete(n.echoes, label)
	switch {
	case m.Command == "PRIVMSG" || m.Command == "NOTICE":
		p.echoed++
		if p.echoed < len(p.labels) {
			return true
		}
		if ch := n.chans[p.channel]; ch != nil {
			n.reflect(ctx, ch, p.st, p.body, nil)
		}
	case m.Command == "ACK" || m.Command == "BATCH":
		return true
	default:
		// An error numeric: the message was not delivered.
		n.dropEcho(p)
		text := decodeText(m.Trailing())
		bridges.Refuse(n.b.host, p.st, stanza.Errorf("recipient-unavailable", n.server+" did not deliver the message: "+text))
	}
	return true
}
