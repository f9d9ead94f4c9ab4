package mapping

import (
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// IRCKind says what an IRCAddr names.
type IRCKind int

// The kinds of IRC address. The zero IRCKind is none of them.
const (
	IRCServer  IRCKind = iota + 1 // an IRC network, addressed by its server: "irc.libera.chat"
	IRCChannel                    // a channel on a network: "#go%irc.libera.chat"
	IRCUser                       // a user (nick) on a network: "alice%irc.libera.chat"
)

// String returns "server", "channel" or "user".
func (k IRCKind) String() string {
	switch k {
	case IRCServer:
		return "server"
	case IRCChannel:
		return "channel"
	case IRCUser:
		return "user"
	}
	return "IRCKind(" + strconv.Itoa(int(k)) + ")"
}

// IRCAddr is an IRC network, channel or user, as addressed by the localpart
// of a JID on the IRC bridge.
type IRCAddr struct {
	Kind IRCKind
	// Name is the channel name including its prefix ("#go") or the nick
	// ("alice"); it is empty for IRCServer.
	Name string
	// Server is the host name of the network's server, lower-case
	// ("irc.libera.chat").
	Server string
}

// DefaultChanTypes are the channel prefixes assumed when a server does not
// advertise CHANTYPES (RFC 2812's '#' and '&').
const DefaultChanTypes = "#&"

// ParseIRCLocal parses the localpart of a JID on the IRC bridge.
//
// XEP-0106 escapes are decoded first. A localpart without '%' names a
// network by its server ("irc.libera.chat"); otherwise the text after the
// last '%' is the server and the text before it a channel, if it starts
// with one of chantypes (the server's CHANTYPES; "" means DefaultChanTypes),
// or else a nick: "#go%irc.libera.chat", "alice%irc.libera.chat". Channel
// names may themselves contain '%' ("#100%%irc.libera.chat" is "#100%").
// The server is lower-cased; the name keeps its case.
//
// The parts are validated, following RFC 2812 and the modern IRC client
// protocol, and with errors wrapping ErrMalformed:
//   - the server is an ASCII hostname or an IPv4 address, not host:port;
//   - a channel name has no space, comma or BEL, nor any other control
//     character (CR, LF and NUL included);
//   - a nick is not empty, has no space, comma, '*', '?', '!' or '@' nor
//     any control character, and does not start with a channel prefix, a
//     membership prefix ('~', '&', '@', '%', '+'), '$', ':', '-' or a digit;
//   - names must be carried unchanged through a JID localpart and through
//     the XMPP server's case and NFKC folding (a fullwidth '＃' that folds
//     into '#' would turn a nick into a channel, for one), and the localpart
//     must fit in 1023 bytes.
//
// To check an IRCAddr built from IRC-side data, parse its Local():
// ParseIRCLocal(a.Local(), chantypes) succeeds and returns a (with the
// server lower-cased) exactly when a is valid.
func ParseIRCLocal(local, chantypes string) (IRCAddr, error) {
	if chantypes == "" {
		chantypes = DefaultChanTypes
	}
	if err := checkInputLen(local); err != nil {
		return IRCAddr{}, err
	}
	if !utf8.ValidString(local) {
		return IRCAddr{}, malformed("irc localpart %q is not valid UTF-8", local)
	}
	s := UnescapeLocal(local)
	var a IRCAddr
	if i := strings.LastIndexByte(s, '%'); i < 0 {
		a = IRCAddr{Kind: IRCServer, Server: strings.ToLower(s)}
	} else {
		a = IRCAddr{Kind: ircNameKind(s[:i], chantypes), Name: s[:i], Server: strings.ToLower(s[i+1:])}
		if a.Name == "" {
			return IRCAddr{}, malformed("irc localpart %q has an empty channel or nick before the '%%'", local)
		}
	}
	if err := checkIRCServer(a.Server); err != nil {
		return IRCAddr{}, err
	}
	if a.Kind != IRCServer {
		if err := checkIRCName(a.Kind, a.Name, chantypes); err != nil {
			return IRCAddr{}, err
		}
		// The XMPP server folds the localpart before we see it: the folded
		// name must still be a valid name of the same kind.
		if f := serverFold(a.Name); f != a.Name {
			if ircNameKind(f, chantypes) != a.Kind || checkIRCName(a.Kind, f, chantypes) != nil {
				return IRCAddr{}, malformed("irc %s %q becomes %q when the XMPP server folds its case, which is not a valid %s", a.Kind, a.Name, f, a.Kind)
			}
		}
	}
	if err := checkLocalLen("irc "+a.Kind.String()+" "+strconv.Quote(a.Name), a.Local()); err != nil {
		return IRCAddr{}, err
	}
	return a, nil
}

// Local returns the JID localpart that addresses a; it is the inverse of
// ParseIRCLocal: "#go%irc.libera.chat", "alice%irc.libera.chat",
// "irc.libera.chat". The name is XEP-0106 escaped ("#a:b" becomes "#a\3ab")
// and the server lower-cased. Local does not validate a (see ParseIRCLocal);
// it returns "" when a.Kind is not one of the IRC kinds.
func (a IRCAddr) Local() string {
	server := EscapeLocal(strings.ToLower(a.Server))
	switch a.Kind {
	case IRCServer:
		return server
	case IRCChannel, IRCUser:
		return EscapeLocal(a.Name) + "%" + server
	}
	return ""
}

// ircNameKind returns IRCChannel if name starts with one of chantypes and
// IRCUser otherwise.
func ircNameKind(name, chantypes string) IRCKind {
	if r, _ := utf8.DecodeRuneInString(name); name != "" && strings.ContainsRune(chantypes, r) {
		return IRCChannel
	}
	return IRCUser
}

// checkIRCServer refuses a server that is neither an ASCII hostname nor an
// IPv4 address.
func checkIRCServer(server string) error {
	switch {
	case server == "":
		return malformed("irc server name is empty")
	case validHostname(server):
		return nil
	}
	if ip, err := netip.ParseAddr(server); err == nil && ip.Is4() {
		return nil
	}
	return malformed("irc server %q is not a valid hostname", server)
}

// checkIRCName validates a channel name or a nick (see ParseIRCLocal).
func checkIRCName(kind IRCKind, name, chantypes string) error {
	if kind == IRCChannel {
		if i := strings.IndexAny(name, " ,\a"); i >= 0 {
			return malformed("irc channel name %q contains %q", name, name[i])
		}
		return checkLocalText("irc channel name", name)
	}
	if name == "" {
		return malformed("irc nick is empty")
	}
	r, _ := utf8.DecodeRuneInString(name)
	switch {
	case strings.ContainsRune(chantypes, r):
		return malformed("irc nick %q starts with the channel prefix %q", name, r)
	case strings.ContainsRune("~&@%+", r):
		return malformed("irc nick %q starts with the membership prefix %q", name, r)
	case strings.ContainsRune("$:-", r), '0' <= r && r <= '9':
		return malformed("irc nick %q cannot start with %q", name, r)
	}
	if i := strings.IndexAny(name, " ,*?!@"); i >= 0 {
		return malformed("irc nick %q contains %q", name, name[i])
	}
	return checkLocalText("irc nick", name)
}
