package component

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// BenchmarkOutboxEcho measures how long a stanza queued ahead (a room's
// echo of its sender's message, store.First) takes to reach the server
// while a fan-out keeps the pump busy and the store takes a millisecond
// to remove what the server confirmed (a group commit carrying other
// users' writes). An op is one echo, queued once the previous one
// arrived; p50 and p99 are its latency.
func BenchmarkOutboxEcho(b *testing.B) {
	srv := newFakeServer(b, "s")
	c, _, _ := startComponent(b, srv, &fakeBridge{}, "s", func(c *Component) {
		c.sentThrough = func(ctx context.Context, domain string, last int64) error {
			time.Sleep(time.Millisecond)
			return c.store.StanzasSentThrough(ctx, domain, last)
		}
	})
	fc := srv.accept(b)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() { // the fan-out: ten copies a millisecond
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			copies := make([]*xmlel.Element, 10)
			for j := range copies {
				copies[j] = stanza.Message("", fmt.Sprintf("u%d@example.org", j), "groupchat", fmt.Sprintf("f%d-%d", i, j), "fan-out")
			}
			if err := c.SendMessage(ctx, copies...); err != nil && ctx.Err() == nil {
				b.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	took := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("echo%d", i)
		start := time.Now()
		if err := c.SendMessage(store.First(ctx), stanza.Message("", "me@example.org", "groupchat", id, "echo")); err != nil {
			b.Fatal(err)
		}
		fc.expect(b, id, hasID(id))
		took[i] = time.Since(start)
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
}
