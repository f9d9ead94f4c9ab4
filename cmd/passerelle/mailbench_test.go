package main

// BenchmarkMailSMSGateway measures the email and SMS paths per CPU second
// of the gateway: a real Prosody, the gateway with its email and SMS
// bridges, a local SMTP sink as its relay (startSink), the fake SMS
// provider (smstest), and benchMailUsers users of a second XEP-0114
// component (loadComponent, as in BenchmarkIRCGateway), each registered
// with both bridges. Mails come in through a real SMTP client, one
// connection per mail, and texts through signed webhooks, benchSenders at
// once; the users' messages go out through the load component.
//
//	go test -run '^$' -bench BenchmarkMailSMSGateway -benchtime=1x -timeout 30m ./cmd/passerelle/
//
// PASSERELLE_BENCH_BASE=<binary> runs that build too ("base", first), and
// PASSERELLE_TEST_DB=postgres runs the gateway on PostgreSQL, as for
// BenchmarkIRCGateway; PASSERELLE_BENCH_PERF=<dir> records each phase with
// perf(1) into <dir>/<gateway>-mail-<phase>.data. Phases, each of benchMails messages spread over the
// users, ending when the last one has arrived:
//
//	smtp   SMTP→stanza: mails to u<i>@mail.localhost, until each user got its messages
//	relay  stanza→relay: chat messages to bob%example.com@mail.localhost, until the sink got each mail
//	hook   webhook→stanza: inbound texts to the users' numbers, until each user got its messages
//	sms    stanza→provider: chat messages to +15557654321@sms.localhost, until the provider got each text
//
// Metrics, per phase: <phase>-msgs/s (messages / the phase's duration),
// <phase>-msgs/cpu-s (messages / the gateway's CPU seconds in the phase:
// /proc/<pid>/stat), <phase>-µs/msg (the inverse), <phase>-p50-ms and
// <phase>-p99-ms (from the send to the arrival), and on PostgreSQL
// <phase>-db-µs/msg (the server's CPU, dbCPUSeconds).

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/bridges/sms/smstest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

const (
	benchMailUsers = 10
	benchMails     = 2000
	benchSenders   = 8
	benchContact   = "+15557654321"
)

func BenchmarkMailSMSGateway(b *testing.B) {
	gateways := []string{"passerelle"}
	if os.Getenv("PASSERELLE_BENCH_BASE") != "" {
		gateways = []string{"base", "passerelle"}
	}
	for _, gw := range gateways {
		b.Run(gw, func(b *testing.B) { benchMailSMS(b, gw) })
	}
}

