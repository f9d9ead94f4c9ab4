package mapping

import (
	"errors"
	"strings"
	"testing"
)

func TestParseIRCLocal(t *testing.T) {
	for _, tc := range []struct {
		local, chantypes string
		want             IRCAddr
		wantErr          bool
	}{
		{local: "irc.libera.chat", want: IRCAddr{Kind: IRCServer, Server: "irc.libera.chat"}},
		{local: "IRC.Libera.Chat", want: IRCAddr{Kind: IRCServer, Server: "irc.libera.chat"}},
		{local: "localhost", want: IRCAddr{Kind: IRCServer, Server: "localhost"}},
		{local: "192.0.2.1", want: IRCAddr{Kind: IRCServer, Server: "192.0.2.1"}},
		{local: "#go%irc.libera.chat", want: IRCAddr{Kind: IRCChannel, Name: "#go", Server: "irc.libera.chat"}},
		{local: "#Go%IRC.libera.chat", want: IRCAddr{Kind: IRCChannel, Name: "#Go", Server: "irc.libera.chat"}},
		{local: "##go%irc.libera.chat", want: IRCAddr{Kind: IRCChannel, Name: "##go", Server: "irc.libera.chat"}},
		{local: "#%irc.libera.chat", want: IRCAddr{Kind: IRCChannel, Name: "#", Server: "irc.libera.chat"}},
		{local: `\26local%irc.example.net`, want: IRCAddr{Kind: IRCChannel, Name: "&local", Server: "irc.example.net"}},
		{local: "&local%irc.example.net", want: IRCAddr{Kind: IRCChannel, Name: "&local", Server: "irc.example.net"}},
		{local: "#100%%irc.libera.chat", want: IRCAddr{Kind: IRCChannel, Name: "#100%", Server: "irc.libera.chat"}},
		{local: `#a\3ab%irc.libera.chat`, want: IRCAddr{Kind: IRCChannel, Name: "#a:b", Server: "irc.libera.chat"}},
		{local: `#o\27hara\40home%irc.libera.chat`, want: IRCAddr{Kind: IRCChannel, Name: "#o'hara@home", Server: "irc.libera.chat"}},
		{local: `#c\3a\5c5cnet%irc.libera.chat`, want: IRCAddr{Kind: IRCChannel, Name: `#c:\5cnet`, Server: "irc.libera.chat"}},
		{local: "#café%irc.libera.chat", want: IRCAddr{Kind: IRCChannel, Name: "#café", Server: "irc.libera.chat"}},
		{local: "alice%irc.libera.chat", want: IRCAddr{Kind: IRCUser, Name: "alice", Server: "irc.libera.chat"}},
		{local: "Alice%irc.libera.chat", want: IRCAddr{Kind: IRCUser, Name: "Alice", Server: "irc.libera.chat"}},
		{local: "[m]bot|away^_{}`%irc.libera.chat", want: IRCAddr{Kind: IRCUser, Name: "[m]bot|away^_{}`", Server: "irc.libera.chat"}},
		{local: `a\b%irc.libera.chat`, want: IRCAddr{Kind: IRCUser, Name: `a\b`, Server: "irc.libera.chat"}},
		{local: "ßtraße%irc.libera.chat", want: IRCAddr{Kind: IRCUser, Name: "ßtraße", Server: "irc.libera.chat"}},
		// CHANTYPES from the server.
		{local: "!chan%irc.example.net", chantypes: "#!", want: IRCAddr{Kind: IRCChannel, Name: "!chan", Server: "irc.example.net"}},
		{local: "&alice%irc.example.net", chantypes: "#", wantErr: true}, // '&' is a membership prefix
		{local: "+chan%irc.example.net", chantypes: "#+", want: IRCAddr{Kind: IRCChannel, Name: "+chan", Server: "irc.example.net"}},
		{local: "+alice%irc.example.net", chantypes: "#", wantErr: true},

		// Servers.
		{local: "", wantErr: true},
		{local: "#go%", wantErr: true},
		{local: "irc.libera.chat:6697", wantErr: true},
		{local: `irc.libera.chat\3a6697`, wantErr: true},
		{local: "irc.libera.chat.", wantErr: true},
		{local: "irc_libera.chat", wantErr: true},
		{local: "#go%irc libera", wantErr: true},
		{local: "#go%bücher.de", wantErr: true},
		{local: "#go%[::1]", wantErr: true},
		{local: "1.2.3", wantErr: true},
		// Channels.
		{local: "%irc.libera.chat", wantErr: true},
		{local: `#a\20b%irc.libera.chat`, wantErr: true},
		{local: "#a,b%irc.libera.chat", wantErr: true},
		{local: "#a\ab%irc.libera.chat", wantErr: true},
		{local: "#a\rb%irc.libera.chat", wantErr: true},
		{local: "#a\nb%irc.libera.chat", wantErr: true},
		{local: "#a\x00b%irc.libera.chat", wantErr: true},
		{local: "#a\x02bold%irc.libera.chat", wantErr: true},
		{local: "#a\uff05b%irc.libera.chat", wantErr: true},
		{local: "#a\u200bb%irc.libera.chat", wantErr: true},
		{local: `#a\2Fb%irc.libera.chat`, wantErr: true},
		{local: "#\xff%irc.libera.chat", wantErr: true},
		// Nicks.
		{local: "al ice%irc.libera.chat", wantErr: true},
		{local: "al,ice%irc.libera.chat", wantErr: true},
		{local: "al!ice%irc.libera.chat", wantErr: true},
		{local: `al\40ice%irc.libera.chat`, wantErr: true},
		{local: "al*ice%irc.libera.chat", wantErr: true},
		{local: "al?ice%irc.libera.chat", wantErr: true},
		{local: "al\x00ice%irc.libera.chat", wantErr: true},
		{local: "al\rice%irc.libera.chat", wantErr: true},
		{local: "1alice%irc.libera.chat", wantErr: true},
		{local: "-alice%irc.libera.chat", wantErr: true},
		{local: "$alice%irc.libera.chat", wantErr: true},
		{local: `\3aalice%irc.libera.chat`, wantErr: true},
		{local: "~alice%irc.libera.chat", wantErr: true},
		{local: "%alice%irc.libera.chat", wantErr: true},
		{local: "\uff03alice%irc.libera.chat", wantErr: true}, // fullwidth '#' folds into a channel
		{local: "\u00b2bob%irc.libera.chat", wantErr: true},   // superscript two folds into a digit
		// Too long for a localpart.
		{local: "#" + strings.Repeat("a", 1010) + "%irc.libera.chat", wantErr: true},
		{local: "#" + strings.Repeat("a", 1006) + "%irc.libera.chat", want: IRCAddr{Kind: IRCChannel, Name: "#" + strings.Repeat("a", 1006), Server: "irc.libera.chat"}},
	} {
		got, err := ParseIRCLocal(tc.local, tc.chantypes)
		switch {
		case tc.wantErr && err == nil:
			t.Errorf("ParseIRCLocal(%q, %q) = %+v, want an error", tc.local, tc.chantypes, got)
		case tc.wantErr && !errors.Is(err, ErrMalformed):
			t.Errorf("ParseIRCLocal(%q, %q) error %v does not wrap ErrMalformed", tc.local, tc.chantypes, err)
		case !tc.wantErr && err != nil:
			t.Errorf("ParseIRCLocal(%q, %q) failed: %v", tc.local, tc.chantypes, err)
		case got != tc.want:
			t.Errorf("ParseIRCLocal(%q, %q) = %+v, want %+v", tc.local, tc.chantypes, got, tc.want)
		}
		if err != nil {
			continue
		}
		// Round trip.
		back, err := ParseIRCLocal(got.Local(), tc.chantypes)
		if err != nil || back != got {
			t.Errorf("ParseIRCLocal(%q) = %+v, %v; want %+v", got.Local(), back, err, got)
		}
	}
}

