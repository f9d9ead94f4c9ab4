package email

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"passerelle/component/xmlel"
)

func TestParseMail(t *testing.T) {
	cases := []struct {
		name, raw           string
		from, subject, text string
		atts                int
	}{
		{"plain", "From: Bob <bob@example.com>\r\nSubject: Hi\r\nMessage-ID: <a@b>\r\n\r\nHello\r\n", "bob@example.com", "Hi", "Hello", 0},
		{"latin1 qp", "From: b@example.com\nSubject: =?iso-8859-1?q?K=F6ln?=\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\nK=F6ln=\n am Rhein\n", "b@example.com", "Köln", "Köln am Rhein", 0},
		{"windows-1252 base64", "From: b@example.com\nContent-Type: text/plain; charset=windows-1252\nContent-Transfer-Encoding: base64\n\ngJMgcXVvdGVzIJQ=\n", "b@example.com", "", "€“ quotes ”", 0},
		{"unknown charset", "From: b@example.com\nContent-Type: text/plain; charset=x-klingon\n\nplain ascii\n", "b@example.com", "", "plain ascii", 0},
		{"html only", "From: b@example.com\nContent-Type: text/html\n\n<p>One</p><p>Two &amp; <a href=\"https://x.org/\">three</a></p><script>evil()</script>", "b@example.com", "", "One\n\nTwo & three <https://x.org/>", 0},
		{"nested", "From: b@example.com\nContent-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\nContent-Type: text/plain\n\ntext part\n--i\nContent-Type: text/html\n\n<b>html part</b>\n--i--\n--o\nContent-Type: image/png\nContent-Disposition: attachment; filename=\"a b.png\"\n\nPNGDATA\n--o--\n", "b@example.com", "", "text part", 1},
		{"no mime body", "From: b@example.com\nContent-Type: multipart/mixed; boundary=zz\n\nno parts at all\n", "b@example.com", "", "", 0},
		{"bad from", "From: not an address\n\nbody\n", "not an address", "", "body", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := ParseMail([]byte(c.raw))
			if err != nil {
				t.Fatal(err)
			}
			if p.From != c.from || p.Subject != c.subject || len(p.Attachments) != c.atts {
				t.Errorf("got from %q subject %q attachments %v", p.From, p.Subject, p.Attachments)
			}
			if c.text != "" && p.Text != c.text {
				t.Errorf("text %q, want %q", p.Text, c.text)
			}
		})
	}
}

func TestHTMLToText(t *testing.T) {
	got := HTMLToText("<html><head><title>T</title><style>x{}</style></head><body>Hello<br>world<ul><li>one</li><li>two</li></ul>end</body></html>")
	want := "Hello\nworld\n\n• one\n• two\n\nend"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// Line breaks: trailing spaces go, runs of block tags give at most one
// blank line, links keep their target once.
func TestHTMLToTextBreaks(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a   <br><br><br>b", "a\nb"},
		{"<p>a </p><p></p><div><p>b</p></div>", "a\n\nb"},
		{"<br><p>x</p>", "x"},
		{"<td>a</td><td>b</td><tr>c", "a b\nc"},
		{`<a href="https://e.com/x">https://e.com/x</a> and <a href="https://e.com/y">y</a>`, "https://e.com/x and y <https://e.com/y>"},
		{strings.Repeat("x<br>", 3000), strings.TrimSuffix(strings.Repeat("x\n", 3000), "\n")},
	} {
		if got := HTMLToText(c.in); got != c.want {
			t.Errorf("HTMLToText(%.40q) = %.60q, want %.60q", c.in, got, c.want)
		}
	}
}

func TestThreads(t *testing.T) {
	b, h := startBridge(t, Options{}, nil)
	ctx := context.Background()
	user := "alice@example.org"
	first := "From: bob@example.com\nSubject: Plans\nMessage-ID: <one@example.com>\n\nfirst\n"
	if err := b.deliverMail(ctx, user, "", []byte(first)); err != nil {
		t.Fatal(err)
	}
	m1 := h.Next(t)
	reply := "From: carol@example.com\nSubject: Re: Plans\nMessage-ID: <two@example.com>\nIn-Reply-To: <one@example.com>\nReferences: <one@example.com>\n\nsecond\n"
	if err := b.deliverMail(ctx, user, "", []byte(reply)); err != nil {
		t.Fatal(err)
	}
	m2 := h.Next(t)
	if m1.ChildText("", "thread") == "" || m1.ChildText("", "thread") != m2.ChildText("", "thread") {
		t.Fatalf("threads %q %q", m1.ChildText("", "thread"), m2.ChildText("", "thread"))
	}
	other := "From: bob@example.com\nSubject: Other\nMessage-ID: <three@example.com>\n\nthird\n"
	b.deliverMail(ctx, user, "", []byte(other))
	if m3 := h.Next(t); m3.ChildText("", "thread") == m1.ChildText("", "thread") {
		t.Fatal("a new conversation in an old thread")
	}
	// The sender's spelling is kept for answers.
	b.deliverMail(ctx, user, "", []byte("From: O'Hara.Big@Example.COM\n\nhi\n"))
	m4 := h.Next(t)
	addr, err := b.contactAddress(ctx, strings.ToLower(strings.Split(m4.Attr("from"), "@")[0]))
	if err != nil || addr != "O'Hara.Big@Example.COM" {
		t.Fatalf("got %q %v from %s", addr, err, m4.Attr("from"))
	}
	// A sender that cannot be addressed comes from the gateway itself.
	b.deliverMail(ctx, user, "", []byte("From: nobody\n\nwho am I\n"))
	if m5 := h.Next(t); m5.Attr("from") != testDomain || !strings.Contains(m5.ChildText("", "body"), "who am I") {
		t.Fatalf("got %s", m5)
	}
}

