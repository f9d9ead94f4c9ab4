package email

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"

	"passerelle/bridges/bridgetest"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// appendTo puts raw into mailbox with a real IMAP client, as a mail client
// files a mail it sent.
func (m *memIMAP) appendTo(t *testing.T, mailbox, raw string) {
	t.Helper()
	c, err := imapclient.DialInsecure(m.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("bob", "secret").Wait(); err != nil {
		t.Fatal(err)
	}
	cmd := c.Append(mailbox, int64(len(raw)), nil)
	cmd.Write([]byte(raw))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// sentMail is a mail bob sent from his mail client.
func sentMail(id, to, text string, date time.Time) string {
	return fmt.Sprintf("From: Bob <bob@example.net>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.net>\r\nDate: %s\r\n\r\n%s\r\n",
		to, id, id, date.Format(time.RFC1123Z), text)
}

// unwrapCarbon returns the message inside the privileged sent carbon st
// (stanza.SentCarbon in namespace ns), or nil when st is not one.
func unwrapCarbon(st *xmlel.Element, ns string) *xmlel.Element {
	p := st.Child(ns, "privilege")
	if st.Local != "message" || p == nil {
		return nil
	}
	c := p.Child(stanza.NSForward, "forwarded").Child(stanza.NSClient, "message")
	if c == nil || c.Child(stanza.NSCarbons, "sent") == nil {
		return nil
	}
	return c.Child(stanza.NSCarbons, "sent").Child(stanza.NSForward, "forwarded").Child(stanza.NSClient, "message")
}

func isCarbon(st *xmlel.Element) bool { return unwrapCarbon(st, stanza.NSPrivilege2) != nil }

// nextCarbon waits for the next carbon the bridge commits and returns its
// inner message.
func nextCarbon(t *testing.T, h *bridgetest.Host) *xmlel.Element {
	t.Helper()
	return unwrapCarbon(h.Expect(t, "a sent carbon", isCarbon), stanza.NSPrivilege2)
}

// noCarbon checks that no carbon is committed within a moment.
func noCarbon(t *testing.T, h *bridgetest.Host, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		st, ok := h.Receive(time.Until(deadline))
		if !ok {
			return
		}
		if isCarbon(st) {
			t.Fatalf("%s: got the carbon %s", what, st)
		}
	}
}

// startWithSent starts a mailbox with a Sent mailbox, and a bridge that
// polls every poll, whose server grants the message permission in
// namespace ns ("": none).
func startWithSent(t *testing.T, poll time.Duration, ns string) (*memIMAP, *Bridge, *bridgetest.Host) {
	t.Helper()
	m := startMemIMAP(t)
	if err := m.user.Create("Sent", nil); err != nil {
		t.Fatal(err)
	}
	b, h := startBridge(t, Options{PollInterval: poll}, nil)
	h.MessageNS = ns
	return m, b, h
}

// registerMailbox registers bob@example.org with m and waits for the
// watcher's first look at Sent.
func registerMailbox(t *testing.T, b *Bridge, h *bridgetest.Host, m *memIMAP) string {
	t.Helper()
	ctx := context.Background()
	user := "bob@example.org"
	fields := mailboxValues(m.addr, "secret")
	fields["email"] = "bob@example.net"
	reg, err := b.Register(ctx, user, fields, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.St.PutRegistration(ctx, testDomain, user, reg.Fields, reg.Claims); err != nil {
		t.Fatal(err)
	}
	waitPos(t, b, user, func(imapPos) bool { return true })
	return user
}

func waitSentPos(t *testing.T, b *Bridge, user string, ok func(imapPos) bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if p, found, _ := b.loadPosOf(context.Background(), user, "Sent"); found && ok(p) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the watcher did not record its position in Sent")
}

// A mail the user files in Sent shows in her chat with each recipient as
// her own message (a sent carbon), once: not again after a restart of the
// watcher, nor after a stop between its delivery and its position; a mail
// filed while the watcher is stopped shows when it starts again.
func TestMailboxSentCarbons(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	m.appendTo(t, "Sent", sentMail("before", "carol@example.com", "sent before the registration", time.Now()))
	user := registerMailbox(t, b, h, m)
	waitSentPos(t, b, user, func(p imapPos) bool { return p.LastUID == 1 })

	sent := time.Now().Add(-time.Hour).Truncate(time.Second)
	// Her own address is no chat of hers.
	m.appendTo(t, "Sent", sentMail("s1", "Carol Example <carol@example.com>, BOB@example.net, dave@example.com", "Hello Carol", sent))
	carol := "carol%example.com@" + testDomain
	var got []*xmlel.Element
	for range 2 {
		got = append(got, nextCarbon(t, h))
	}
	in := got[0]
	if in.Attr("from") != user || in.Attr("to") != carol || in.Attr("type") != "chat" {
		t.Fatalf("carbon's message %s, want from %s to %s", in, user, carol)
	}
	if body := in.ChildText("", "body"); body != "*Subject: s1*\n\nHello Carol" {
		t.Fatalf("body %q", body)
	}
	if d := in.Child(stanza.NSDelay, "delay"); d == nil || d.Attr("stamp") != sent.UTC().Format(time.RFC3339) {
		t.Fatalf("carbon of an hour-old mail without its date: %s", in)
	}
	if got[1].Attr("to") != "dave%example.com@"+testDomain || got[1].ChildText("", "body") != in.ChildText("", "body") {
		t.Fatalf("second recipient's carbon %s", got[1])
	}
	// An answer to the carbon answers the sent mail.
	link, err := h.St.MessageByXMPPID(context.Background(), testDomain, user, in.Attr("id"))
	if err != nil || link.ForeignID != "s1@example.net" || link.Peer != "carol@example.com" || link.Thread != in.ChildText("", "thread") {
		t.Fatalf("link of the carbon: %+v, %v", link, err)
	}
	if cs := h.Contacts(); len(cs) == 0 || cs[0] != (bridgetest.Contact{User: user, Local: "carol%example.com", Name: "Carol Example"}) {
		t.Fatalf("contacts %+v, want carol named Carol Example first", cs)
	}

	for _, c := range h.Contacts() {
		if strings.HasPrefix(c.Local, "bob%") {
			t.Fatalf("her own address made a contact: %+v", c)
		}
	}

	// A mail of a moment ago carries no delay.
	m.appendTo(t, "Sent", sentMail("s2", "carol@example.com", "just now", time.Now()))
	if in := nextCarbon(t, h); in.ChildText("", "body") != "*Subject: s2*\n\njust now" || in.Child(stanza.NSDelay, "delay") != nil {
		t.Fatalf("carbon of a fresh mail %s", in)
	}
	waitSentPos(t, b, user, func(p imapPos) bool { return p.LastUID == 3 })

	// A restart resumes: nothing again; a mail filed meanwhile shows
	// (this one without a Message-ID).
	b.stopWatcher(user)
	m.appendTo(t, "Sent", strings.Replace(sentMail("s3", "carol@example.com", "while stopped", time.Now()), "Message-ID: <s3@example.net>\r\n", "", 1))
	b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
	if in := nextCarbon(t, h); in.ChildText("", "body") != "*Subject: s3*\n\nwhile stopped" {
		t.Fatalf("after the restart: %s", in)
	}
	waitSentPos(t, b, user, func(p imapPos) bool { return p.LastUID == 4 })

	// Stopped after the delivery, before the position: read again, not
	// shown again (a mail with a Message-ID is known by it; this one by
	// its delivery's key).
	b.stopWatcher(user)
	p, _, _ := b.loadPosOf(context.Background(), user, "Sent")
	p.LastUID = 3
	if err := b.savePosOf(context.Background(), user, "Sent", p); err != nil {
		t.Fatal(err)
	}
	b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
	h.Logs.Wait(t, `msg="ignored a sent mail shown before"`)
	waitSentPos(t, b, user, func(p imapPos) bool { return p.LastUID == 4 })
	noCarbon(t, h, "a mail read again")
}

// A mail the gateway sent for the user, which her provider filed in Sent,
// is in her chat already: not shown again.
func TestMailboxSentByTheGateway(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	user := registerMailbox(t, b, h, m)
	waitSentPos(t, b, user, func(imapPos) bool { return true })
	err := h.St.PutMessageID(context.Background(), store.MessageID{Domain: testDomain, JID: user, XMPPID: "x1",
		ForeignID: "ours@" + testDomain, Peer: "carol@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	raw := strings.Replace(sentMail("x", "carol@example.com", "written in XMPP", time.Now()), "<x@example.net>", "<ours@"+testDomain+">", 1)
	m.appendTo(t, "Sent", raw)
	h.Logs.Wait(t, `msg="a mail in the Sent mailbox is in the user's chats already"`)
	m.appendTo(t, "Sent", sentMail("y", "carol@example.com", "written in the mail client", time.Now()))
	if in := nextCarbon(t, h); !strings.Contains(in.ChildText("", "body"), "written in the mail client") {
		t.Fatalf("got %s", in)
	}
	noCarbon(t, h, "the gateway's own mail")
}

// Without the message permission nothing is shown, the server is logged
// once, and the mails sent meanwhile do not come all at once when the
// permission comes.
func TestMailboxSentWithoutPermission(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, "")
	user := registerMailbox(t, b, h, m)
	waitSentPos(t, b, user, func(imapPos) bool { return true })
	m.appendTo(t, "Sent", sentMail("n1", "carol@example.com", "not shown", time.Now()))
	waitSentPos(t, b, user, func(p imapPos) bool { return p.LastUID == 1 })
	m.appendTo(t, "Sent", sentMail("n2", "carol@example.com", "not shown either", time.Now()))
	waitSentPos(t, b, user, func(p imapPos) bool { return p.LastUID == 2 })
	noCarbon(t, h, "without the permission")
	const line = `msg="mails users send from their mail client are not shown in their chats: the XMPP server does not grant the message permission (XEP-0356)" server=example.org`
	if n := strings.Count(h.Logs.String(), line); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, h.Logs)
	}
	for _, st := range h.Stanzas() {
		if st.Local == "message" && strings.Contains(st.String(), "not shown") {
			t.Fatalf("the sent mail came some other way: %s", st)
		}
	}

	learn := h.PendingPrivileges()
	learn(stanza.NSPrivilege2)
	m.appendTo(t, "Sent", sentMail("n3", "carol@example.com", "with the permission", time.Now()))
	if in := nextCarbon(t, h); !strings.Contains(in.ChildText("", "body"), "with the permission") {
		t.Fatalf("got %s", in)
	}
	noCarbon(t, h, "the mails sent without the permission")
}

// While the component does not know what the server grants, new sent
// mail waits, and shows as soon as it knows (not at the next renewal).
func TestMailboxSentWaitsForPrivileges(t *testing.T) {
	m, b, h := startWithSent(t, time.Hour, "")
	learn := h.PendingPrivileges()
	user := registerMailbox(t, b, h, m)
	waitSentPos(t, b, user, func(imapPos) bool { return true })
	b.stopWatcher(user)
	m.appendTo(t, "Sent", sentMail("w1", "carol@example.com", "sent before the grants are known", time.Now()))
	b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
	noCarbon(t, h, "the grants unknown")
	if p, _, _ := b.loadPosOf(context.Background(), user, "Sent"); p.LastUID != 0 {
		t.Fatalf("the position moved to %d while the grants were unknown", p.LastUID)
	}
	learn(stanza.NSPrivilege2)
	if in := nextCarbon(t, h); !strings.Contains(in.ChildText("", "body"), "sent before the grants are known") {
		t.Fatalf("got %s", in)
	}
}

// A Sent mailbox renumbered (UIDVALIDITY) starts again from its end: the
// mails in it are not shown again.
func TestMailboxSentRenumbered(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	user := registerMailbox(t, b, h, m)
	m.appendTo(t, "Sent", sentMail("r1", "carol@example.com", "first", time.Now()))
	nextCarbon(t, h)
	waitSentPos(t, b, user, func(p imapPos) bool { return p.LastUID == 1 })
	b.stopWatcher(user)
	m.user.Delete("Sent")
	m.user.Create("Sent", nil)
	m.appendTo(t, "Sent", sentMail("r2", "carol@example.com", "in the renumbered mailbox", time.Now()))
	b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
	h.Logs.Wait(t, `msg="the Sent mailbox changed its UIDVALIDITY: the mails in it are not shown again"`)
	noCarbon(t, h, "a renumbered Sent mailbox")
	m.appendTo(t, "Sent", sentMail("r3", "carol@example.com", "after the renumbering", time.Now()))
	if in := nextCarbon(t, h); !strings.Contains(in.ChildText("", "body"), "after the renumbering") {
		t.Fatalf("got %s", in)
	}
}

// A mailbox without a Sent mailbox is logged once, however often the
// watcher connects again, and its mail is forwarded as always.
func TestMailboxWithoutSent(t *testing.T) {
	m := startMemIMAP(t)
	b, h := startBridge(t, Options{PollInterval: 100 * time.Millisecond}, nil)
	h.MessageNS = stanza.NSPrivilege2
	user := registerMailbox(t, b, h, m)
	const line = `msg="the mailbox has no Sent mailbox (special use \\Sent, or named Sent, Sent Items, Sent Messages or INBOX.Sent): mails the user sends from her mail client are not shown"`
	h.Logs.Wait(t, line)
	m.stop()
	m.restart(t)
	m.appendMail(t, "inbound", "still forwarded")
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "still forwarded") {
		t.Fatalf("got %s", st)
	}
	if n := strings.Count(h.Logs.String(), line); n != 1 {
		t.Fatalf("logged %d times, want once", n)
	}
	if _, ok, _ := b.loadPosOf(context.Background(), user, "Sent"); ok {
		t.Fatal("a position kept for a Sent mailbox that does not exist")
	}
}

