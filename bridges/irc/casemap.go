package irc

// Case mappings announced by CASEMAPPING in ISUPPORT (005). Nick and
// channel comparisons use the server's; rfc1459 is the default.
//
// Stored keys (channel settings, the archive) are folded with rfc1459
// whatever the server says: they are read before the connection exists,
// and rfc1459 folds every pair the other mappings fold.
const (
	caseASCII         = "ascii"
	caseRFC1459       = "rfc1459"
	caseRFC1459Strict = "rfc1459-strict"
)

// fold is the rfc1459 case folding, used for stored keys.
func fold(s string) string { return foldWith(caseRFC1459, s) }

// fold is the server's case folding.
func (n *network) fold(s string) string { return foldWith(n.casemap, s) }

// foldWith folds s with the case mapping cm; an unknown mapping folds
// like rfc1459.
func foldWith(cm string, s string) string {
	i := 0
	for ; i < len(s); i++ {
		if folds(cm, s[i]) != s[i] {
			break
		}
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		b[i] = folds(cm, b[i])
	}
	return string(b)
}

func folds(cm string, c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case cm == caseASCII:
		return c
	case c == '[' || c == ']' || c == '\\':
		return c + '{' - '['
	case c == '~' && cm != caseRFC1459Strict:
		return '^'
	}
	return c
}

// setCasemap switches to the mapping cm, re-keying the channels and
// their members (joins queued before 005 were keyed with the default).
func (n *network) setCasemap(cm string) {
	switch cm {
	case caseASCII, caseRFC1459, caseRFC1459Strict:
	default:
		n.b.host.Log().Info("unknown irc case mapping, using rfc1459", "server", n.server, "casemapping", cm)
		cm = caseRFC1459
	}
	if cm == n.casemap {
		return
	}
	n.casemap = cm
	chans := make(map[string]*channel, len(n.chans))
	for _, ch := range n.chans {
		chans[n.fold(ch.name)] = ch
		ch.members = n.rekey(ch.members)
		if ch.before != nil {
			ch.before = n.rekey(ch.before)
		}
	}
	for _, p := range n.echoes {
		if ch := n.chans[p.channel]; ch != nil {
			p.channel = n.fold(ch.name)
		}
	}
	n.chans = chans
}

func (n *network) rekey(ms map[string]*member) map[string]*member {
	out := make(map[string]*member, len(ms))
	for _, m := range ms {
		out[n.fold(m.nick)] = m
	}
	return out
}
