package harness

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is a DNS server on loopback (UDP) for the gateway's lookups of SPF,
// DKIM and DMARC records: it answers TXT questions from the records it was
// given, NXDOMAIN for unknown names and no answer for other types.
type DNS struct {
	conn net.PacketConn
	mu   sync.Mutex
	txt  map[string][]string
	asks map[string]int // questions by name
}

// StartDNS starts a DNS server stopped at the end of the test.
func StartDNS(t testing.TB) *DNS {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{conn: conn, txt: map[string][]string{}, asks: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.serve()
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return d
}

// Addr is the server's host:port (PASSERELLE_DNS_RESOLVER).
func (d *DNS) Addr() string { return d.conn.LocalAddr().String() }

// SetTXT sets the TXT records of name.
func (d *DNS) SetTXT(name string, values ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txt[canonical(name)] = values
}

// Asked returns how many questions name got.
func (d *DNS) Asked(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asks[canonical(name)]
}

func canonical(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") + "." }

func (d *DNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if resp, err := d.answer(buf[:n]); err == nil {
			d.conn.WriteTo(resp, from)
		}
	}
}

// answer builds the response to one query.
func (d *DNS) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	name := canonical(q.Name.String())
	d.mu.Lock()
	d.asks[name]++
	values, known := d.txt[name]
	d.mu.Unlock()

	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, RCode: dnsmessage.RCodeSuccess}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 1232), rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if q.Type == dnsmessage.TypeTXT {
		for _, v := range values {
			// A TXT record is a list of strings of at most 255 bytes.
			var parts []string
			for len(v) > 255 {
				parts, v = append(parts, v[:255]), v[255:]
			}
			parts = append(parts, v)
			rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
			if err := b.TXTResource(rr, dnsmessage.TXTResource{TXT: parts}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}