// A recipient without an address on the gateway is left out; a mail
// without any other is not shown.
func TestMailboxSentRecipients(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	user := registerMailbox(t, b, h, m)
	waitSentPos(t, b, user, func(imapPos) bool { return true })
	odd := `" x"@example.com`
	m.appendTo(t, "Sent", sentMail("q1", odd, "to nobody the gateway can name", time.Now()))
	h.Logs.Wait(t, `msg="a mail in the Sent mailbox has no recipient to show it to"`)
	m.appendTo(t, "Sent", sentMail("q2", odd+", carol@example.com", "to carol", time.Now()))
	if in := nextCarbon(t, h); in.Attr("to") != "carol%example.com@"+testDomain || !strings.Contains(in.ChildText("", "body"), "to carol") {
		t.Fatalf("got %s", in)
	}
	if n := strings.Count(h.Logs.String(), `msg="a recipient of a sent mail has no address on the gateway: not shown"`); n != 2 {
		t.Fatalf("the odd recipient logged %d times, want twice", n)
	}
	noCarbon(t, h, "the odd recipient")
}

// A Sent mailbox that goes away is left out (its STATUS fails) without
// ending the session: INBOX is forwarded as always; the next session
// finds none.
func TestMailboxSentDeleted(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	registerMailbox(t, b, h, m)
	// Once a mail is forwarded, the watcher's session has found Sent.
	m.appendMail(t, "first", "found Sent")
	nextChat(t, h)
	if err := m.user.Delete("Sent"); err != nil {
		t.Fatal(err)
	}
	h.Logs.Wait(t, `msg="the Sent mailbox cannot be read: mails the user sends from her mail client are not shown until it can" user=bob@example.org`)
	m.appendMail(t, "inbound", "still forwarded")
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "still forwarded") {
		t.Fatalf("got %s", st)
	}
	if strings.Contains(h.Logs.String(), `msg="mailbox connection ended; reconnecting"`) {
		t.Fatalf("the session ended for the Sent mailbox:\n%s", h.Logs)
	}
	m.stop()
	m.restart(t)
	h.Logs.Wait(t, `msg="the mailbox has no Sent mailbox`)
}

