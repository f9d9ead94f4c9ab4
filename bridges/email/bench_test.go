package email

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// BenchmarkInbound measures mails per second from SMTP submission to the
// stanza committed to the outbox (what the component then writes to the
// XMPP server), over one reused SMTP connection.
func BenchmarkInbound(b *testing.B) {
	br, h := startBridge(b, Options{Listen: "127.0.0.1:0"}, map[string]string{"alice@example.org": "alice"})
	c, err := smtp.Dial(br.smtpAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		raw := fmt.Sprintf("From: Bob <bob@example.com>\r\nTo: alice@%s\r\nSubject: Bench %d\r\nMessage-ID: <%d@bench>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Alice, this is mail number %d.\r\n", testDomain, i, i, i)
		if err := c.SendMail("bob@example.com", []string{"alice@" + testDomain}, stringsReader(raw)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if n, _ := h.St.CountStanzas(context.Background(), testDomain); n != b.N {
		b.Fatalf("%d stanzas for %d mails", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mails/s")
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// BenchmarkMailboxWatcher measures the memory of one mailbox watcher: b.N
// users, each with an IMAP connection in IDLE. The in-memory IMAP server
// runs in the same process, so its sessions are counted too: the figure is
// an upper bound.
func BenchmarkMailboxWatcher(b *testing.B) {
	m := startMemIMAPB(b)
	br, _ := startBridge(b, Options{}, nil)
	cfg := mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		br.startWatcher(fmt.Sprintf("u%d@example.org", i), cfg)
	}
	for i := 0; i < b.N; i++ {
		user := fmt.Sprintf("u%d@example.org", i)
		for {
			if _, ok, _ := br.loadPos(context.Background(), user); ok {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	b.StopTimer()
	time.Sleep(100 * time.Millisecond) // let the watchers enter IDLE
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/float64(b.N), "bytes/watcher")
	for i := 0; i < b.N; i++ {
		br.stopWatcher(fmt.Sprintf("u%d@example.org", i))
	}
}

// BenchmarkHTMLToTextManyTags is a hostile HTML part: many block tags in
// 256 kB (the largest part read). The work must stay linear.
func BenchmarkHTMLToTextManyTags(b *testing.B) {
	s := strings.Repeat("x<br>", 50000)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		HTMLToText(s)
	}
}
