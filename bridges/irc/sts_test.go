package irc

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/bridgetest"
	"passerelle/bridges/email/emailtest"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/store"
)

// stsFixture is a bridge trusting a test CA, a plain fake server and a
// TLS one with a certificate of that CA for localhost.
type stsFixture struct {
	*fixture
	plain, tls *fakeIRC
	logs       *bridgetest.LogBuffer
	stop       func() // stops the bridge and waits for it
}

func setupSTS(t *testing.T, cfg func(plain, tls int) netConfig) *stsFixture {
	t.Helper()
	ca := emailtest.NewCA(t, "irc test CA")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	fx := &stsFixture{fixture: &fixture{b: New(Options{AllowPrivate: true}), h: newFakeHost(t)},
		plain: newFakeIRC(t), tls: serveFake(t, ln), logs: &bridgetest.LogBuffer{}}
	fx.b.dialer.roots = ca.Roots
	fx.h.Logs = fx.logs
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, fx.b, fx.h)
	fx.stop = func() { cancel(); wait() }
	t.Cleanup(fx.stop)
	if err := fx.b.saveNetConfig(ctx, testUser, "localhost", cfg(fx.plain.port(), fx.tls.port())); err != nil {
		t.Fatal(err)
	}
	return fx
}

// plainOnly is what a user who configured only plain-text ports and no
// certificate check has.
func plainOnly(plain, _ int) netConfig {
	return netConfig{Ports: []int{plain}, VerifyCert: false}
}