// sentFaults is a server session that refuses the LIST, the STATUS or the
// SELECT of the Sent mailbox (as a server whose access rights let the
// user see it but not read it).
type sentFaults struct {
	imapserver.Session
	list, status, sel bool
	bareStatus        bool // a STATUS without UIDNEXT and UIDVALIDITY
}

func refused() error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNoPerm, Text: "permission denied"}
}

func (s sentFaults) List(w *imapserver.ListWriter, ref string, patterns []string, opts *imap.ListOptions) error {
	if s.list {
		return refused()
	}
	return s.Session.List(w, ref, patterns, opts)
}

func (s sentFaults) Status(mailbox string, opts *imap.StatusOptions) (*imap.StatusData, error) {
	if s.status && mailbox == "Sent" {
		return nil, refused()
	}
	if s.bareStatus && mailbox == "Sent" {
		return &imap.StatusData{Mailbox: mailbox}, nil
	}
	return s.Session.Status(mailbox, opts)
}

func (s sentFaults) Select(mailbox string, opts *imap.SelectOptions) (*imap.SelectData, error) {
	if s.sel && mailbox == "Sent" {
		return nil, refused()
	}
	return s.Session.Select(mailbox, opts)
}

// A server that refuses to list, to look at or to open the Sent mailbox,
// or whose STATUS of it lacks UIDNEXT and UIDVALIDITY, does not keep the user from registering, nor her INBOX from being
// forwarded: Sent is left out, said once, and the connection stays.
func TestMailboxSentRefused(t *testing.T) {
	for _, fault := range []sentFaults{{list: true}, {status: true}, {sel: true}, {bareStatus: true}} {
		name := map[bool]string{true: "LIST"}[fault.list] + map[bool]string{true: "STATUS"}[fault.status] +
			map[bool]string{true: "SELECT"}[fault.sel] + map[bool]string{true: "bare STATUS"}[fault.bareStatus]
		t.Run(name, func(t *testing.T) {
			m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
			m.mu.Lock()
			m.wrap = func(s imapserver.Session) imapserver.Session { f := fault; f.Session = s; return f }
			m.mu.Unlock()
			user := registerMailbox(t, b, h, m)
			if !fault.sel {
				h.Logs.Wait(t, `msg="the Sent mailbox could not be read at registration; its watcher starts from its end when it can" user=bob@example.org`)
			} else {
				// Looked at, not opened: the mail waits.
				waitSentPos(t, b, user, func(imapPos) bool { return true })
				m.appendTo(t, "Sent", sentMail("f1", "carol@example.com", "in a Sent mailbox that cannot be opened", time.Now()))
			}
			const line = `msg="the Sent mailbox cannot be read: mails the user sends from her mail client are not shown until it can" user=bob@example.org`
			h.Logs.Wait(t, line)
			for _, subject := range []string{"one", "two"} {
				m.appendMail(t, subject, "forwarded all the same")
				if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), subject) {
					t.Fatalf("got %s", st)
				}
			}
			if strings.Contains(h.Logs.String(), `msg="mailbox connection ended; reconnecting"`) {
				t.Fatalf("the session ended for the Sent mailbox:\n%s", h.Logs)
			}
			if n := strings.Count(h.Logs.String(), line); n != 1 {
				t.Fatalf("logged %d times, want once:\n%s", n, h.Logs)
			}
			if p, _, _ := b.loadPosOf(context.Background(), user, "Sent"); p.LastUID != 0 {
				t.Fatalf("the position in Sent moved to %d", p.LastUID)
			}
			noCarbon(t, h, "a Sent mailbox that cannot be read")
		})
	}
}