func TestIRCAddrLocal(t *testing.T) {
	for _, tc := range []struct {
		a    IRCAddr
		want string
	}{
		{IRCAddr{Kind: IRCServer, Server: "irc.libera.chat"}, "irc.libera.chat"},
		{IRCAddr{Kind: IRCServer, Server: "IRC.Libera.Chat"}, "irc.libera.chat"},
		{IRCAddr{Kind: IRCChannel, Name: "#go", Server: "irc.libera.chat"}, "#go%irc.libera.chat"},
		{IRCAddr{Kind: IRCChannel, Name: "#Go", Server: "Irc.Libera.Chat"}, "#Go%irc.libera.chat"},
		{IRCAddr{Kind: IRCChannel, Name: "&local", Server: "irc.example.net"}, `\26local%irc.example.net`},
		{IRCAddr{Kind: IRCChannel, Name: "#a:b/c", Server: "irc.example.net"}, `#a\3ab\2fc%irc.example.net`},
		{IRCAddr{Kind: IRCChannel, Name: `#\5c`, Server: "irc.example.net"}, `#\5c5c%irc.example.net`},
		{IRCAddr{Kind: IRCChannel, Name: `#a\`, Server: "irc.example.net"}, `#a\%irc.example.net`},
		{IRCAddr{Kind: IRCChannel, Name: "#100%", Server: "irc.example.net"}, "#100%%irc.example.net"},
		{IRCAddr{Kind: IRCUser, Name: "alice", Server: "irc.libera.chat"}, "alice%irc.libera.chat"},
		{IRCAddr{Kind: IRCUser, Name: "O'Hara", Server: "irc.libera.chat"}, `O\27Hara%irc.libera.chat`},
		{IRCAddr{}, ""},
		{IRCAddr{Kind: 42, Name: "x", Server: "y"}, ""},
	} {
		if got := tc.a.Local(); got != tc.want {
			t.Errorf("%+v.Local() = %q, want %q", tc.a, got, tc.want)
		}
	}
}

func TestIRCKindString(t *testing.T) {
	for k, want := range map[IRCKind]string{IRCServer: "server", IRCChannel: "channel", IRCUser: "user", 0: "IRCKind(0)"} {
		if got := k.String(); got != want {
			t.Errorf("IRCKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}
