package component

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
)

// Metrics holds the counters of every component, for /metrics.
type Metrics struct {
	mu  sync.Mutex
	per map[string]*DomainMetrics
}

// DomainMetrics are one component's counters.
type DomainMetrics struct {
	Connected     atomic.Int64
	StanzasIn     atomic.Int64
	StanzasOut    atomic.Int64
	Dropped       atomic.Int64 // stanzas that could not be queued (each answered or logged)
	Refused       atomic.Int64 // stanzas from users outside PASSERELLE_ALLOW
	OverLimit     atomic.Int64 // stanzas skipped over a limit of the stream reader (each answered or logged)
	Registrations atomic.Int64
	// OutboxStoreErrors counts the times the store would not read the
	// outbox or remove sent stanzas from it.
	OutboxStoreErrors atomic.Int64
	// OutboxConfirmed counts the queued stanzas the server confirmed
	// (each then removed from the outbox).
	OutboxConfirmed atomic.Int64
	Insecure        atomic.Int64 // deliveries held back or refused: the server could not be reached safely
	// Relayed counts the stanzas passed on to other instances: answers
	// to their requests, privilege advertisements (relay.go).
	Relayed atomic.Int64
	// NotRelayed counts the answers to another instance's request id
	// dropped because their sender is none the gateway asks (relay.go).
	NotRelayed atomic.Int64
}

// NewMetrics returns an empty registry.
func NewMetrics() *Metrics { return &Metrics{per: map[string]*DomainMetrics{}} }

// For returns the counters of domain, creating them.
func (m *Metrics) For(domain string) *DomainMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.per[domain]
	if d == nil {
		d = &DomainMetrics{}
		m.per[domain] = d
	}
	return d
}

// WritePrometheus writes the counters in the Prometheus text format.
func (m *Metrics) WritePrometheus(w io.Writer) {
	m.mu.Lock()
	domains := make([]string, 0, len(m.per))
	for d := range m.per {
		domains = append(domains, d)
	}
	m.mu.Unlock()
	sort.Strings(domains)
	series := []struct {
		name, kind, help string
		get              func(*DomainMetrics) int64
	}{
		{"passerelle_connected", "gauge", "1 while the component stream is up", func(d *DomainMetrics) int64 { return d.Connected.Load() }},
		{"passerelle_stanzas_in_total", "counter", "stanzas received from the XMPP server", func(d *DomainMetrics) int64 { return d.StanzasIn.Load() }},
		{"passerelle_stanzas_out_total", "counter", "stanzas written to the XMPP server", func(d *DomainMetrics) int64 { return d.StanzasOut.Load() }},
		{"passerelle_dropped_total", "counter", "stanzas that could not be queued", func(d *DomainMetrics) int64 { return d.Dropped.Load() }},
		{"passerelle_refused_total", "counter", "stanzas refused from users outside PASSERELLE_ALLOW", func(d *DomainMetrics) int64 { return d.Refused.Load() }},
		{"passerelle_over_limit_total", "counter", "stanzas skipped for going over a limit (nesting, attributes, size)", func(d *DomainMetrics) int64 { return d.OverLimit.Load() }},
		{"passerelle_registrations_total", "counter", "new registrations", func(d *DomainMetrics) int64 { return d.Registrations.Load() }},
		{"passerelle_outbox_confirmed_total", "counter", "queued stanzas the XMPP server confirmed it processed", func(d *DomainMetrics) int64 { return d.OutboxConfirmed.Load() }},
		{"passerelle_outbox_store_errors_total", "counter", "failed reads and removals of the stanza outbox", func(d *DomainMetrics) int64 { return d.OutboxStoreErrors.Load() }},
		{"passerelle_relayed_total", "counter", "stanzas meant for other instances that reached this one and were passed on to them through the database (answers to their requests, the server's privilege advertisements)", func(d *DomainMetrics) int64 { return d.Relayed.Load() }},
		{"passerelle_not_relayed_total", "counter", "answers to another instance's request dropped instead of passed on: their sender is none the gateway asks (not the XMPP server, an allowed user or the gateway)", func(d *DomainMetrics) int64 { return d.NotRelayed.Load() }},
		{"passerelle_insecure_deliveries_total", "counter", "deliveries held back or refused because the server could not be reached safely (no TLS for a password, untrusted certificate)", func(d *DomainMetrics) int64 { return d.Insecure.Load() }},
	}
	for _, s := range series {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", s.name, s.help, s.name, s.kind)
		for _, d := range domains {
			fmt.Fprintf(w, "%s{domain=%q} %d\n", s.name, d, s.get(m.For(d)))
		}
	}
}
