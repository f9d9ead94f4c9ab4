package irc

import (
	"context"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"passerelle/bridges"
	"passerelle/component/form"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
)

const otherUser = "v@example.org"

func roomJID(name string) string {
	return mapping.IRCAddr{Kind: mapping.IRCChannel, Name: name, Server: "localhost"}.Local() + "@irc.example"
}

// handleAs handles a stanza from the resource full of the test user.
func (fx *fixture) handleAs(t *testing.T, full, raw string) {
	t.Helper()
	st, err := xmlel.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	fx.h.Run(func(ctx context.Context) {
		fx.b.Handle(ctx, &bridges.User{JID: testUser, Full: full}, st)
	})
}

func (fx *fixture) presence(t *testing.T, full, name string) {
	t.Helper()
	fx.handleAs(t, full, "<presence xmlns='jabber:component:accept' from='"+full+"' to='"+roomJID(name)+"/nick'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
}

// register completes the registration, announcing the case mapping cm
// (none when empty).
func (fx *fixture) register(t *testing.T, cm string) {
	t.Helper()
	lines := []string{":srv CAP * LS :", ":srv 001 nick :Welcome"}
	if cm != "" {
		lines = append(lines, ":srv 005 nick CASEMAPPING="+cm+" CHANTYPES=# :are supported")
	}
	fx.f.send(t, lines...)
}

// completeJoin answers our JOIN of name and waits for the self-presence.
func (fx *fixture) completeJoin(t *testing.T, name string) {
	t.Helper()
	fx.f.expect(t, "JOIN "+name)
	fx.f.send(t, ":nick!u@h JOIN "+name, ":srv 366 nick "+name+" :End")
	fx.h.Expect(t, "self-presence in "+name, func(e *xmlel.Element) bool {
		return e.Attr("from") == roomJID(name)+"/nick" && selfPresence(e)
	})
}

// connectWith joins name first, on a server announcing cm.
func (fx *fixture) connectWith(t *testing.T, name, cm string) {
	t.Helper()
	fx.presence(t, testUser+"/r", name)
	fx.f.expect(t, "USER")
	fx.register(t, cm)
	fx.completeJoin(t, name)
}

// say has bob say body in the channel name and waits until it reached a
// room (it was archived before).
func (fx *fixture) say(t *testing.T, name, body string) {
	t.Helper()
	fx.f.send(t, ":bob!u@h PRIVMSG "+name+" :"+body)
	fx.h.Expect(t, body, func(e *xmlel.Element) bool { return e.Local == "message" && e.ChildText("", "body") == body })
}

// archive returns the bodies of name's archive, through MAM.
func (fx *fixture) archive(t *testing.T, name string) string {
	t.Helper()
	id := stanza.NewID()
	fx.handle(t, "<iq xmlns='jabber:component:accept' from='"+testUser+"/r' to='"+roomJID(name)+"' type='set' id='"+id+"'>"+
		"<query xmlns='"+stanza.NSMAM+"' queryid='q'/></iq>")
	var bodies []string
	fx.h.Expect(t, "the fin of "+name, func(e *xmlel.Element) bool {
		if r := e.Child(stanza.NSMAM, "result"); r != nil && e.Attr("from") == roomJID(name) {
			bodies = append(bodies, r.Child(stanza.NSForward, "forwarded").Child("", "message").ChildText("", "body"))
		}
		if e.Local == "iq" && e.Attr("id") == id {
			if e.Attr("type") != "result" {
				t.Fatalf("MAM query on %s: %s", name, e)
			}
			return true
		}
		return false
	})
	return strings.Join(bodies, " ")
}

// replayed joins name from another resource and returns the history it
// is given.
func (fx *fixture) replayed(t *testing.T, full, name string) string {
	t.Helper()
	fx.presence(t, full, name)
	var bodies []string
	fx.h.Expect(t, "the subject to "+full, func(e *xmlel.Element) bool {
		if e.Attr("to") != full || e.Local != "message" {
			return false
		}
		if e.Child(stanza.NSDelay, "delay") != nil {
			bodies = append(bodies, e.ChildText("", "body"))
		}
		return e.Child("", "subject") != nil
	})
	return strings.Join(bodies, " ")
}

// configure submits the channel's configure command.
func (fx *fixture) configure(t *testing.T, name string, cs chanSettings) {
	t.Helper()
	f := &form.Form{Type: "submit", Fields: []form.Field{
		{Var: "persistent", Values: []string{strconv.FormatBool(cs.Persistent)}},
		{Var: "record_history", Values: []string{strconv.FormatBool(cs.Record)}},
	}}
	var err error
	fx.h.Run(func(ctx context.Context) {
		_, err = fx.b.channelCommand(ctx, &bridges.User{JID: testUser, Full: testUser + "/r"},
			mapping.IRCAddr{Kind: mapping.IRCChannel, Name: name, Server: "localhost"}, f)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (fx *fixture) settings(t *testing.T, user, name string) chanSettings {
	t.Helper()
	cs, err := fx.b.loadChanSettings(context.Background(), user, "localhost", name)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func (fx *fixture) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	fx.h.St.Exec(t, query, args...)
}

// column returns the values of one column, one row a value, sorted.
func (fx *fixture) column(t *testing.T, query string, args ...any) string {
	t.Helper()
	return fx.h.St.Column(t, query, args...)
}

// storedKey returns the stored key of name on server.
func (fx *fixture) storedKey(ctx context.Context, server, name string) string {
	var key string
	fx.b.withKey(ctx, server, name, func(k string) error { key = k; return nil })
	return key
}

// On an ascii server #a[b and #a{b are two channels: their own
// settings, MAM archive and join history.
func TestStoredKeysOnASCIIServer(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.connectWith(t, "#a[b", caseASCII)
	fx.presence(t, testUser+"/r", "#a{b")
	fx.completeJoin(t, "#a{b")
	fx.configure(t, "#a[b", chanSettings{Persistent: true, Record: true})
	if !fx.settings(t, testUser, "#a[b").Persistent || fx.settings(t, testUser, "#a{b").Persistent {
		t.Errorf("settings shared: #a[b %+v, #a{b %+v", fx.settings(t, testUser, "#a[b"), fx.settings(t, testUser, "#a{b"))
	}
	fx.say(t, "#a[b", "square")
	fx.say(t, "#a{b", "curly")
	if got := fx.archive(t, "#a[b"); got != "square" {
		t.Errorf("archive of #a[b: %q", got)
	}
	if got := fx.archive(t, "#a{b"); got != "curly" {
		t.Errorf("archive of #a{b: %q", got)
	}
	if got := fx.replayed(t, testUser+"/r2", "#a{b"); got != "curly" {
		t.Errorf("history of #a{b: %q", got)
	}
	if got := fx.replayed(t, testUser+"/r3", "#a[b"); got != "square" {
		t.Errorf("history of #a[b: %q", got)
	}
	if got := fx.column(t, `SELECT server || ' ' || casemapping FROM irc_servers`); got != "localhost ascii" {
		t.Errorf("stored case mappings: %q", got)
	}
	if got := fx.column(t, `SELECT channel || '=' || name FROM irc_channels`); got != "#a[b=#a[b #a{b=#a{b" {
		t.Errorf("stored channels: %q", got)
	}
}

// On an rfc1459 server they are one channel.
func TestStoredKeysOnRFC1459Server(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.connectWith(t, "#a[b", caseRFC1459)
	fx.configure(t, "#a[b", chanSettings{Persistent: true, Record: true})
	if !fx.settings(t, testUser, "#a{b").Persistent {
		t.Errorf("settings not shared: %+v", fx.settings(t, testUser, "#a{b"))
	}
	fx.say(t, "#a[b", "square")
	fx.say(t, "#a{b", "curly")
	for _, name := range []string{"#a[b", "#a{b"} {
		if got := fx.archive(t, name); got != "square curly" {
			t.Errorf("archive of %s: %q", name, got)
		}
	}
	if got := fx.replayed(t, testUser+"/r2", "#a[b"); got != "square curly" {
		t.Errorf("history: %q", got)
	}
	if got := fx.column(t, `SELECT channel || '=' || name FROM irc_channels`); got != "#a{b=#a[b" {
		t.Errorf("stored channels: %q", got)
	}
}

// A server that switches from rfc1459 (here: announcing nothing) to
// ascii: the stored channel is re-keyed under its spelling and keeps its
// settings and archive; #a{b becomes another channel.
func TestStoredKeysRekeyedWhenServerSwitches(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.connectWith(t, "#A[b", "")
	fx.configure(t, "#A[b", chanSettings{Persistent: true, Record: true})
	fx.say(t, "#A[b", "before")
	if got := fx.column(t, `SELECT channel || '=' || name FROM irc_channels`); got != "#a{b=#A[b" {
		t.Fatalf("stored channels under rfc1459: %q", got)
	}

	fx.f.drop()
	fx.f.closed(t)
	fx.h.Expect(t, "status line", statusMessage("reconnecting"))
	fx.f.expect(t, "CAP LS 302")
	fx.register(t, caseASCII)
	fx.f.expect(t, "JOIN #A[b")
	fx.f.send(t, ":nick!u@h JOIN #A[b", ":srv 366 nick #A[b :End")
	fx.say(t, "#A[b", "after")

	if got := fx.column(t, `SELECT channel || '=' || name FROM irc_channels`); got != "#a[b=#A[b" {
		t.Errorf("stored channels under ascii: %q", got)
	}
	if !fx.settings(t, testUser, "#A[b").Persistent {
		t.Errorf("the settings were lost: %+v", fx.settings(t, testUser, "#A[b"))
	}
	if fx.settings(t, testUser, "#a{b").Persistent {
		t.Errorf("#a{b has the settings of #a[b")
	}
	if got := fx.archive(t, "#A[b"); got != "before after" {
		t.Errorf("archive of #A[b: %q", got)
	}
	if got := fx.archive(t, "#a{b"); got != "" {
		t.Errorf("archive of #a{b: %q", got)
	}
	if got := fx.column(t, `SELECT casemapping FROM irc_servers WHERE server = 'localhost'`); got != caseASCII {
		t.Errorf("stored case mapping: %q", got)
	}
}

// From ascii to rfc1459, #A[b and #a{b merge, for every user: persistent
// or recording if either was, both archives kept; rows written before
// the spelling was kept, and archives without settings, move too.
func TestStoredKeysMerge(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.exec(t, `INSERT INTO irc_servers (server, casemapping) VALUES ('localhost', 'ascii')`)
	for _, r := range []struct {
		jid, key, name, nick string
		persistent, record   bool
	}{
		{testUser, "#a[b", "#A[b", "", true, false},
		{testUser, "#a{b", "#a{b", "", false, true},
		{otherUser, "#a[b", "#a[b", "v", false, false},
		{otherUser, "#q[r", "", "v", false, false}, // before version 6
		{otherUser, "#q{r", "#q{r", "", true, true},
		{otherUser, "#z[z", "", "", false, false},
	} {
		fx.exec(t, `INSERT INTO irc_channels (jid, server, channel, name, nick, persistent, record_history) VALUES (?, 'localhost', ?, ?, ?, ?, ?)`,
			r.jid, r.key, r.name, r.nick, r.persistent, r.record)
	}
	for _, r := range []struct{ jid, key, body string }{
		{testUser, "#a[b", "s1"}, {testUser, "#a{b", "c1"}, {testUser, "#a[b", "s2"},
		{testUser, "#o[p", "o1"}, // no settings row
		{otherUser, "#a[b", "v1"}, {otherUser, "#q[r", "q1"}, {otherUser, "#q{r", "q2"},
		{otherUser, "#a[b", "elsewhere"},
	} {
		server := "localhost"
		if r.body == "elsewhere" {
			server = "irc.other"
		}
		fx.exec(t, `INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES (?, ?, ?, 'bob', ?, 0)`, r.jid, server, r.key, r.body)
	}

	// Joined under ascii keys before 005.
	fx.connectWith(t, "#a{b", caseRFC1459)
	fx.h.Run(func(context.Context) {
		n := fx.b.networkOf(testUser, "localhost")
		if ch := n.chans["#a{b"]; ch == nil || !ch.settings.Persistent || !ch.settings.Record {
			t.Errorf("the joined channel does not have the merged settings")
		}
	})
	if got := fx.column(t, `SELECT jid || ' ' || channel || '=' || name || ' ' || nick || ' ' || persistent || record_history FROM irc_channels`); got !=
		"u@example.org #a{b=#A[b nick 11 v@example.org #a{b=#a[b v 00 v@example.org #q{r=#q{r v 11 v@example.org #z{z=#z[z  00" {
		t.Errorf("stored channels: %q", got)
	}
	if got := fx.archive(t, "#a[b"); got != "s1 c1 s2" {
		t.Errorf("merged archive: %q", got)
	}
	if got := fx.column(t, `SELECT jid || ' ' || server || ' ' || channel || ' ' || body FROM irc_history WHERE jid != ? OR channel LIKE '#o%'`, testUser); got !=
		"u@example.org localhost #o{p o1 v@example.org irc.other #a[b elsewhere v@example.org localhost #a{b v1 v@example.org localhost #q{r q1 v@example.org localhost #q{r q2" {
		t.Errorf("archives: %q", got)
	}
	if got := fx.column(t, `SELECT casemapping FROM irc_servers WHERE server = 'localhost'`); got != caseRFC1459 {
		t.Errorf("stored case mapping: %q", got)
	}
}

// After a restart the persistent channels are rejoined under their
// spelling; a row from before the spelling was kept, under its key.
func TestRestoreUsesSpelling(t *testing.T) {
	fx := &fixture{h: newFakeHost(t), f: newFakeIRC(t)}
	stop := fx.start(t)
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts = []int{fx.f.port()}, nil
	if err := fx.b.saveNetConfig(context.Background(), testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
	fx.connectWith(t, "#A[b", "")
	fx.configure(t, "#A[b", chanSettings{Persistent: true, Record: true})
	fx.exec(t, `INSERT INTO irc_channels (jid, server, channel, nick, persistent) VALUES (?, 'localhost', '#old', 'nick', 1)`, testUser)
	stop()
	fx.f.closed(t)

	fx.start(t)
	fx.f.expect(t, "USER")
	fx.register(t, "")
	var joined []string
	for len(joined) < 2 {
		l := fx.f.expect(t, "JOIN ")
		joined = append(joined, strings.Split(strings.Fields(l)[1], ",")...)
	}
	sort.Strings(joined)
	if got := strings.Join(joined, " "); got != "#A[b #old" {
		t.Errorf("rejoined %q", got)
	}
}

// start starts a new bridge on fx.h; the function returned stops it and
// waits for its Run to return.
func (fx *fixture) start(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := New(Options{AllowPrivate: true})
	fx.b = b
	wait := start(t, ctx, b, fx.h)
	stop = func() { cancel(); wait() }
	t.Cleanup(stop)
	return stop
}

// A re-keying that fails (store.TestRekeyIRCServerFailures fails each
// of its steps) keeps the old keys in use, and the next try succeeds.
func TestRekeyFailureKeepsOldKeys(t *testing.T) {
	fx := &fixture{h: newFakeHost(t)}
	fx.start(t)
	ctx := context.Background()
	fx.exec(t, `INSERT INTO irc_channels (jid, server, channel, name, persistent) VALUES (?, 'localhost', '#a{b', '#A[b', 1)`, testUser)
	fx.exec(t, `INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES (?, 'localhost', '#a{b', 'bob', 'm', 0)`, testUser)
	fx.exec(t, `CREATE TRIGGER sabotage BEFORE INSERT ON irc_channels BEGIN SELECT RAISE(ABORT, 'refused'); END`)
	if merged := fx.b.storeCasemap(ctx, "localhost", caseASCII); merged != nil {
		t.Fatalf("re-keyed despite the failure: %v", merged)
	}
	fx.exec(t, `DROP TRIGGER sabotage`)
	if key := fx.storedKey(ctx, "localhost", "#A[b"); key != "#a{b" {
		t.Errorf("key after the failure: %q", key)
	}
	if !fx.settings(t, testUser, "#a[b").Persistent {
		t.Errorf("the settings are lost after the failure")
	}
	if got := fx.column(t, `SELECT channel FROM irc_channels UNION ALL SELECT channel FROM irc_history UNION ALL SELECT server FROM irc_servers`); got != "#a{b #a{b" {
		t.Errorf("rows after the failure: %q", got)
	}
	if merged := fx.b.storeCasemap(ctx, "localhost", caseASCII); merged == nil {
		t.Fatal("the second try failed")
	}
	if got := fx.column(t, `SELECT channel FROM irc_channels UNION ALL SELECT channel FROM irc_history UNION ALL SELECT casemapping FROM irc_servers`); got != "#a[b #a[b ascii" {
		t.Errorf("rows after the second try: %q", got)
	}
}

// A failure to begin (the database is gone) keeps the old mapping.
func TestRekeyFailureToBegin(t *testing.T) {
	fx := &fixture{h: newFakeHost(t)}
	fx.start(t)
	ctx := context.Background()
	key := fx.storedKey(ctx, "localhost", "#A[b")
	fx.h.St.Close()
	if merged := fx.b.storeCasemap(ctx, "localhost", caseASCII); merged != nil {
		t.Fatalf("re-keyed a closed database: %v", merged)
	}
	again := fx.storedKey(ctx, "localhost", "#A[b")
	if key != "#a{b" || again != key {
		t.Errorf("key %q, then %q", key, again)
	}
}

// When the re-keying fails on a connection's 005, the connection works
// and the stored keys stay those of the old mapping.
func TestRekeyFailureOnConnection(t *testing.T) {
	fx := setup(t, true, defaultNetConfig())
	fx.exec(t, `CREATE TRIGGER sabotage BEFORE INSERT ON irc_servers BEGIN SELECT RAISE(ABORT, 'refused'); END`)
	fx.connectWith(t, "#a[b", caseASCII)
	fx.configure(t, "#a[b", chanSettings{Persistent: true, Record: true})
	fx.say(t, "#a[b", "square")
	if !fx.settings(t, testUser, "#a{b").Persistent {
		t.Errorf("stored keys not folded with rfc1459 after the failure")
	}
	if got := fx.column(t, `SELECT channel FROM irc_channels UNION ALL SELECT channel FROM irc_history`); got != "#a{b #a{b" {
		t.Errorf("rows: %q", got)
	}
	fx.h.Run(func(context.Context) {
		if n := fx.b.networkOf(testUser, "localhost"); n.casemap != caseASCII {
			t.Errorf("the connection's mapping is %q", n.casemap)
		}
	})
}

// When irc_servers cannot be read, keys fold with rfc1459, and the
// mapping is read again next time.
func TestStoredCasemapReadFailure(t *testing.T) {
	fx := &fixture{h: newFakeHost(t)}
	fx.start(t)
	ctx := context.Background()
	fx.exec(t, `INSERT INTO irc_servers (server, casemapping) VALUES ('localhost', 'ascii')`)
	fx.exec(t, `ALTER TABLE irc_servers RENAME TO away`)
	if err := fx.b.saveChanSettings(ctx, testUser, "localhost", "#A[b", chanSettings{Persistent: true}); err != nil {
		t.Fatal(err)
	}
	if got := fx.column(t, `SELECT channel FROM irc_channels`); got != "#a{b" {
		t.Errorf("key without the mapping: %q", got)
	}
	fx.exec(t, `ALTER TABLE away RENAME TO irc_servers`)
	if fx.settings(t, testUser, "#A[b").Persistent || !fx.settings(t, testUser, "#a{b").Persistent {
		t.Errorf("the ascii mapping is not used once readable")
	}
}

// Writers on many goroutines while the mapping flips: every row ends
// under the key of the final mapping, none under a stale one.
func TestRekeyWhileWriting(t *testing.T) {
	fx := &fixture{h: newFakeHost(t)}
	fx.start(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4*50)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if err := fx.b.saveChanSettings(ctx, "u"+strconv.Itoa(i)+"@example.org", "localhost", "#A[b", chanSettings{Persistent: j%2 == 0}); err != nil {
					errs <- err
				}
			}
		}()
	}
	cm := caseRFC1459
	for range 10 {
		if cm == caseRFC1459 {
			cm = caseASCII
		} else {
			cm = caseRFC1459
		}
		if fx.b.storeCasemap(ctx, "localhost", cm) == nil {
			t.Fatalf("the switch to %s failed", cm)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The last switch was to rfc1459.
	if got := fx.column(t, `SELECT jid || ' ' || channel FROM irc_channels`); got !=
		"u0@example.org #a{b u1@example.org #a{b u2@example.org #a{b u3@example.org #a{b" {
		t.Errorf("rows: %q", got)
	}
}

// restartWithPersistent starts a bridge that finds the persistent channel
// #keep of the test user on a server at port.
func restartWithPersistent(t *testing.T, f *fakeIRC, port int) *fixture {
	t.Helper()
	fx := &fixture{h: newFakeHost(t), f: f}
	cfg := defaultNetConfig()
	cfg.Ports, cfg.TLSPorts = []int{port}, nil
	b := New(Options{AllowPrivate: true})
	b.host, b.db = fx.h, fx.h.St
	if err := b.saveNetConfig(context.Background(), testUser, "localhost", cfg); err != nil {
		t.Fatal(err)
	}
	fx.exec(t, `INSERT INTO irc_channels (jid, server, channel, name, nick, persistent) VALUES (?, 'localhost', '#keep', '#keep', 'nick', 1)`, testUser)
	fx.start(t)
	return fx
}

// After a restart, a connection lost before the persistent channels are
// back is tried again: they are not given up.
func TestRestoreRetriesLostConnection(t *testing.T) {
	f := newFakeIRC(t)
	fx := restartWithPersistent(t, f, f.port())
	f.expect(t, "USER")
	f.drop()
	f.closed(t)
	fx.h.Expect(t, "status line", statusMessage("reconnecting"))
	f.expect(t, "USER")
	fx.register(t, "")
	f.expect(t, "JOIN #keep")
}

// After a restart, an IRC server that cannot be reached is tried again.
func TestRestoreRetriesUnreachableServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	fx := restartWithPersistent(t, nil, port)
	fx.h.Expect(t, "status line", statusMessage("reconnecting"))
}

// After a restart, our nick may still be held by the connection before
// it: another one is taken rather than giving the channels up.
func TestRestoreTakesAnotherNick(t *testing.T) {
	f := newFakeIRC(t)
	restartWithPersistent(t, f, f.port())
	f.expect(t, "USER")
	f.send(t, ":srv CAP * LS :", ":srv 433 * nick :Nickname is already in use")
	f.expect(t, "NICK nick_")
	f.send(t, ":srv 001 nick_ :Welcome")
	f.expect(t, "JOIN #keep")
}
