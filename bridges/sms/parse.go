package sms

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"passerelle/component/xmlel"
	"passerelle/mapping"
)

// maxMedia bounds the attachments of one inbound text (Twilio allows 10).
const maxMedia = 10

// Inbound is a text received through the inbound webhook.
type Inbound struct {
	SID   string
	From  string // E.164, a short code, or the sender's alphanumeric id
	To    string // E.164: one of the gateway's numbers
	Body  string
	Media []string
}

// Status is a delivery report received through the status webhook.
type Status struct {
	SID          string
	Status       string // queued, sent, delivered, undelivered, failed, ...
	ErrorCode    string
	ErrorMessage string
}

var errBadWebhook = errors.New("bad webhook")

func badWebhook(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadWebhook, fmt.Sprintf(format, args...))
}

// parseInbound reads an inbound-text webhook's parameters.
func parseInbound(p url.Values, region string) (*Inbound, error) {
	in := &Inbound{SID: strings.TrimSpace(p.Get("MessageSid")), Body: p.Get("Body")}
	if in.SID == "" {
		in.SID = strings.TrimSpace(p.Get("SmsSid"))
	}
	to, err := mapping.NormalizeNumber(p.Get("To"), region)
	if err != nil {
		return nil, badWebhook("To %q: %v", p.Get("To"), err)
	}
	in.To = to
	from := strings.TrimSpace(p.Get("From"))
	if from == "" {
		return nil, badWebhook("no From")
	}
	if n, err := mapping.NormalizeNumber(from, region); err == nil {
		in.From = n
	} else if in.From = senderID(from); in.From == "" {
		return nil, badWebhook("From %q is neither a number nor a sender id", from)
	}
	if in.SID == "" {
		return nil, badWebhook("no MessageSid")
	}
	nm := strings.TrimSpace(p.Get("NumMedia"))
	if nm != "" {
		n, err := strconv.Atoi(nm)
		if err != nil || n < 0 || n > maxMedia {
			return nil, badWebhook("NumMedia %q", nm)
		}
		for i := range n {
			u := escapeUnprintable(strings.TrimSpace(p.Get("MediaUrl" + strconv.Itoa(i))))
			if !isHTTPURL(u) {
				return nil, badWebhook("MediaUrl%d %q is not an http(s) URL", i, u)
			}
			in.Media = append(in.Media, u)
		}
	}
	if in.Body == "" && len(in.Media) == 0 {
		return nil, badWebhook("neither Body nor media")
	}
	return in, nil
}

// parseStatus reads a status-callback webhook's parameters.
func parseStatus(p url.Values) (*Status, error) {
	s := &Status{SID: strings.TrimSpace(p.Get("MessageSid")), Status: strings.TrimSpace(p.Get("MessageStatus")),
		ErrorCode: strings.TrimSpace(p.Get("ErrorCode")), ErrorMessage: strings.TrimSpace(p.Get("ErrorMessage"))}
	if s.SID == "" {
		s.SID = strings.TrimSpace(p.Get("SmsSid"))
	}
	if s.Status == "" {
		s.Status = strings.TrimSpace(p.Get("SmsStatus"))
	}
	if s.SID == "" || s.Status == "" {
		return nil, badWebhook("status callback without MessageSid or MessageStatus")
	}
	return s, nil
}

// escapeUnprintable percent-encodes the bytes of s that XML cannot carry:
// invalid UTF-8 and characters such as controls. The URL means the same,
// and it reaches the user whole instead of with those bytes dropped.
func escapeUnprintable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r != utf8.RuneError || n > 1) && xmlel.ValidXMLChar(r) {
			b.WriteString(s[i : i+n])
		} else {
			for _, c := range []byte(s[i : i+n]) {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		}
		i += n
	}
	return b.String()
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// senderID turns an alphanumeric sender id ("ACME Bank") into a localpart
// ("acmebank"): letters and digits only, lower-cased, at most 32.
func senderID(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') {
			b.WriteRune(r)
		}
	}
	if b.Len() > 32 {
		return ""
	}
	return b.String()
}