// INBOX renumbered while the watcher read Sent: the session ends, and the
// next one starts INBOX from its new end and tells the user, as for a
// renumbering found at the start.
func TestMailboxRenumberedWhileReadingSent(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	user := registerMailbox(t, b, h, m)
	waitSentPos(t, b, user, func(imapPos) bool { return true })
	var once sync.Once
	h.OnCommit(func(context.Context) {
		once.Do(func() {
			m.user.Delete("INBOX")
			m.user.Create("INBOX", nil)
		})
	})
	m.appendTo(t, "Sent", sentMail("v1", "carol@example.com", "while INBOX is renumbered", time.Now()))
	nextCarbon(t, h)
	h.Logs.Wait(t, `msg="mailbox connection ended; reconnecting" user=bob@example.org`)
	st := nextChat(t, h)
	if st.Attr("from") != testDomain || !strings.Contains(st.ChildText("", "body"), "UIDVALIDITY") {
		t.Fatalf("got %s", st)
	}
	if !strings.Contains(h.Logs.String(), "INBOX changed its UIDVALIDITY") {
		t.Fatalf("the session did not end for the renumbering:\n%s", h.Logs)
	}
}

// A mail she sent to others and to herself (a Cc, or a list that sends
// her post back) comes into INBOX, and is forwarded from her address, as
// well as into Sent: its carbons still show it to the others.
func TestMailboxSentCcSelf(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	user := registerMailbox(t, b, h, m)
	waitSentPos(t, b, user, func(imapPos) bool { return true })
	raw := strings.Replace(sentMail("cc", "carol@example.com", "to carol and to me", time.Now()), "\r\nSubject:", "\r\nCc: Bob <bob@example.net>\r\nSubject:", 1)
	m.appendTo(t, "INBOX", raw)
	if st := nextChat(t, h); st.Attr("from") != "bob%example.net@"+testDomain || !strings.Contains(st.ChildText("", "body"), "to carol and to me") {
		t.Fatalf("the INBOX copy: %s", st)
	}
	m.appendTo(t, "Sent", raw)
	if in := nextCarbon(t, h); in.Attr("to") != "carol%example.com@"+testDomain || !strings.Contains(in.ChildText("", "body"), "to carol and to me") {
		t.Fatalf("got %s", in)
	}
	noCarbon(t, h, "her own address")
}