// FuzzParseMail: any bytes give a valid stanza. The fuzzer minimizes each
// input that reaches new code and counts none of those runs, so its
// progress line shows 0 execs/sec meanwhile; bound the minimization to keep
// it fuzzing: go test -run '^$' -fuzz FuzzParseMail -fuzzminimizetime=200x
func FuzzParseMail(f *testing.F) {
	for _, s := range []string{
		"From: a@b.c\r\nSubject: x\r\n\r\nbody",
		"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html; charset=utf-16\n\n<p>x\n--x--",
		"Subject: =?utf-8?b?8J+Ygg==?=\nContent-Transfer-Encoding: base64\n\n!!!!",
		"From: <<<@>>>\nReferences: <a> <b> <<c>\n\n\x00\xff",
		"Content-Type: multipart/alternative; boundary=\"\"\n\n",
	} {
		f.Add([]byte(s))
	}
	// HTML reduction once copied its whole output at each block tag:
	// seconds of CPU for 256 kB of them (BenchmarkHTMLToTextManyTags). The
	// seeds stay small: the fuzzer minimizes every input that finds new
	// code, at one run per removed byte.
	f.Add([]byte("Content-Type: text/html\r\n\r\n" + strings.Repeat("x<br>", 400)))
	f.Add([]byte("Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n" +
		strings.Repeat("<li>a</li><p>", 150) + "\r\n--b--\r\n"))
	b := New(Options{Domain: testDomain})
	h := newFakeHost(f, b)
	b.host = h
	f.Fuzz(func(t *testing.T, raw []byte) {
		msg, link, _, _ := b.BuildInbound(context.Background(), "alice@example.org", "env@example.com", raw, false)
		body := msg.ChildText("", "body")
		if body == "" || !utf8.ValidString(body) || !utf8.ValidString(msg.ChildText("", "subject")) {
			t.Fatalf("bad body %q", body)
		}
		for _, r := range body + msg.ChildText("", "subject") {
			if !xmlel.ValidXMLChar(r) {
				t.Fatalf("invalid XML character %U", r)
			}
		}
		if _, err := xmlel.Parse(msg.String()); err != nil {
			t.Fatalf("stanza does not parse: %v\n%s", err, msg)
		}
		if link.Thread == "" || link.ForeignID == "" {
			t.Fatalf("link %+v", link)
		}
	})
}

func TestUploadFailureKeepsTheListing(t *testing.T) {
	b, h := startBridge(t, Options{}, nil)
	b.upload.jid = "upload.example.org" // announced, but every IQ fails here
	raw := "From: bob@example.com\nContent-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\nsee attached\n--m\nContent-Type: image/png\nContent-Disposition: attachment; filename=a.png\n\nPNG\n--m--\n"
	if err := b.deliverMail(context.Background(), "alice@example.org", "", []byte(raw)); err != nil {
		t.Fatal(err)
	}
	st := h.Next(t)
	if !strings.Contains(st.ChildText("", "body"), "📎 a.png (") || st.Child("jabber:x:oob", "x") != nil {
		t.Fatalf("got %s", st)
	}
}

// The subject is the body's first line, emphasised, as well as <subject>:
// many clients show only the body of a chat message.
func TestSubjectInBody(t *testing.T) {
	b := New(Options{Domain: testDomain})
	b.host = newFakeHost(t, b)
	cases := []struct {
		raw        string
		unverified bool
		want       string
	}{
		{"From: bob@example.com\nSubject: Lunch\n\ntomorrow?\n", false, "*Subject: Lunch*\n\ntomorrow?"},
		{"From: bob@example.com\nSubject:  Two\n  lines \n\nx\n", true, unverifiedMark + "\n*Subject: Two lines*\n\nx"},
		{"From: <<<@>>>\nSubject: Who\n\nhi\n", false, "Mail from @\n\n*Subject: Who*\n\nhi"},
		{"From: bob@example.com\n\nno subject\n", false, "no subject"},
		{"From: bob@example.com\nSubject:  \n\nblank subject\n", false, "blank subject"},
	}
	for _, c := range cases {
		msg, _, _, _ := b.BuildInbound(context.Background(), "alice@example.org", "", []byte(c.raw), c.unverified)
		if body := strings.TrimRight(msg.ChildText("", "body"), "\n"); body != c.want {
			t.Errorf("%q: body %q, want %q", c.raw, body, c.want)
		}
	}
	msg, _, _, _ := b.BuildInbound(context.Background(), "alice@example.org", "", []byte(cases[0].raw), false)
	if s := msg.ChildText("", "subject"); s != "Lunch" {
		t.Errorf("<subject> %q", s)
	}
}
