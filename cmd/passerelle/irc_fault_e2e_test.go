package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// TestIRCProsodyRestartDuringFanOut: three users in a channel, users of a
// second component on the same Prosody; a raw IRC client sends 500 lines,
// and Prosody is restarted once it sent half of them (the other half is
// sent while it is down). Every line the gateway took from IRC reaches
// every user at least once; duplicates are logged.
func TestIRCProsodyRestartDuringFanOut(t *testing.T) {
	const users, lines = 3, 500
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{ircDomain, loadDomain}})
	ngircd := harness.StartNgircd(t)
	_, ircPort, _ := net.SplitHostPort(ngircd.Addr)
	env := baseEnv(t, srv)
	delete(env, "PASSERELLE_EMAIL_DOMAIN")
	delete(env, "PASSERELLE_SMS_DOMAIN")
	delete(env, "PASSERELLE_SMS_NUMBERS")
	env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
	env["PASSERELLE_ALLOW"] = "localhost," + loadDomain
	env["PASSERELLE_LOG_LEVEL"] = "info"
	env["PASSERELLE_RETRY_MAX_DELAY"] = "1s"
	gw := harness.StartGateway(t, harness.BuildBinary(t), env)
	gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+ircDomain)

	room := "#fault%" + benchIRCServer + "@" + ircDomain
	user := func(i int) string { return fmt.Sprintf("f%d@%s/r", i, loadDomain) }
	var mu sync.Mutex
	got := map[string]map[int]int{} // user → line → copies
	joined := map[string]bool{}
	changed := sync.NewCond(&mu)
	handle := func(e *xmlel.Element, _ time.Time) {
		mu.Lock()
		defer mu.Unlock()
		to := e.Attr("to")
		switch {
		case e.Local == "presence" && e.Attr("type") == "" && statusCodes(e)["110"]:
			joined[to] = true
		case e.Local == "message" && e.Attr("type") == "groupchat":
			k, err := strconv.Atoi(strings.TrimPrefix(e.ChildText("", "body"), "fault "))
			if err != nil {
				return
			}
			if got[to] == nil {
				got[to] = map[int]int{}
			}
			got[to][k]++
		default:
			return
		}
		changed.Broadcast()
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		timer := time.AfterFunc(60*time.Second, func() { mu.Lock(); changed.Broadcast(); mu.Unlock() })
		defer timer.Stop()
		deadline := time.Now().Add(60 * time.Second)
		mu.Lock()
		defer mu.Unlock()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			changed.Wait()
		}
	}

	load := dialLoad(t, srv.ComponentAddr(), loadDomain, srv.Secret())
	load.handle(handle)
	form := submitForm("", "ports", ircPort, "tls_ports", "", "throttle_limit", "1000")
	for i := range users {
		benchConfigure(t, load, user(i), form)
		load.send(t, "<presence from='%s' to='%s/f%d'>%s</presence>", user(i), harness.Esc(room), i, mucX())
	}
	waitUntil("the joins", func() bool { return len(joined) == users })

	peer := dialIRCLoad(t, ngircd.Addr, "peer")
	peer.send(t, "JOIN #fault")
	for k := range lines {
		if k == lines/2 {
			srv.Stop(t) // the second half is sent while Prosody is down
		}
		peer.send(t, "PRIVMSG #fault :fault %d", k)
	}
	srv.Start(t)
	load = dialLoad(t, srv.ComponentAddr(), loadDomain, srv.Secret())
	load.handle(handle)

	complete := func() bool {
		for i := range users {
			if len(got[user(i)]) < lines {
				return false
			}
		}
		return true
	}
	waitUntil("every line for every user", complete)
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, m := range got {
		for _, n := range m {
			dups += n - 1
		}
	}
	t.Logf("%d lines × %d users arrived, %d duplicates", lines, users, dups)
}