// A mail to many shows in the chats of the first maxSentRecipients of
// them, and says once how many were left out.
func TestMailboxSentManyRecipients(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	user := registerMailbox(t, b, h, m)
	waitSentPos(t, b, user, func(imapPos) bool { return true })
	var to []string
	for i := range maxSentRecipients + 5 {
		to = append(to, fmt.Sprintf("r%d@example.com", i))
	}
	m.appendTo(t, "Sent", sentMail("many", strings.Join(to, ", "), "to a crowd", time.Now()))
	for i := range maxSentRecipients {
		if in := nextCarbon(t, h); in.Attr("to") != fmt.Sprintf("r%d%%example.com@%s", i, testDomain) {
			t.Fatalf("carbon %d: %s", i, in)
		}
	}
	noCarbon(t, h, "the recipients past the cap")
	const line = `msg="a mail in the Sent mailbox has more recipients than are shown" user=bob@example.org message_id=many@example.net recipients=25 shown=20`
	if n := strings.Count(h.Logs.String(), line); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, h.Logs)
	}
	if n := len(h.Contacts()); n != maxSentRecipients {
		t.Fatalf("%d contacts, want %d", n, maxSentRecipients)
	}
}

// idleSignal is a server session that says when a client starts IDLE.
type idleSignal struct {
	imapserver.Session
	idling chan<- struct{}
}

