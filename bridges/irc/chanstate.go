package irc

// chanState is where a channel stands: its JOIN on the current
// connection, and whether the room was shown to the resources (a first
// join, or a rejoin after the connection was lost). Only the transitions
// below change it.
type chanState uint8

const (
	chanNew        chanState = iota // no JOIN sent yet
	chanJoinSent                    // JOIN sent, not answered yet
	chanListing                     // our JOIN came back; the NAMES reply is being read
	chanIn                          // end of NAMES: the room is complete and its resources are in
	chanLost                        // was shown; the connection was lost, no JOIN sent since
	chanRejoinSent                  // was shown; JOIN sent again
	chanRelisting                   // was shown; our JOIN came back, the NAMES reply is being read
)

// shown reports whether the room was shown to the resources: those
// joining now are answered at once.
func (s chanState) shown() bool { return s >= chanIn }

// joinSent reports whether a JOIN went out on the current connection.
func (s chanState) joinSent() bool { return s != chanNew && s != chanLost }

// joined reports whether our JOIN came back on the current connection.
func (s chanState) joined() bool { return s == chanListing || s == chanIn || s == chanRelisting }

// listing reports whether the NAMES reply is being read.
func (s chanState) listing() bool { return s == chanListing || s == chanRelisting }

// sentJoin: a JOIN went out.
func (ch *channel) sentJoin() {
	switch ch.state {
	case chanNew:
		ch.state = chanJoinSent
	case chanLost:
		ch.state = chanRejoinSent
	}
}

// selfJoined: our JOIN came back; the members are listed again.
func (ch *channel) selfJoined() {
	if ch.state.shown() {
		ch.state = chanRelisting
	} else {
		ch.state = chanListing
	}
}

// namesEnded: the NAMES reply is complete. It reports whether the room
// was being listed, and whether that was a rejoin (then the differences
// from ch.before are to be shown).
func (ch *channel) namesEnded() (listed, rejoined bool) {
	switch ch.state {
	case chanListing:
		ch.state = chanIn
		return true, false
	case chanRelisting:
		ch.state = chanIn
		return true, true
	}
	return false, false
}

// connectionLost: the connection ended; a room that was shown keeps its
// members as they were, to show the differences after the rejoin.
func (ch *channel) connectionLost() {
	switch {
	case ch.state == chanIn:
		before := ch.members.clone()
		ch.before = &before
		ch.state = chanLost
	case ch.state.shown():
		ch.state = chanLost
	default:
		ch.state = chanNew
	}
}
