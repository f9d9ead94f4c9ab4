package store

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the round trips on a connection to PostgreSQL: a
// write that follows a read (or comes first) starts one.
type countingConn struct {
	net.Conn
	trips *atomic.Int64
	wrote atomic.Bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	if !c.wrote.Swap(true) {
		c.trips.Add(1)
	}
	return c.Conn.Write(p)
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.wrote.Store(false)
	return c.Conn.Read(p)
}

// openCounting opens a PostgreSQL store on one connection whose round
// trips it counts.
func openCounting(t *testing.T) (*Store, *atomic.Int64) {
	t.Helper()
	if cluster == nil {
		t.Skip("PostgreSQL only: SQLite has no round trips")
	}
	trips := new(atomic.Int64)
	pgDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, trips: trips}, nil
	}
	defer func() { pgDial = nil }()
	s := openTest(t)
	s.db.SetMaxOpenConns(1)
	return s, trips
}

// A commit group on PostgreSQL costs one round trip, however many writes
// and stanzas it holds: deliveries with and without a key, their links,
// archive lines and an outbox removal. A group that fails is retried one
// write at a time, and its writes' results are those of their retries.
func TestGroupOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, trips := openCounting(t)
	refuseStanza(t, s, "<bad/>")

	// The group's writes, i marking this group's rows.
	group := func(i int, bad bool) (batch []*groupWrite, delivered []bool, ids []int64) {
		add := func(write func(groupTx) error) {
			batch = append(batch, &groupWrite{ctx: ctx, write: write})
		}
		delivered = make([]bool, 3)
		ids = make([]int64, 20)
		for u := range 20 {
			m := IRCMessage{User: fmt.Sprintf("u%d@x", u), Server: "irc.x", Channel: "#c", Nick: "n", Body: fmt.Sprint(i), Stamp: time.Now()}
			add(func(g groupTx) error {
				return g.queryRow([]any{&ids[u]}, `INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
					m.User, m.Server, m.Channel, m.Nick, m.Body, m.Stamp.UnixMilli())
			})
			add(deliverWrite("irc.x", Delivery{Stanzas: []string{fmt.Sprintf("<m g='%d' u='%d'/>", i, u)}}, new(bool)))
		}
		for k := range 3 {
			key := fmt.Sprintf("SM%d-%d", i, k%2) // the third has the first's key
			add(deliverWrite("sms.x", Delivery{Key: key,
				Links:   []MessageID{{Domain: "sms.x", JID: "u@x", XMPPID: key, ForeignID: key}},
				Stanzas: []string{"<a/>", "<b/>"}}, &delivered[k]))
		}
		add(deliverWrite("mail.x", Delivery{Stanzas: []string{"<c/>", "<d/>", "<e/>"}}, new(bool)))
		if bad {
			add(deliverWrite("mail.x", Delivery{Stanzas: []string{"<bad/>"}}, new(bool)))
		}
		add(func(g groupTx) error {
			return g.exec(`DELETE FROM outbox WHERE domain = ? AND id <= ?`, "irc.x", 0)
		})
		return batch, delivered, ids
	}
	count := func(domain string) int {
		n, err := s.CountStanzas(ctx, domain)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// The first group prepares the statements.
	batch, _, _ := group(0, false)
	s.commitGroup(batch)
	for i := 1; i <= 3; i++ {
		batch, delivered, ids := group(i, false)
		trips.Store(0)
		s.commitGroup(batch)
		if n := trips.Load(); n != 1 {
			t.Errorf("group %d of %d writes: %d round trips, want 1", i, len(batch), n)
		}
		for _, r := range batch {
			if r.err != nil {
				t.Fatalf("group %d: %v", i, r.err)
			}
		}
		if delivered[0] != true || delivered[1] != true || delivered[2] != false {
			t.Errorf("group %d: the keys' deliveries reported %v, want the third refused", i, delivered)
		}
		for u := 1; u < len(ids); u++ {
			if ids[u] <= ids[u-1] {
				t.Fatalf("group %d: archive ids %v, want increasing", i, ids)
			}
		}
	}
	if got, want := count("irc.x"), 4*20; got != want {
		t.Errorf("irc.x outbox holds %d stanzas, want %d", got, want)
	}
	if got, want := count("sms.x"), 4*2*2; got != want {
		t.Errorf("sms.x outbox holds %d stanzas, want %d", got, want)
	}

	// A group with a write that fails: that one fails alone.
	batch, delivered, ids := group(4, true)
	trips.Store(0)
	s.commitGroup(batch)
	t.Logf("a failed group of %d writes and their retries: %d round trips", len(batch), trips.Load())
	failed := 0
	for _, r := range batch {
		if r.err != nil {
			failed++
		}
	}
	if failed != 1 || batch[len(batch)-2].err == nil {
		t.Errorf("%d writes failed, want the bad one only", failed)
	}
	if delivered[0] != true || delivered[1] != true || delivered[2] != false {
		t.Errorf("after the retries, the keys' deliveries reported %v, want the third refused", delivered)
	}
	if ids[0] == 0 || ids[len(ids)-1] <= ids[0] {
		t.Errorf("after the retries, archive ids %v", ids)
	}
	if got, want := count("irc.x"), 5*20; got != want {
		t.Errorf("irc.x outbox holds %d stanzas, want %d", got, want)
	}
	if got, want := count("mail.x"), 5*3; got != want {
		t.Errorf("mail.x outbox holds %d stanzas, want %d", got, want)
	}
}
