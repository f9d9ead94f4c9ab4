package main

// End-to-end test of a database that cannot be written: the gateway's
// SQLite file lives on a small tmpfs that the test fills.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
	"passerelle/store"
)

// smallDisk mounts a tmpfs of size bytes on a new directory and unmounts
// it at cleanup (after the gateway, started later, has been killed).
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	// A short write may leave less than a chunk: fill that too.
	for {
		if _, err := f.Write(chunk[:512]); err != nil {
			break
		}
	}
	return path
}

// metric returns the value of one series of /metrics (-1 when absent).
func (e *gwEnv) metric(name, domain string) int {
	resp, err := http.Get("http://" + e.env["PASSERELLE_HTTP_LISTEN"] + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(fmt.Sprintf("%s{domain=%q}", name, domain)) + ` (\d+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// waitUntil polls cond every 50 ms until it holds or timeout passes, and
// reports whether it held.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// copies counts the messages c received from from whose body contains substr.
func copies(c *harness.Client, from, substr string) int {
	n := 0
	match := mailFrom(from, substr)
	for _, e := range c.Received() {
		if match(e) {
			n++
		}
	}
	return n
}

// Mail queued while Prosody is down, then a full disk, then Prosody back:
// each queued stanza reaches alice once (the store cannot remove what was
// sent), the log does not grow by an ERROR line per attempt, /healthz says
// why it is unhealthy, inbound SMTP gets 451 and an SMS webhook 503; once
// the disk has room again the outbox drains, /healthz recovers and what
// was refused meanwhile is taken when offered again.
func TestStoreFailure(t *testing.T) {
	disk := smallDisk(t, 8<<20)
	srv := startServer(t, "prosody")
	dbPath := filepath.Join(disk, "passerelle.db")
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	e := startSMS(t, srv, func(env map[string]string) {
		env["PASSERELLE_EMAIL_DOMAIN"] = mailDomain
		env["PASSERELLE_SMTP_LISTEN"] = smtpAddr
		env["PASSERELLE_DB"] = dbPath
	})
	alice := e.dial(t, "alice@localhost")
	wantResult(t, register(alice, t, mailDomain, "address", "alice"), "alice registers a mailbox")
	acceptGateway(t, alice, mailDomain)
	wantResult(t, register(alice, t, smsDomain, "number", aliceNumber), "alice claims a number")
	acceptGateway(t, alice, smsDomain)
	bob := "bob%example.com@" + mailDomain
	rcpt := []string{"alice@" + mailDomain}
	mail := func(i int) string {
		return fmt.Sprintf("From: Bob <bob@example.com>\nTo: alice@mail.localhost\nSubject: outage %d\nMessage-ID: <outage-%d@example.com>\n\noutage mail %d.\n", i, i, i)
	}

	// Prosody stops; ten mails wait in the outbox.
	srv.Stop(t)
	if !waitUntil(wait, func() bool { c, _ := e.health(); return c == http.StatusServiceUnavailable }) {
		t.Fatal("/healthz still ok with Prosody stopped")
	}
	const queued = 10
	for i := range queued {
		if err := sendMail(smtpAddr, "bob@example.com", rcpt, mail(i)); err != nil {
			t.Fatalf("mail %d while Prosody is down: %v", i, err)
		}
	}

	// The disk fills; Prosody comes back.
	filler := fillDisk(t, disk)
	errorsBefore := linesWith(e.gw.Output(), "level=ERROR")
	connected := linesWith(e.gw.Output(), `msg="connected to the XMPP server" component=`+mailDomain)
	srv.Start(t)
	alice = harness.Dial(t, srv.C2SAddr(), "alice@localhost", e.passwords["alice@localhost"], "test")
	alice.Send(t, "<presence/>")
	for i := range queued {
		alice.Expect(t, 30*time.Second, fmt.Sprintf("queued mail %d", i), mailFrom(bob, fmt.Sprintf("outage mail %d.", i)))
	}
	if !waitUntil(wait, func() bool {
		return linesWith(e.gw.Output(), `msg="connected to the XMPP server" component=`+mailDomain) > connected
	}) {
		t.Fatal("the gateway did not reconnect")
	}

	// While the disk is full: no more copies over a few removal attempts
	// (at most 20 s when the gateway does not count them).
	waitUntil(20*time.Second, func() bool { return e.metric("passerelle_outbox_store_errors_total", mailDomain) >= 3 })
	var dup []string
	total := 0
	for i := range queued {
		n := copies(alice, bob, fmt.Sprintf("outage mail %d.", i))
		total += n
		if n != 1 {
			dup = append(dup, fmt.Sprintf("mail %d: %d copies", i, n))
		}
	}
	nErrors := linesWith(e.gw.Output(), "level=ERROR") - errorsBefore
	t.Logf("with the disk full: %d copies of %d queued mails, %d ERROR lines, %d outbox store errors counted",
		total, queued, nErrors, e.metric("passerelle_outbox_store_errors_total", mailDomain))
	if len(dup) > 0 {
		t.Errorf("with the disk full, alice received queued mails more than once: %s", strings.Join(dup, ", "))
	}
	if nErrors > 5 {
		t.Errorf("with the disk full, the gateway logged %d ERROR lines", nErrors)
	}
	code, body := e.health()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "database") {
		t.Errorf("/healthz with the disk full: %d %q, want 503 naming the database", code, body)
	}
	if err := sendMail(smtpAddr, "bob@example.com", rcpt, mail(queued)); smtpCode(err) != 451 {
		t.Errorf("mail with the disk full: %v, want 451", err)
	}
	const sid, text = "SMfull0000000000000000000000000001", "text while the disk is full"
	if code, ans := e.inbound(t, sid, contact, aliceNumber, text); code != http.StatusServiceUnavailable {
		t.Errorf("inbound text with the disk full: %d %q, want 503", code, ans)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The disk has room again: the outbox drains, /healthz recovers, and
	// what was refused is taken when offered again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(wait, func() bool { c, _ := e.health(); return c == http.StatusOK }) {
		code, body := e.health()
		t.Fatalf("/healthz after the disk was freed: %d %q", code, body)
	}
	st, err := store.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	drained := func() bool {
		n, err := st.CountStanzas(context.Background(), mailDomain)
		return err == nil && n == 0
	}
	if !waitUntil(30*time.Second, drained) {
		n, err := st.CountStanzas(context.Background(), mailDomain)
		t.Fatalf("the outbox still holds %d stanzas (%v) after the disk was freed", n, err)
	}
	if err := sendMail(smtpAddr, "bob@example.com", rcpt, mail(queued)); err != nil {
		t.Fatalf("the refused mail offered again: %v", err)
	}
	if code, ans := e.inbound(t, sid, contact, aliceNumber, text); code != http.StatusOK {
		t.Fatalf("the refused text offered again: %d %q", code, ans)
	}
	alice.Expect(t, wait, "the mail refused while the disk was full", mailFrom(bob, fmt.Sprintf("outage mail %d.", queued)))
	alice.Expect(t, wait, "the text refused while the disk was full", func(el *xmlel.Element) bool {
		return harness.IsMessage(el) && harness.Bare(el.Attr("from")) == contact+"@"+smsDomain &&
			el.ChildText("", "body") == text
	})
	if !waitUntil(wait, drained) {
		t.Fatal("the outbox did not drain again")
	}
	for i := range queued + 1 {
		if n := copies(alice, bob, fmt.Sprintf("outage mail %d.", i)); n != 1 {
			t.Errorf("mail %d: %d copies in the end, want 1", i, n)
		}
	}
}