func (s idleSignal) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	select {
	case s.idling <- struct{}{}:
	default:
	}
	return s.Session.Idle(w, stop)
}

// A mail that comes into INBOX while the watcher reads Sent is forwarded
// at once: its EXISTS comes in the answer to the SELECT of INBOX, which
// wakes no IDLE, and the next renewal is an hour away.
func TestMailboxInboxWhileReadingSent(t *testing.T) {
	m, b, h := startWithSent(t, time.Hour, stanza.NSPrivilege2)
	idling := make(chan struct{}, 1)
	m.mu.Lock()
	m.wrap = func(s imapserver.Session) imapserver.Session { return idleSignal{s, idling} }
	m.mu.Unlock()
	registerMailbox(t, b, h, m)
	select {
	case <-idling: // the first round is over, Sent looked at
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher did not reach IDLE")
	}
	// The commits: the mail that wakes the watcher, then the carbon
	// (Sent selected).
	var mu sync.Mutex
	commits := 0
	h.OnCommit(func(context.Context) {
		mu.Lock()
		commits++
		n := commits
		mu.Unlock()
		if n == 2 {
			m.appendMail(t, "late", "came while Sent was read")
		}
	})
	m.appendTo(t, "Sent", sentMail("u1", "carol@example.com", "read with INBOX's next mail", time.Now()))
	m.appendMail(t, "wake", "wakes the watcher") // Sent alone wakes no IDLE
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "wakes the watcher") {
		t.Fatalf("got %s", st)
	}
	nextCarbon(t, h)
	if st := nextChat(t, h); !strings.Contains(st.ChildText("", "body"), "came while Sent was read") {
		t.Fatalf("got %s", st)
	}
}

