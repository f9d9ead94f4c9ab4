-- Passerelle components for Prosody (0.12). Add to /etc/prosody/prosody.cfg.lua
-- (or a file in conf.d/), replacing example.org with your domain and the
-- secret with the value of PASSERELLE_XMPP_SECRET (128+ random bits:
-- `openssl rand -hex 24`). Keep the component port on loopback.
--
-- Contacts in your users' rosters (XEP-0356): the gateway adds the people
-- they talk to through it, named and grouped, when the server grants it
-- the roster permission. mod_privilege comes from Debian's prosody-modules
-- package (`apt-get install prosody-modules`); it is loaded on the
-- VirtualHost and on each Component below. Without it everything works,
-- and new contacts ask for a subscription instead. message = "outgoing"
-- lets the mail gateway show in a user's chats the mails she sends from
-- her own mail client (XEP-0280 sent carbons); without it they are not.

component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

VirtualHost "example.org"
	-- If your VirtualHost sets modules_enabled already, add "privilege"
	-- there instead: a second setting replaces the first.
	modules_enabled = { "privilege" }
	privileged_entities = {
		["irc.example.org"] = { roster = "both"; message = "outgoing"; presence = "roster" };
		["mail.example.org"] = { roster = "both"; message = "outgoing"; presence = "roster" };
		["sms.example.org"] = { roster = "both"; message = "outgoing"; presence = "roster" };
	}

Component "irc.example.org"
	component_secret = "CHANGE-ME"
	component_conflict_resolve = "kick_old" -- a restarted gateway replaces its stale session
	modules_enabled = { "privilege" } -- sends the component its privileges after the handshake

Component "mail.example.org"
	component_secret = "CHANGE-ME"
	component_conflict_resolve = "kick_old"
	modules_enabled = { "privilege" }

Component "sms.example.org"
	component_secret = "CHANGE-ME"
	component_conflict_resolve = "kick_old"
	modules_enabled = { "privilege" }

-- Messages the gateway sends to an offline user are kept by mod_offline
-- (enabled by default). For attachments of inbound mail, offer XEP-0363:
-- Component "upload.example.org" "http_file_share"
