package xmlel

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// benchStream is a component stream of n groupchat messages and n MUC
// presences, as Prosody sends them.
func benchStream(n int) string {
	var b strings.Builder
	b.WriteString(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x' from='irc.localhost'>`)
	for range n {
		b.WriteString(`<message from='alice@localhost/res' to='#go%irc.localhost@irc.localhost' type='groupchat' id='m1234567' xml:lang='en'><body>hello &amp; welcome to the channel, how are you today?</body><active xmlns='http://jabber.org/protocol/chatstates'/><origin-id xmlns='urn:xmpp:sid:0' id='abc-def'/></message>`)
		b.WriteString(`<presence from='bob@localhost/r' to='#go%irc.localhost@irc.localhost/bob'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://gajim.org' ver='abcdefghijk='/></presence>`)
	}
	b.WriteString(`</stream:stream>`)
	return b.String()
}

func BenchmarkReadStream(b *testing.B) {
	s := benchStream(1000)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(strings.NewReader(s), DefaultLimits)
		if _, err := r.Open(); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 2000 {
			b.Fatal(n)
		}
	}
}

// BenchmarkReadStreamDecoder reads the same stream with encoding/xml and
// Read alone, as the component did before Reader: what the framing costs.
func BenchmarkReadStreamDecoder(b *testing.B) {
	s := benchStream(1000)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		d := xml.NewDecoder(strings.NewReader(s))
		n := 0
		for {
			tok, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if st, ok := tok.(xml.StartElement); ok && st.Name.Local != "stream" {
				if _, err := Read(d, st); err != nil {
					b.Fatal(err)
				}
				n++
			}
		}
		if n != 2000 {
			b.Fatal(n)
		}
	}
}