// policy returns the policy of localhost in force now.
func (fx *stsFixture) policy(t *testing.T) *store.STSPolicy {
	t.Helper()
	p, err := fx.h.St.STSPolicyAt(context.Background(), "localhost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitPolicy waits until the policy of localhost satisfies ok.
func (fx *stsFixture) waitPolicy(t *testing.T, desc string, ok func(*store.STSPolicy) bool) *store.STSPolicy {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := fx.policy(t)
		if ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; policy %+v", desc, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// accepted reports whether f accepted a connection.
func accepted(f *fakeIRC) bool {
	select {
	case <-f.ready:
		return true
	default:
		return false
	}
}

// register completes a registration without capabilities on f.
func register(t *testing.T, f *fakeIRC, ls string) {
	t.Helper()
	f.expect(t, "CAP LS 302")
	f.send(t, ":srv CAP * LS :"+ls)
	f.expect(t, "CAP END")
	f.send(t, ":srv 001 nick :Welcome")
}

// A plain connection that sees sts=port=… is closed before the
// negotiation ends, and the gateway connects with TLS to that port
// (verifying the certificate though the user turned that off). The
// policy announced there is stored for the host, with the TLS port; the
// duration on the plain connection is ignored.
func TestSTSUpgrade(t *testing.T) {
	fx := setupSTS(t, plainOnly)
	fx.join(t)
	fx.plain.expect(t, "CAP LS 302")
	fx.plain.send(t, ":srv CAP * LS :multi-prefix sts=port="+strconv.Itoa(fx.tls.port())+",duration=300")
	for l := fx.plain.expect(t, ""); !strings.HasPrefix(l, "QUIT"); l = fx.plain.expect(t, "") {
		if strings.HasPrefix(l, "CAP ") {
			t.Fatalf("the negotiation went on after the upgrade policy: %q", l)
		}
	}
	fx.plain.closed(t)
	if p := fx.policy(t); p != nil {
		t.Fatalf("a policy was stored from the plain connection: %+v", p)
	}
	fx.h.Expect(t, "upgrade status", statusMessage("asks for TLS on port "+strconv.Itoa(fx.tls.port())))
	fx.tls.expect(t, "CAP LS 302")
	fx.tls.send(t, ":srv CAP * LS :multi-prefix sts=port=1,duration=3600")
	fx.tls.expect(t, "CAP REQ multi-prefix")
	p := fx.policy(t)
	if p == nil || p.Port != fx.tls.port() || p.Duration != time.Hour || time.Until(p.Expires) < 59*time.Minute {
		t.Fatalf("policy after the TLS connection: %+v", p)
	}
	fx.tls.send(t, ":srv CAP nick ACK :multi-prefix")
	fx.tls.expect(t, "CAP END")
	fx.tls.send(t, ":srv 001 nick :Welcome")
	fx.h.Expect(t, "encrypted status", statusMessage("encrypted with TLS"))
	fx.tls.expect(t, "JOIN #c")

	// A CAP NEW on the secure connection updates the policy.
	fx.tls.send(t, ":srv CAP nick NEW :sts=duration=7200")
	fx.waitPolicy(t, "the new duration", func(p *store.STSPolicy) bool { return p != nil && p.Duration == 2*time.Hour })

	// The configure command tells that the policy overrides the ports.
	r, err := fx.b.configure(context.Background(), &bridges.User{JID: testUser}, "localhost", &form.Form{Type: "submit"})
	if err != nil || !strings.Contains(r.Note, "only with TLS (port "+strconv.Itoa(fx.tls.port())+" first") {
		t.Fatalf("configure: %+v, %v", r, err)
	}
}

// While a policy is in force, a user who configured only plain ports
// connects with TLS to the policy's port; when that fails, the join
// fails with a text naming the policy, and no plain connection is made.
// Certificates are verified whatever verify_cert says.
func TestSTSNoPlainFallback(t *testing.T) {
	selfSigned := newFakeIRCTLS(t)
	fx := setupSTS(t, func(plain, _ int) netConfig {
		return netConfig{Ports: []int{plain}, TLSPorts: []int{selfSigned.port()}, VerifyCert: false}
	})
	closed := freePort(t)
	if err := fx.h.St.PutSTSPolicy(context.Background(), "localhost", closed, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	fx.join(t)
	e := fx.h.Expect(t, "join error", presenceErr("item-not-found"))
	text := stanza.ErrorOf(e).Text
	for _, want := range []string{"strict transport security policy", "plain text is not used", "TLS port " + strconv.Itoa(closed), "TLS port " + strconv.Itoa(selfSigned.port())} {
		if !strings.Contains(text, want) {
			t.Errorf("error text without %q: %s", want, text)
		}
	}
	if accepted(fx.plain) || accepted(selfSigned) {
		t.Fatalf("connected despite the policy (plain %v, unverified TLS %v)", accepted(fx.plain), accepted(selfSigned))
	}
	if n := fx.networks(); n != 0 {
		t.Fatalf("the failed network is still there (%d)", n)
	}

	// With the policy's port open, the connection is TLS.
	fx.h.St.PutSTSPolicy(context.Background(), "localhost", fx.tls.port(), time.Hour, time.Now())
	fx.join(t)
	register(t, fx.tls, "")
	fx.h.Expect(t, "encrypted status", statusMessage("encrypted with TLS"))
}

// When the TLS connection the server asked for cannot be made, the join
// fails; the gateway does not go back to plain text.
func TestSTSUpgradeFails(t *testing.T) {
	fx := setupSTS(t, plainOnly)
	closed := freePort(t)
	fx.join(t)
	fx.plain.expect(t, "CAP LS 302")
	fx.plain.send(t, ":srv CAP * LS :sts=port="+strconv.Itoa(closed))
	fx.plain.closed(t)
	e := fx.h.Expect(t, "join error", presenceErr("item-not-found"))
	if text := stanza.ErrorOf(e).Text; !strings.Contains(text, "asked for TLS") || !strings.Contains(text, "plain text is not used") {
		t.Errorf("error text: %s", text)
	}
	select {
	case l := <-fx.plain.lines:
		t.Fatalf("the plain server got %q after the upgrade failed", l)
	default:
	}
}

// An sts value without the part a connection needs is ignored: no port
// on a plain connection (no upgrade), no duration on a TLS one (no
// policy), a duration on a plain one (not stored).
func TestSTSIncomplete(t *testing.T) {
	fx := setupSTS(t, func(plain, tls int) netConfig {
		return netConfig{Ports: []int{plain}, VerifyCert: true}
	})
	fx.join(t)
	register(t, fx.plain, "sts=duration=3600,port=x")
	fx.h.Expect(t, "plain status", statusMessage("not encrypted"))
	fx.plain.send(t, ":srv CAP nick NEW :sts=port="+strconv.Itoa(fx.tls.port()))
	fx.plain.expect(t, "JOIN #c")
	if p := fx.policy(t); p != nil {
		t.Fatalf("policy from a plain connection: %+v", p)
	}

	fx2 := setupSTS(t, func(_, tls int) netConfig { return netConfig{TLSPorts: []int{tls}, VerifyCert: true} })
	fx2.join(t)
	register(t, fx2.tls, "sts=port=6697")
	fx2.h.Expect(t, "encrypted status", statusMessage("encrypted with TLS"))
	fx2.tls.expect(t, "JOIN #c")
	if p := fx2.policy(t); p != nil {
		t.Fatalf("policy without a duration: %+v", p)
	}
}

// duration=0 removes the policy; a policy seen by a connection that
// closes expires its duration after the close.
func TestSTSRemoveAndReschedule(t *testing.T) {
	fx := setupSTS(t, plainOnly)
	ctx := context.Background()
	// Announced 50 minutes ago for an hour: 10 minutes left.
	if err := fx.h.St.PutSTSPolicy(ctx, "localhost", fx.tls.port(), time.Hour, time.Now().Add(-50*time.Minute)); err != nil {
		t.Fatal(err)
	}
	fx.join(t)
	register(t, fx.tls, "sts=duration=3600")
	fx.tls.expect(t, "JOIN #c")
	fx.h.St.PutSTSPolicy(ctx, "localhost", fx.tls.port(), time.Hour, time.Now().Add(-50*time.Minute))
	fx.handle(t, "<presence xmlns='jabber:component:accept' from='"+testUser+"/r' to='#c%localhost@irc.example/nick' type='unavailable'/>")
	fx.tls.expect(t, "PART #c")
	fx.tls.closed(t) // no channel left
	fx.waitPolicy(t, "rescheduled on disconnect", func(p *store.STSPolicy) bool { return p != nil && time.Until(p.Expires) > 59*time.Minute })

	fx.join(t)
	register(t, fx.tls, "sts=duration=0")
	fx.tls.expect(t, "JOIN #c")
	if p := fx.policy(t); p != nil {
		t.Fatalf("duration=0 left the policy: %+v", p)
	}
}

// A store that cannot be read or written: no connection at all when the
// policy cannot be read; a policy that cannot be stored or rescheduled
// is reported, and the TLS connection goes on.
func TestSTSBrokenStore(t *testing.T) {
	fx := setupSTS(t, func(_, tls int) netConfig { return netConfig{TLSPorts: []int{tls}, VerifyCert: true} })
	fx.join(t)
	fx.tls.expect(t, "CAP LS 302")
	fx.h.St.Exec(t, `DROP TABLE irc_sts`)
	fx.tls.send(t, ":srv CAP * LS :sts=duration=3600")
	fx.tls.expect(t, "CAP END")
	fx.h.Expect(t, "status", statusMessage("could not be stored"))
	fx.tls.send(t, ":srv 001 nick :Welcome")
	fx.tls.expect(t, "JOIN #c")
	fx.tls.drop()
	fx.logs.Wait(t, "cannot reschedule an irc strict transport security policy")

	r, err := fx.b.configure(context.Background(), &bridges.User{JID: testUser}, "localhost", &form.Form{Type: "submit"})
	if err != nil || !strings.Contains(r.Note, "could not be read") {
		t.Fatalf("configure: %+v, %v", r, err)
	}

	fx2 := setupSTS(t, plainOnly)
	fx2.h.St.Exec(t, `DROP TABLE irc_sts`)
	fx2.join(t)
	e := fx2.h.Expect(t, "join error", presenceErr("item-not-found"))
	if !strings.Contains(stanza.ErrorOf(e).Text, "cannot read its strict transport security policy") {
		t.Errorf("error text: %s", e)
	}
	if accepted(fx2.plain) {
		t.Fatal("connected in plain text without knowing the policy")
	}
}

// freePort is a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

// A connection that saw a policy and is closed when the gateway stops
// reschedules the policy too.
func TestSTSRescheduleOnShutdown(t *testing.T) {
	fx := setupSTS(t, func(_, tls int) netConfig { return netConfig{TLSPorts: []int{tls}, VerifyCert: true} })
	fx.join(t)
	register(t, fx.tls, "sts=duration=3600")
	fx.tls.expect(t, "JOIN #c")
	if err := fx.h.St.PutSTSPolicy(context.Background(), "localhost", fx.tls.port(), time.Hour, time.Now().Add(-50*time.Minute)); err != nil {
		t.Fatal(err)
	}
	fx.stop()
	fx.tls.expect(t, "QUIT")
	if p := fx.policy(t); p == nil || time.Until(p.Expires) < 59*time.Minute {
		t.Fatalf("the policy was not rescheduled at shutdown: %+v", p)
	}
}
