package main

// End-to-end test of IRCv3 strict transport security (sts): ngircd does
// not announce sts, so the IRC side is a small server in the test, with a
// plain and a TLS listener (certificate of a test CA the gateway trusts
// through SSL_CERT_FILE).

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"passerelle/bridges/email/emailtest"
	"passerelle/cmd/internal/harness"
	"passerelle/component/stanza"
)

// stsServer is an IRC server that registers anyone and lets them join
// any channel, on a plain and a TLS listener, each announcing its own sts
// capability value (none when empty).
type stsServer struct {
	t       *testing.T
	tlsConf *tls.Config
	plain   net.Listener
	tlsAddr string

	mu         sync.Mutex
	tlsLn      net.Listener // nil while the TLS port is closed
	sts        map[bool]string
	accepted   map[bool]int // connections, by TLS or not
	registered map[bool]int
	conns      []net.Conn
}

func startSTSServer(t *testing.T, conf *tls.Config) *stsServer {
	s := &stsServer{t: t, tlsConf: conf, sts: map[bool]string{}, accepted: map[bool]int{}, registered: map[bool]int{}}
	var err error
	if s.plain, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go s.serve(s.plain, false)
	s.tlsAddr = "127.0.0.1:0"
	s.openTLS()
	t.Cleanup(func() {
		s.plain.Close()
		s.closeTLS()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *stsServer) port(secure bool) int {
	if secure {
		_, p, _ := net.SplitHostPort(s.tlsAddr)
		n, _ := strconv.Atoi(p)
		return n
	}
	return s.plain.Addr().(*net.TCPAddr).Port
}

// openTLS (re)opens the TLS listener, on the same port as before.
func (s *stsServer) openTLS() {
	ln, err := tls.Listen("tcp", s.tlsAddr, s.tlsConf)
	if err != nil {
		s.t.Fatal(err)
	}
	s.tlsAddr = ln.Addr().String()
	s.mu.Lock()
	s.tlsLn = ln
	s.mu.Unlock()
	go s.serve(ln, true)
}

// closeTLS closes the TLS port: connecting to it is refused.
func (s *stsServer) closeTLS() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tlsLn != nil {
		s.tlsLn.Close()
		s.tlsLn = nil
	}
}

func (s *stsServer) announce(secure bool, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sts[secure] = value
}

func (s *stsServer) counts(secure bool) (accepted, registered int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[secure], s.registered[secure]
}

func (s *stsServer) serve(ln net.Listener, secure bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.accepted[secure]++
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		go s.session(c, secure)
	}
}

// session registers the client once it sent USER and ended the
// capability negotiation, and answers JOIN, PING and QUIT.
func (s *stsServer) session(c net.Conn, secure bool) {
	defer c.Close()
	r := bufio.NewReader(c)
	nick, user, capEnd := "", false, false
	send := func(format string, args ...any) { fmt.Fprintf(c, format+"\r\n", args...) }
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(strings.TrimRight(l, "\r\n"))
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "CAP":
			switch {
			case len(f) > 1 && f[1] == "LS":
				s.mu.Lock()
				v := s.sts[secure]
				s.mu.Unlock()
				if v != "" {
					v = "sts=" + v
				}
				send(":srv CAP * LS :%s", v)
			case len(f) > 1 && f[1] == "END":
				capEnd = true
			}
		case "NICK":
			nick = f[1]
		case "USER":
			user = true
		case "JOIN":
			send(":%s!u@h JOIN %s", nick, f[1])
			send(":srv 366 %s %s :End of /NAMES list", nick, f[1])
		case "PING":
			send("PONG %s", f[len(f)-1])
		case "QUIT":
			return
		}
		if user && capEnd && nick != "" {
			user = false
			s.mu.Lock()
			s.registered[secure]++
			s.mu.Unlock()
			send(":srv 001 %s :Welcome", nick)
		}
	}
}

