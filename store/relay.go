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
// A listener's connection may go silent without failing (a half-open TCP
// connection: a firewall's state dropped, the server's host gone): it
// would take itself for listening while what is passed on to it is lost,
// until TCP gives up, minutes later. So a listener passes a check on to
// itself the same way every relayCheckEvery, and takes its connection
// for dead when the check does not come back within relayCheckWait.
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
	"sync"
	"time"
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

// relayCheckEvery is how often a listener passes a check on to itself;
// relayCheckWait is how long it waits for the check to come back before
// it takes its connection for dead (Listen). Tests shorten them.
var relayCheckEvery, relayCheckWait = 30 * time.Second, 10 * time.Second

// relayCheckPrefix starts the payload of a listener's check: no relayed
// stanza's head has it (a stanza's is "<key> <i> <n> <domain> <from>\n").
const relayCheckPrefix = "check "

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
	if err := s.notifyPayloads(ctx, ch, relayPayloads(r)); err != nil {
		return fmt.Errorf("failed to pass a stanza to another instance: %w", err)
	}
	return nil
}

// notifyPayloads sends payloads on channel ch, in the group commit.
func (s *Store) notifyPayloads(ctx context.Context, ch string, payloads []string) error {
	return s.inGroup(ctx, func(g groupTx) error {
		return g.exec(`SELECT pg_notify(?, p) FROM unnest(CAST(? AS text[])) AS p`, ch, payloads)
	})
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
// ends or the connection fails, or goes silent: a check it passes on to
// itself every relayCheckEvery did not come back within relayCheckWait
// (what is relayed until the next Listen is lost). The connection is one
// of the store's own for as long.
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
		back := make(chan string, 1) // the checks come back
		stop := make(chan struct{})
		var silent error
		var checking sync.WaitGroup
		checking.Go(func() {
			silent = s.checkListener(ctx, ch, back, stop, func() { pc.PgConn().Conn().Close() })
		})
		var stopOnce sync.Once
		stopChecks := func() {
			stopOnce.Do(func() { close(stop) })
			checking.Wait()
		}
		defer stopChecks()
		parts := map[string]*pieces{} // the stanzas in pieces, by key
		for {
			n, err := pc.WaitForNotification(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				stopChecks()
				if silent != nil {
					return silent
				}
				return fmt.Errorf("lost the connection listening for relayed stanzas: %w", err)
			}
			if token, ok := strings.CutPrefix(n.Payload, relayCheckPrefix); ok && n.Channel == ch {
				select {
				case back <- token:
				default:
				}
				continue
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

// checkListener passes a check on to the listener of channel ch every
// relayCheckEvery until stop is closed, and waits relayCheckWait for it
// to come back (its token on back). When it does not, it cuts the
// listener's connection and returns why. A check that cannot be sent (the
// store does not answer) proves nothing: the next one is tried.
func (s *Store) checkListener(ctx context.Context, ch string, back <-chan string, stop <-chan struct{}, cut func()) error {
	t := time.NewTicker(relayCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
		var b [8]byte
		rand.Read(b[:])
		token := hex.EncodeToString(b[:])
		sctx, cancel := context.WithTimeout(ctx, relayCheckWait)
		err := s.notifyPayloads(sctx, ch, []string{relayCheckPrefix + token})
		cancel()
		if err != nil {
			continue
		}
		wait := time.NewTimer(relayCheckWait)
		for came := false; !came; {
			select {
			case <-stop:
				wait.Stop()
				return nil
			case got := <-back:
				came = got == token
			case <-wait.C:
				cut()
				return fmt.Errorf("the connection listening for relayed stanzas went silent: a check passed on to it did not come back within %s", relayCheckWait)
			}
		}
		wait.Stop()
	}
}

// pieces are the pieces of a relayed stanza received so far.
type pieces struct {
	of   []string
	have int
}