func benchMailSMS(b *testing.B, gateway string) {
	b.StopTimer()
	srv := harness.StartProsody(b, harness.ServerOptions{Domain: "localhost", Components: []string{mailDomain, smsDomain, loadDomain}, LogLevel: "warn"})
	sink := startSink(b)
	p := smstest.Start(b, smsSID, smsToken)
	numbers := make([]string, benchMailUsers)
	for i := range numbers {
		numbers[i] = fmt.Sprintf("+1555000%04d", i)
	}
	env := baseEnv(b, srv)
	delete(env, "PASSERELLE_IRC_DOMAIN")
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	hook := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	for k, v := range map[string]string{
		"PASSERELLE_ALLOW":                 "localhost," + loadDomain,
		"PASSERELLE_LOG_LEVEL":             "info",
		"PASSERELLE_SMTP_LISTEN":           smtpAddr,
		"PASSERELLE_SMTP_RELAY":            "smtp://" + sink.addr,
		"PASSERELLE_MAILBOX_ALLOW_PRIVATE": "true", // the sink listens on loopback
		"PASSERELLE_SMS_NUMBERS":           strings.Join(numbers, ","),
		"PASSERELLE_SMS_API_URL":           p.URL(),
		"PASSERELLE_SMS_ACCOUNT_SID":       smsSID,
		"PASSERELLE_SMS_AUTH_TOKEN":        smsToken,
		"PASSERELLE_SMS_WEBHOOK_LISTEN":    hook,
		"PASSERELLE_SMS_WEBHOOK_URL":       smsPublicURL,
	} {
		env[k] = v
	}
	bin := os.Getenv("PASSERELLE_BENCH_BASE")
	if gateway == "passerelle" {
		bin = harness.BuildBinary(b)
	}
	gw := harness.StartGateway(b, bin, env)
	for _, d := range []string{mailDomain, smsDomain} {
		gw.WaitOutput(b, wait, `msg="connected to the XMPP server" component=`+d)
	}
	gw.WaitOutput(b, wait, `msg="SMS webhooks listening"`)
	gw.WaitOutput(b, wait, `msg="listening for SMTP"`)
	pid := gw.Pid()

	load := dialLoad(b, srv.ComponentAddr(), loadDomain, srv.Secret())
	user := func(i int) string { return fmt.Sprintf("u%d@%s/r", i, loadDomain) }
	for i := range benchMailUsers {
		for _, reg := range []struct{ domain, field, value string }{
			{mailDomain, "address", fmt.Sprintf("u%d", i)},
			{smsDomain, "number", numbers[i]},
		} {
			r, err := load.iq(user(i), "set", reg.domain, "<query xmlns='jabber:iq:register'>"+
				submitForm("jabber:iq:register", reg.field, reg.value)+"</query>")
			if err != nil || r.Attr("type") != "result" {
				b.Fatalf("u%d registering with %s: %v %v", i, reg.domain, r, err)
			}
		}
	}

	// The users' messages from the gateway: the last line of the body
	// (an inbound mail's starts with its sender's check and its subject).
	var users sync.Mutex
	var usersTally *tally
	load.handle(func(e *xmlel.Element, at time.Time) {
		if e.Local != "message" || e.Attr("type") == "error" {
			return
		}
		body := strings.TrimSpace(e.ChildText("", "body"))
		users.Lock()
		t := usersTally
		users.Unlock()
		if t != nil {
			t.seen(body[strings.LastIndexByte(body, '\n')+1:], at)
		}
	})
	setUsers := func(t *tally) {
		users.Lock()
		usersTally = t
		users.Unlock()
	}
	// The relay's mails and the provider's texts.
	stop := make(chan struct{})
	defer close(stop)
	var others sync.Mutex
	var othersTally *tally
	seenOther := func(text string) {
		others.Lock()
		t := othersTally
		others.Unlock()
		if t != nil {
			t.seen(text, time.Now())
		}
	}
	setOthers := func(t *tally) {
		others.Lock()
		othersTally = t
		others.Unlock()
	}
	relayText := regexp.MustCompile(`relay\d+ \d+`)
	go func() {
		seen := 0
		for {
			select {
			case <-sink.got:
			case <-stop:
				return
			}
			sink.mu.Lock()
			mails := sink.mails[seen:]
			seen = len(sink.mails)
			sink.mu.Unlock()
			for _, m := range mails {
				seenOther(string(relayText.Find(m.raw)))
			}
		}
	}()
	go func() {
		seen := 0
		for {
			reqs, changed := p.Watch()
			for _, r := range reqs[seen:] {
				seenOther(r.Body())
			}
			seen = len(reqs)
			select {
			case <-changed:
			case <-stop:
				return
			}
		}
	}()

	// phase sends benchMails messages, benchSenders at once, and waits
	// for t.
	phase := func(name string, t *tally, send func(k int)) {
		stopPerf := benchPerf(b, pid, fmt.Sprintf("%s-mail-%s.data", gateway, name))
		cpu0, db0, t0 := procCPUSeconds(b, pid), dbCPUSeconds(b), time.Now()
		next := make(chan int)
		var wg sync.WaitGroup
		for range benchSenders {
			wg.Go(func() {
				for k := range next {
					t.markSent(k)
					send(k)
				}
			})
		}
		for k := range benchMails {
			next <- k
		}
		close(next)
		wg.Wait()
		t.wait(b, name)
		cpu, db := procCPUSeconds(b, pid)-cpu0, dbCPUSeconds(b)-db0
		stopPerf()
		t.mu.Lock()
		secs := t.last.Sub(t0).Seconds()
		t.mu.Unlock()
		b.ReportMetric(benchMails/secs, name+"-msgs/s")
		b.ReportMetric(benchMails/cpu, name+"-msgs/cpu-s")
		b.ReportMetric(cpu*1e6/benchMails, name+"-µs/msg")
		b.ReportMetric(t.percentile(50), name+"-p50-ms")
		b.ReportMetric(t.percentile(99), name+"-p99-ms")
		if testCluster != nil {
			b.ReportMetric(db*1e6/benchMails, name+"-db-µs/msg")
		}
	}

	b.StartTimer()
	for it := range b.N {
		t := newTally(fmt.Sprintf("smtp%d", it), benchMails, benchMails)
		setUsers(t)
		phase("smtp", t, func(k int) {
			to := fmt.Sprintf("u%d@%s", k%benchMailUsers, mailDomain)
			raw := fmt.Sprintf("From: bob@example.com\nTo: %s\nSubject: bench\nMessage-ID: <smtp-%d-%d@example.com>\n\nsmtp%d %d\n", to, it, k, it, k)
			if err := sendMail(smtpAddr, "bob@example.com", []string{to}, raw); err != nil {
				b.Errorf("mail %d: %v", k, err)
			}
		})

		t = newTally(fmt.Sprintf("relay%d", it), benchMails, benchMails)
		setOthers(t)
		phase("relay", t, func(k int) {
			load.send(b, "<message type='chat' from='%s' to='bob%%example.com@%s' id='relay-%d-%d'><body>relay%d %d</body></message>",
				user(k%benchMailUsers), mailDomain, it, k, it, k)
		})

		t = newTally(fmt.Sprintf("hook%d", it), benchMails, benchMails)
		setUsers(t)
		phase("hook", t, func(k int) {
			code, ans, err := p.Inbound(hook, smsPublicURL, smstest.InboundParams(fmt.Sprintf("SMbench%d-%d", it, k),
				benchContact, numbers[k%benchMailUsers], fmt.Sprintf("hook%d %d", it, k)))
			if err != nil || code != http.StatusOK {
				b.Errorf("text %d: %d %q %v", k, code, ans, err)
			}
		})

		t = newTally(fmt.Sprintf("sms%d", it), benchMails, benchMails)
		setOthers(t)
		phase("sms", t, func(k int) {
			load.send(b, "<message type='chat' from='%s' to='%s@%s' id='sms-%d-%d'><body>sms%d %d</body></message>",
				user(k%benchMailUsers), benchContact, smsDomain, it, k, it, k)
		})
	}
	b.StopTimer()
}
