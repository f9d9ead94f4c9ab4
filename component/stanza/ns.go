package stanza

// The XMPP namespaces of the gateway, in one place for the component, the
// bridges and their packages. The stream's own namespaces are in
// component/stream.go, the only code that reads a stream.

// Stanzas (RFC 6120, XEP-0114).
const (
	NS        = "jabber:component:accept"
	NSClient  = "jabber:client" // a client's stanza, forwarded inside another
	NSStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"
)

// Services every component domain and contact answers.
const (
	NSDiscoInfo  = "http://jabber.org/protocol/disco#info"  // XEP-0030
	NSDiscoItems = "http://jabber.org/protocol/disco#items" // XEP-0030
	NSRegister   = "jabber:iq:register"                     // XEP-0077
	NSGateway    = "jabber:iq:gateway"                      // XEP-0100
	NSPing       = "urn:xmpp:ping"                          // XEP-0199
	NSVersion    = "jabber:iq:version"                      // XEP-0092
	NSCommands   = "http://jabber.org/protocol/commands"    // XEP-0050
	NSData       = "jabber:x:data"                          // XEP-0004
)

// Message payloads.
const (
	NSDelay    = "urn:xmpp:delay"         // XEP-0203
	NSReceipts = "urn:xmpp:receipts"      // XEP-0184
	NSOOB      = "jabber:x:oob"           // XEP-0066
	NSStanzaID = "urn:xmpp:sid:0"         // XEP-0359
	NSHints    = "urn:xmpp:hints"         // XEP-0334
	NSReply    = "urn:xmpp:reply:0"       // XEP-0461
	NSUpload   = "urn:xmpp:http:upload:0" // XEP-0363
	NSForward  = "urn:xmpp:forward:0"     // XEP-0297
	NSCarbons  = "urn:xmpp:carbons:2"     // XEP-0280
)

// Rosters, privileges and contacts' profiles. XEP-0356: Prosody's
// mod_privilege speaks privilege:2, ejabberd 23.01's privilege:1; the
// permissions read the same in both.
const (
	NSRoster     = "jabber:iq:roster"                // RFC 6121
	NSPrivilege1 = "urn:xmpp:privilege:1"            // XEP-0356
	NSPrivilege2 = "urn:xmpp:privilege:2"            // XEP-0356
	NSNick       = "http://jabber.org/protocol/nick" // XEP-0172
	NSCaps       = "http://jabber.org/protocol/caps" // XEP-0115
	NSVCard      = "vcard-temp"                      // XEP-0054
)

// Multi-user chat and its archive.
const (
	NSMUC           = "http://jabber.org/protocol/muc"            // XEP-0045
	NSMUCUser       = "http://jabber.org/protocol/muc#user"       // XEP-0045
	NSMUCAdmin      = "http://jabber.org/protocol/muc#admin"      // XEP-0045
	NSMUCOwner      = "http://jabber.org/protocol/muc#owner"      // XEP-0045
	NSMUCRoomConfig = "http://jabber.org/protocol/muc#roomconfig" // XEP-0045
	NSMAM           = "urn:xmpp:mam:2"                            // XEP-0313
	NSRSM           = "http://jabber.org/protocol/rsm"            // XEP-0059
)