// TestIRCStrictTransportSecurity: a user who configured only a plain port
// on a network announcing sts is moved to TLS, and the policy the TLS
// port announces outlives a restart of the gateway: with the TLS port
// closed, the next join fails with an error naming the policy instead of
// connecting in plain text. duration=0 removes the policy.
func TestIRCStrictTransportSecurity(t *testing.T) {
	ca := emailtest.NewCA(t, "Passerelle test CA")
	irc := startSTSServer(t, ca.ServerTLS(t))
	irc.announce(false, "port="+strconv.Itoa(irc.port(true))+",duration=3600")
	irc.announce(true, "duration=3600")
	srv := harness.StartProsody(t, harness.ServerOptions{Domain: "localhost", Components: []string{ircDomain}})
	env := baseEnv(t, srv)
	delete(env, "PASSERELLE_EMAIL_DOMAIN")
	delete(env, "PASSERELLE_SMS_DOMAIN")
	delete(env, "PASSERELLE_SMS_NUMBERS")
	env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
	env["SSL_CERT_FILE"] = ca.File
	e := startGateway(t, srv, env)
	top := t
	restart := func(t *testing.T) {
		t.Helper()
		e.gw.Signal(syscall.SIGTERM)
		if code := e.gw.Wait(t, wait); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		e.gw = harness.StartGateway(top, e.bin, env) // lives until the end of the test
		e.gw.WaitOutput(t, wait, `msg="connected to the XMPP server" component=`+ircDomain)
	}

	const server = "localhost"
	room := "#sts%" + server + "@" + ircDomain
	network := server + "@" + ircDomain
	alice := e.dial(t, "alice@localhost")
	// Only the plain port, and no certificate check.
	wantResult(t, configureNetwork(t, alice, server, "ports", strconv.Itoa(irc.port(false)), "tls_ports", "", "verify_cert", "false"), "configure")
	join := func() { alice.Send(t, "<presence to='%s/alice'>%s</presence>", harness.Esc(room), mucX()) }
	leave := func(t *testing.T) {
		alice.Send(t, "<presence to='%s/alice' type='unavailable'/>", harness.Esc(room))
		alice.Expect(t, wait, "left", occupant(room+"/alice", "unavailable", "110"))
	}

	t.Run("plain connection upgraded to TLS", func(t *testing.T) {
		join()
		alice.Expect(t, wait, "upgrade status", harness.MessageFrom(network, "asks for TLS on port "+strconv.Itoa(irc.port(true))))
		alice.Expect(t, wait, "joined", occupant(room+"/alice", "", "110"))
		alice.Expect(t, wait, "encrypted status", harness.MessageFrom(network, "encrypted with TLS"))
		if _, plain := irc.counts(false); plain != 0 {
			t.Errorf("%d registrations in plain text", plain)
		}
		if _, secure := irc.counts(true); secure != 1 {
			t.Errorf("%d registrations with TLS, want 1", secure)
		}
		leave(t)
	})

	t.Run("TLS port closed after a restart: no plain text", func(t *testing.T) {
		restart(t)
		irc.closeTLS()
		plainBefore, _ := irc.counts(false)
		join()
		e := alice.Expect(t, wait, "join error", presenceFrom(room+"/alice", "error"))
		text := stanza.ErrorOf(e).Text
		if !strings.Contains(text, "strict transport security policy") || !strings.Contains(text, "plain text is not used") {
			t.Errorf("error text: %q", text)
		}
		if plain, _ := irc.counts(false); plain != plainBefore {
			t.Errorf("%d plain connections despite the policy", plain-plainBefore)
		}
		alice.ExpectNone(t, 0, "a join", occupant(room+"/alice", "", "110"))
	})

	t.Run("duration=0 removes the policy", func(t *testing.T) {
		irc.openTLS()
		irc.announce(true, "duration=0")
		join()
		alice.Expect(t, wait, "joined with TLS", occupant(room+"/alice", "", "110"))
		alice.Expect(t, wait, "encrypted status", harness.MessageFrom(network, "encrypted with TLS"))
		leave(t)
		// Without the policy (and without an upgrade policy on the plain
		// port) the user's plain port is used again, after a restart too.
		irc.closeTLS()
		irc.announce(false, "")
		restart(t)
		join()
		alice.Expect(t, wait, "joined in plain text", occupant(room+"/alice", "", "110"))
		alice.Expect(t, wait, "plain status", harness.MessageFrom(network, "not encrypted"))
	})
}
