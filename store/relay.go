package store

// Stanzas passed between the instances sharing a PostgreSQL database.
//
// The XMPP server may route a stanza to an instance other than the one it
// is meant for: ejabberd balances a component domain's connections by the
// bare JID of the sender, so the answer to an instance's IQ (the user's
// server answering a roster request, a client answering a disco query)
// reaches whichever instance holds the slot of the answering JID. That
// instance passes it on with Relay; the instance it is for receives it
// with Listen; what every other instance needs (the server's privilege
// advertisement, which reaches one of them) goes to all with RelayAll.
// The stanzas go through PostgreSQL's LISTEN/NOTIFY, on a channel per
// listener and one all listen on: nothing is written to a table, a notification
// for a listener that is gone (the instance died, or its connection is
// being opened again) is dropped by the server, and what the instances
// pass on this way (answers to requests waiting a few seconds) is worth
// nothing once its listener is gone. A stanza longer than a notification
// may be goes in several, in one transaction: the server delivers a
// transaction's notifications together, in order.
//
// SQLite serves one process: there is nobody to pass anything to
// (ErrNotShared).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// ErrNotShared refuses Relay and Listen on a database no other instance
// shares (SQLite).
var ErrNotShared = errors.New("the database is not shared with other instances")

// Relayed is a stanza passed to another instance, for its component of
// Domain, by the instance listening as From.
type Relayed struct {
	Domain, From string
	Stanza       []byte
}

const (
	// relayChannelPrefix starts the names of the listeners' channels.
	relayChannelPrefix = "passerelle_relay_"
	// relayEveryone is the channel every listener listens on too
	// (RelayAll).
	relayEveryone = "passerelle_relay"
)

// relayPiece is the most bytes of a stanza one notification carries
// (PostgreSQL's payload is 8000 bytes at most, header included).
var relayPiece = 7000

// relayChannel returns the channel of the listener named to. A name is
// short and plain (letters, digits): a channel name is 63 bytes at most.
func relayChannel(to string) (string, error) {
	if to == "" || len(to) > 32 || strings.IndexFunc(to, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) >= 0 {
		return "", fmt.Errorf("bad listener name %q", to)
	}
	return relayChannelPrefix + to, nil
}

// Relay passes r to the instance listening as to (Listen), in the group
// commit of the store's writes: the notifications go out when the group
// commits. It does not know whether anyone listens.
func (s *Store) Relay(ctx context.Context, to string, r Relayed) error {
	if !s.pg {
		return ErrNotShared
	}
	ch, err := relayChannel(to)
	if err != nil {
		return err
	}
	return s.notify(ctx, ch, r)
}

// RelayAll passes r to every instance listening, but the one listening as
// r.From.
func (s *Store) RelayAll(ctx context.Context, r Relayed) error {
	if !s.pg {
		return ErrNotShared
	}
	return s.notify(ctx, relayEveryone, r)
}

// notify sends r on channel ch.
func (s *Store) notify(ctx context.Context, ch string, r Relayed) error {
	if r.Domain == "" || strings.ContainsAny(r.Domain, " \n") || strings.ContainsAny(r.From, " \n") || !utf8.Valid(r.Stanza) {
		return fmt.Errorf("cannot relay a stanza for domain %q from %q (or not in UTF-8)", r.Domain, r.From)
	}
	payloads := relayPayloads(r)
	err := s.inGroup(ctx, func(g groupTx) error {
		return g.exec(`SELECT pg_notify(?, p) FROM unnest(CAST(? AS text[])) AS p`, ch, payloads)
	})
	if err != nil {
		return fmt.Errorf("failed to pass a stanza to another instance: %w", err)
	}
	return nil
}

// relayPayloads cuts r into notifications: "<key> <i> <n> <domain>
// <from>\n" then the i-th of n pieces of the stanza, cut between
// characters.
func relayPayloads(r Relayed) []string {
	var b [4]byte
	rand.Read(b[:])
	key := hex.EncodeToString(b[:])
	var pieces []string
	rest := r.Stanza
	for len(rest) > 0 || len(pieces) == 0 {
		n := min(len(rest), relayPiece)
		for n < len(rest) && n > 0 && !utf8.RuneStart(rest[n]) {
			n--
		}
		pieces = append(pieces, string(rest[:n]))
		rest = rest[n:]
	}
	out := make([]string, len(pieces))
	for i, p := range pieces {
		out[i] = key + " " + strconv.Itoa(i) + " " + strconv.Itoa(len(pieces)) + " " + r.Domain + " " + r.From + "\n" + p
	}
	return out
}

// Listen listens as name (a short name of letters and digits, unique
// among the instances: Relay's to) for the stanzas other instances pass
// on to it or to all (RelayAll), and calls got with each, in the order they were passed, on the
// calling goroutine. It calls listening once the server registered the
// listener: what is relayed from then on reaches got. It returns when ctx
// ends or the connection fails (what is relayed until the next Listen is
// lost). The connection is one of the store's own for as long.
func (s *Store) Listen(ctx context.Context, name string, listening func(), got func(Relayed)) error {
	if !s.pg {
		return ErrNotShared
	}
	ch, err := relayChannel(name)
	if err != nil {
		return err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("failed to open a connection to listen on: %w", err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		pc := dc.(pgConn).Conn.Conn()
		// The connection is not given back to the pool: its LISTEN
		// goes with it.
		defer pc.Close(context.Background())
		if _, err := pc.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()+"; LISTEN "+pgx.Identifier{relayEveryone}.Sanitize()); err != nil {
			return fmt.Errorf("failed to listen for relayed stanzas: %w", err)
		}
		listening()
		parts := map[string]*pieces{} // the stanzas in pieces, by key
		for {
			n, err := pc.WaitForNotification(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("lost the connection listening for relayed stanzas: %w", err)
			}
			head, piece, ok := strings.Cut(n.Payload, "\n")
			f := strings.SplitN(head, " ", 5)
			if !ok || len(f) != 5 || (n.Channel == relayEveryone && f[4] == name) {
				continue // not a relay's, or this listener's own to all
			}
			i, err1 := strconv.Atoi(f[1])
			total, err2 := strconv.Atoi(f[2])
			if err1 != nil || err2 != nil || total < 1 || i < 0 || i >= total {
				continue
			}
			if total == 1 {
				got(Relayed{Domain: f[3], From: f[4], Stanza: []byte(piece)})
				continue
			}
			// A transaction's notifications come together: the
			// pieces of a stanza are all there before any other's.
			p := parts[f[0]]
			if p == nil || len(p.of) != total {
				p = &pieces{of: make([]string, total)}
				parts = map[string]*pieces{f[0]: p}
			}
			if p.of[i] == "" {
				p.of[i] = piece
				p.have++
			}
			if p.have < total {
				continue
			}
			delete(parts, f[0])
			got(Relayed{Domain: f[3], From: f[4], Stanza: []byte(strings.Join(p.of, ""))})
		}
	})
}

// pieces are the pieces of a relayed stanza received so far.
type pieces struct {
	of   []string
	have int
}