// A user registered before the gateway read Sent has no position in it:
// the watcher starts from its end, and shows none of the mails already
// in it, only those that come after.
func TestMailboxSentUpgrade(t *testing.T) {
	m, b, h := startWithSent(t, 100*time.Millisecond, stanza.NSPrivilege2)
	for _, id := range []string{"old1", "old2"} {
		m.appendTo(t, "Sent", sentMail(id, "carol@example.com", "sent long before", time.Now()))
	}
	// The registration as it was kept: the INBOX position alone.
	ctx := context.Background()
	user := "bob@example.org"
	fields := mailboxValues(m.addr, "secret")
	fields["email"] = "bob@example.net"
	if err := h.St.PutRegistration(ctx, testDomain, user, fields, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	c, err := imapclient.DialInsecure(m.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login("bob", "secret").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.savePos(ctx, user, startPos(sel)); err != nil {
		t.Fatal(err)
	}

	b.startWatcher(user, mailboxConfig{IMAPServer: m.addr, IMAPUser: "bob", IMAPPassword: "secret"})
	waitSentPos(t, b, user, func(p imapPos) bool { return p.LastUID == 2 })
	noCarbon(t, h, "the mails in Sent before the upgrade")
	m.appendTo(t, "Sent", sentMail("new", "carol@example.com", "sent after the upgrade", time.Now()))
	if in := nextCarbon(t, h); !strings.Contains(in.ChildText("", "body"), "sent after the upgrade") {
		t.Fatalf("got %s", in)
	}
	noCarbon(t, h, "the mails in Sent before the upgrade")
}

// Without the \Sent special use, the Sent mailbox is found by the names
// mail clients give it.
func TestMailboxSentFallbackNames(t *testing.T) {
	for _, name := range []string{"Sent Items", "Sent Messages", "INBOX.Sent"} {
		t.Run(name, func(t *testing.T) {
			m := startMemIMAP(t)
			if err := m.user.Create(name, nil); err != nil {
				t.Fatal(err)
			}
			b, h := startBridge(t, Options{PollInterval: 100 * time.Millisecond}, nil)
			h.MessageNS = stanza.NSPrivilege2
			user := registerMailbox(t, b, h, m)
			for i := 0; ; i++ {
				if _, ok, _ := b.loadPosOf(context.Background(), user, name); ok {
					break
				}
				if i == 1000 {
					t.Fatal("no position kept in " + name)
				}
				time.Sleep(10 * time.Millisecond)
			}
			m.appendTo(t, name, sentMail("n", "carol@example.com", "filed in "+name, time.Now()))
			if in := nextCarbon(t, h); !strings.Contains(in.ChildText("", "body"), "filed in "+name) {
				t.Fatalf("got %s", in)
			}
		})
	}
}
