package email

import (
	"bufio"
	"bytes"
	"context"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"passerelle/bridges"
	"passerelle/component/stanza"
)

// senderName is the name a mail's sender gets in the user's roster: the
// display name of its From when From is addr, else addr.
func senderName(raw []byte, addr string) string {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return addr
	}
	mh := mail.Header{Header: message.Header{Header: h}}
	list, err := mh.AddressList("From")
	if err != nil || len(list) == 0 || !strings.EqualFold(list[0].Address, addr) {
		return addr
	}
	if n := oneLine(list[0].Name); n != "" {
		return n
	}
	return addr
}

// Profile implements bridges.Profiler: a correspondent's address (mail
// has no avatars).
func (b *Bridge) Profile(ctx context.Context, u *bridges.User, local string, answer func(context.Context, *bridges.Profile, error)) {
	addr, err := b.contactAddress(ctx, local)
	if err != nil {
		answer(ctx, nil, stanza.Errorf("jid-malformed", "“"+local+"” is not an email address."))
		return
	}
	answer(ctx, &bridges.Profile{Email: addr}, nil)
}

var _ bridges.Profiler = (*Bridge)(nil)
