package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"passerelle/bridges/sms/smstest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// TestSMSKilledMidStream: 500 inbound texts are posted by 8 senders at
// once and the gateway is killed (SIGKILL) once half of them were answered
// 200; after a restart, every text answered 200 reaches the user, who was
// online all along. Duplicates are allowed (at least once) and logged.
func TestSMSKilledMidStream(t *testing.T) {
	const total, senders = 500, 8
	srv := startServer(t, "prosody")
	e := startSMS(t, srv)
	pw := srv.AddUser(t, "carol@localhost")
	carol := harness.Dial(t, srv.C2SAddr(), "carol@localhost", pw, "phone")
	wantResult(t, register(carol, t, smsDomain, "number", aliceNumber), "carol claims a number")
	acceptGateway(t, carol, smsDomain)
	from := "+15557654321@" + smsDomain

	var acked [total]atomic.Bool
	var answered atomic.Int32
	half := make(chan struct{})
	var once sync.Once
	next := make(chan int)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for k := range next {
				code, _, err := e.p.Inbound(e.hook, smsPublicURL,
					smstest.InboundParams(fmt.Sprintf("SMfault%d", k), "+15557654321", aliceNumber, fmt.Sprintf("fault %d", k)))
				if err == nil && code == http.StatusOK {
					acked[k].Store(true)
					if answered.Add(1) == total/2 {
						once.Do(func() { close(half) })
					}
				}
			}
		})
	}
	killed := false
	for k := range total {
		select {
		case <-half:
			if !killed {
				e.gw.Signal(syscall.SIGKILL)
				killed = true
			}
		default:
		}
		next <- k
	}
	close(next)
	wg.Wait()
	if !killed {
		t.Fatalf("all %d texts were answered before the kill", answered.Load())
	}
	e.gw.Wait(t, wait)
	n := int(answered.Load())
	if n >= total {
		t.Fatalf("%d of %d texts answered 200 with the gateway killed half-way", n, total)
	}
	e.restart(t)

	for k := range total {
		if acked[k].Load() {
			body := fmt.Sprintf("fault %d", k)
			// The whole body: "fault 11" must not take "fault 111", which
			// may come first (the texts are committed in no fixed order).
			carol.Expect(t, 60*time.Second, fmt.Sprintf("text %d, answered 200", k), func(e *xmlel.Element) bool {
				return harness.MessageFrom(from, body)(e) && e.ChildText("", "body") == body
			})
		}
	}
	seen := map[string]int{}
	for _, el := range carol.Received() {
		if b := el.ChildText("", "body"); harness.IsMessage(el) && strings.HasPrefix(b, "fault ") {
			seen[b]++
		}
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("%d of %d texts answered 200 before and after the kill; all arrived; %d texts arrived without a 200; %d duplicates", n, total, len(seen)-n, dups)
}
