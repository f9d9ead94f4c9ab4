package email

import (
	"bufio"
	"bytes"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
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
