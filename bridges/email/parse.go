package email

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	_ "github.com/emersion/go-message/charset" // decoders for non-UTF-8 charsets
	"github.com/emersion/go-message/mail"

	"passerelle/component/xmlel"
)

// maxBodyText bounds the text taken from one mail for the message body.
const maxBodyText = 256 << 10

// Recipient is an address a mail was sent to, with its display name.
type Recipient struct{ Addr, Name string }

// Attachment is a named non-text part of a mail.
type Attachment struct {
	Name        string
	ContentType string
	Size        int64
	Data        []byte // kept only while the mail is delivered
}

// Parsed is what a mail turns into on the XMPP side.
type Parsed struct {
	From        string // sender address (addr-spec), "" when none is readable
	FromName    string
	Subject     string
	MessageID   string      // without angle brackets
	References  []string    // References, then In-Reply-To, oldest first, without duplicates
	To          []Recipient // To, then Cc, without duplicates
	Date        time.Time   // zero when none is readable
	Text        string
	Attachments []Attachment
}

// ParseMail reads a mail of any charset and transfer encoding and keeps what
// a chat message can show: the sender, the subject, the text (text/plain,
// else HTML reduced to text) and the names and sizes of the attachments.
// A malformed mail is read as far as possible; only a mail without even a
// header block is an error.
func ParseMail(raw []byte) (*Parsed, error) {
	mr, err := mail.CreateReader(bytes.NewReader(raw))
	if mr == nil {
		return nil, fmt.Errorf("failed to read the mail header: %w", err)
	}
	p := &Parsed{}
	h := mr.Header
	if list, err := h.AddressList("From"); err == nil && len(list) > 0 {
		p.From, p.FromName = list[0].Address, list[0].Name
	} else if v := strings.TrimSpace(h.Get("From")); v != "" {
		p.From = bareAddress(v)
	}
	if s, err := h.Subject(); err == nil {
		p.Subject = s
	} else {
		p.Subject = h.Get("Subject")
	}
	p.Subject = oneLine(p.Subject)
	p.MessageID, _ = h.MessageID()
	refs, _ := h.MsgIDList("References")
	irt, _ := h.MsgIDList("In-Reply-To")
	seen := map[string]bool{}
	for _, r := range append(refs, irt...) {
		if r != "" && !seen[r] {
			seen[r] = true
			p.References = append(p.References, r)
		}
	}

	seenTo := map[string]bool{}
	for _, f := range []string{"To", "Cc"} {
		list, _ := h.AddressList(f)
		for _, a := range list {
			if k := strings.ToLower(a.Address); a.Address != "" && !seenTo[k] {
				seenTo[k] = true
				p.To = append(p.To, Recipient{Addr: a.Address, Name: oneLine(a.Name)})
			}
		}
	}
	p.Date, _ = h.Date()

	var plain, html strings.Builder
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if part == nil {
			if p.Text == "" && plain.Len() == 0 && html.Len() == 0 {
				// A body that is not valid MIME: show it as it is.
				plain.WriteString(rawBody(raw))
			}
			break
		}
		switch ph := part.Header.(type) {
		case *mail.InlineHeader:
			t, _, _ := ph.ContentType()
			body, _ := io.ReadAll(io.LimitReader(part.Body, maxBodyText))
			switch {
			case t == "text/html":
				html.WriteString(HTMLToText(string(body)))
			case t == "" || strings.HasPrefix(t, "text/"):
				if plain.Len() > 0 {
					plain.WriteString("\n\n")
				}
				plain.Write(body)
			}
		case *mail.AttachmentHeader:
			name, _ := ph.Filename()
			t, _, _ := ph.ContentType()
			data, _ := io.ReadAll(part.Body)
			if name == "" {
				name = "unnamed"
			}
			p.Attachments = append(p.Attachments, Attachment{Name: oneLine(name), ContentType: t, Size: int64(len(data)), Data: data})
		}
	}
	if plain.Len() > 0 {
		p.Text = plain.String()
	} else {
		p.Text = html.String()
	}
	p.Text = cleanText(p.Text)
	return p, nil
}

// rawBody returns what follows the header block of raw.
func rawBody(raw []byte) string {
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if i := bytes.Index(raw, []byte(sep)); i >= 0 {
			return string(raw[i+len(sep):])
		}
	}
	return ""
}

// bareAddress extracts user@host from a From value net/mail cannot parse.
func bareAddress(v string) string {
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.TrimSpace(v[i+1 : i+j])
		}
	}
	return strings.TrimSpace(v)
}

// cleanText makes text valid UTF-8 without characters XML cannot carry,
// with LF line ends and no trailing blank lines.
func cleanText(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = xmlel.CleanText(s)
	if len(s) > maxBodyText {
		s = strings.ToValidUTF8(s[:maxBodyText], "") + "\n[…]"
	}
	return strings.TrimRight(s, " \t\n")
}

func oneLine(s string) string {
	s = cleanText(s)
	return strings.Join(strings.Fields(s), " ")
}

// Describe lists attachments for the message body.
func (a Attachment) Describe() string {
	return fmt.Sprintf("📎 %s (%s)", a.Name, humanSize(a.Size))
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
