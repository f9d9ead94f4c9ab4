-- Passerelle components for Prosody (0.12). Add to /etc/prosody/prosody.cfg.lua
-- (or a file in conf.d/), replacing example.org with your domain and the
-- secret with the value of PASSERELLE_XMPP_SECRET (128+ random bits:
-- `openssl rand -hex 24`). Keep the component port on loopback.

component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

Component "irc.example.org"
	component_secret = "CHANGE-ME"
	component_conflict_resolve = "kick_old" -- a restarted gateway replaces its stale session

Component "mail.example.org"
	component_secret = "CHANGE-ME"
	component_conflict_resolve = "kick_old"

Component "sms.example.org"
	component_secret = "CHANGE-ME"
	component_conflict_resolve = "kick_old"

-- Messages the gateway sends to an offline user are kept by mod_offline
-- (enabled by default). For attachments of inbound mail, offer XEP-0363:
-- Component "upload.example.org" "http_file_share"
