#!/usr/bin/env bash
# A complete local demo of Passerelle, on loopback only: a throwaway Prosody
# (STARTTLS and direct TLS with a self-signed certificate for localhost),
# the gateway with its IRC, email and SMS components, a local IRC server
# (ngircd) and an SMS sandbox standing in for the provider. Two accounts,
# alice and bob, log in from any XMPP client; a "try this" block is printed
# at start.
#
#   bash deploy/run-local.sh        # Ctrl-C stops everything
#
# Needs Go, gcc, ca-certificates (openssl), prosody and ngircd: as root it
# installs the Debian packages that are missing, otherwise it says which
# apt-get line to run. Everything lives in a temporary directory that is
# removed at the end. Nothing leaves the machine.
#
# The loopback ports can be changed from the environment:
#   LOCAL_C2S_PORT          XMPP clients, STARTTLS or plain (default 5222)
#   LOCAL_C2S_TLS_PORT      XMPP clients, direct TLS (default 5223)
#   LOCAL_COMPONENT_PORT    components, i.e. Passerelle (default 5347)
#   LOCAL_SMTP_PORT         Passerelle's SMTP listener (default 2525)
#   LOCAL_HTTP_PORT         Passerelle's /healthz and /metrics (default 9100)
#   LOCAL_IRC_PORT          the local IRC server (default 6667)
#   LOCAL_SMS_PORT          the SMS sandbox: provider API and /send (default 8088)
#   LOCAL_SMS_WEBHOOK_PORT  Passerelle's SMS webhook listener (default 8089)
set -euo pipefail
cd "$(dirname "$0")/.."
c2s_port=${LOCAL_C2S_PORT:-5222}
c2s_tls_port=${LOCAL_C2S_TLS_PORT:-5223}
component_port=${LOCAL_COMPONENT_PORT:-5347}
smtp_port=${LOCAL_SMTP_PORT:-2525}
http_port=${LOCAL_HTTP_PORT:-9100}
irc_port=${LOCAL_IRC_PORT:-6667}
sms_port=${LOCAL_SMS_PORT:-8088}
webhook_port=${LOCAL_SMS_WEBHOOK_PORT:-8089}

# Prerequisites: a command and the Debian package that provides it.
missing=()
command -v gcc >/dev/null || missing+=(gcc)
{ [ -e /etc/ssl/certs/ca-certificates.crt ] && command -v openssl >/dev/null; } || missing+=(ca-certificates)
command -v prosody >/dev/null || missing+=(prosody)
command -v ngircd >/dev/null || missing+=(ngircd)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing ${missing[*]}" >&2
		# The packages' own services stay stopped: the demo runs its own.
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
		rm -f /usr/sbin/policy-rc.d
	else
		echo "missing: ${missing[*]}; install them with:" >&2
		echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
		exit 1
	fi
fi
if ! command -v go >/dev/null; then
	echo "missing: Go $(sed -n 's/^go //p' go.mod) or newer (https://go.dev/dl/), with its bin directory in PATH" >&2
	exit 1
fi

dir=$(mktemp -d /tmp/passerelle-local.XXXXXX)
secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
sms_token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
pids=()
cleanup() {
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

go build -o "$dir/passerelle" ./cmd/passerelle
go build -o "$dir/sms-sandbox" ./cmd/sms-sandbox

# A throwaway self-signed certificate: clients ask once to accept it.
mkdir -p "$dir/certs" "$dir/data"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
	-addext "subjectAltName=DNS:localhost,DNS:*.localhost,IP:127.0.0.1" \
	-keyout "$dir/certs/localhost.key" -out "$dir/certs/localhost.crt" 2>/dev/null
cat > "$dir/prosody.cfg.lua" <<CFG
run_as_root = true
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { { levels = { min = "info" }, to = "file", filename = "$dir/prosody.log" } }
interfaces = { "127.0.0.1" }
component_interfaces = { "127.0.0.1" }
c2s_ports = { $c2s_port }
c2s_direct_tls_ports = { $c2s_tls_port }
component_ports = { $component_port }
s2s_ports = { }
modules_enabled = { "disco"; "roster"; "saslauth"; "tls"; "register"; "ping"; "version"; "posix"; "offline"; "carbons" }
modules_disabled = { "s2s" }
authentication = "internal_plain"
certificates = "$dir/certs"
ssl = { certificate = "$dir/certs/localhost.crt"; key = "$dir/certs/localhost.key" }
-- Plain login stays possible on loopback, for scripts.
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
VirtualHost "localhost"
Component "irc.localhost"
	component_secret = "$secret"
	component_conflict_resolve = "kick_old"
Component "mail.localhost"
	component_secret = "$secret"
	component_conflict_resolve = "kick_old"
Component "sms.localhost"
	component_secret = "$secret"
	component_conflict_resolve = "kick_old"
CFG
for u in alice bob; do
	prosodyctl --config "$dir/prosody.cfg.lua" register "$u" localhost "$u-password" >/dev/null
done
prosody -F --config "$dir/prosody.cfg.lua" >"$dir/prosody.console" 2>&1 &
pids+=($!)
# Wait until Prosody listens on its ports. It keeps running when a port is
# taken (by another XMPP server, say), so its log tells whether it got them.
ready=""
for _ in $(seq 100); do
	kill -0 "${pids[0]}" 2>/dev/null || break
	if grep -q "Activated service 'c2s'" "$dir/prosody.log" 2>/dev/null &&
		grep -q "Activated service 'c2s_direct_tls'" "$dir/prosody.log" &&
		grep -q "Activated service 'component'" "$dir/prosody.log"; then
		grep -q "Failed to open server port" "$dir/prosody.log" || ready=1
		break
	fi
	sleep 0.1
done
if [ -z "$ready" ]; then
	echo "Prosody did not start on 127.0.0.1:$c2s_port, 127.0.0.1:$c2s_tls_port and 127.0.0.1:$component_port" \
		"(ports in use? set LOCAL_C2S_PORT, LOCAL_C2S_TLS_PORT and LOCAL_COMPONENT_PORT):" >&2
	tail -n 20 "$dir/prosody.console" "$dir/prosody.log" >&2 2>/dev/null || true
	exit 1
fi

# A local IRC server with a #demo channel.
cat > "$dir/ngircd.conf" <<CFG
[Global]
	Name = irc.localhost
	Info = Passerelle demo IRC server
	Listen = 127.0.0.1
	Ports = $irc_port
	PidFile =
	MotdPhrase = "Passerelle demo"
[Limits]
	MaxConnectionsIP = 0
	MaxNickLength = 30
[Options]
	PAM = no
	Ident = no
	DNS = no
	RequireAuthPing = no
[Channel]
	Name = #demo
	Topic = Passerelle demo channel
	Modes = +P
CFG
ngircd -n -f "$dir/ngircd.conf" >"$dir/ngircd.log" 2>&1 &
pids+=($!)

"$dir/sms-sandbox" -listen "127.0.0.1:$sms_port" -account-sid ACsandbox -auth-token "$sms_token" \
	-webhook "http://127.0.0.1:$webhook_port" &
pids+=($!)

PASSERELLE_XMPP_ADDR=127.0.0.1:$component_port \
PASSERELLE_XMPP_SECRET=$secret \
PASSERELLE_DB="$dir/passerelle.db" \
PASSERELLE_ADMINS=alice@localhost \
PASSERELLE_IRC_DOMAIN=irc.localhost \
PASSERELLE_IRC_ALLOW_PRIVATE=true \
PASSERELLE_EMAIL_DOMAIN=mail.localhost \
PASSERELLE_SMTP_LISTEN=127.0.0.1:$smtp_port \
PASSERELLE_SMS_DOMAIN=sms.localhost \
PASSERELLE_SMS_NUMBERS=+15550001111,+15550002222 \
PASSERELLE_SMS_API_URL=http://127.0.0.1:$sms_port \
PASSERELLE_SMS_ACCOUNT_SID=ACsandbox \
PASSERELLE_SMS_AUTH_TOKEN=$sms_token \
PASSERELLE_SMS_WEBHOOK_LISTEN=127.0.0.1:$webhook_port \
PASSERELLE_SMS_WEBHOOK_URL=http://127.0.0.1:$webhook_port \
PASSERELLE_HTTP_LISTEN=127.0.0.1:$http_port \
	"$dir/passerelle" &
pids+=($!)

irc_config=""
if [ "$irc_port" != 6667 ]; then
	irc_config="
    (the IRC server is on port $irc_port: first run the ad-hoc command
    \"configure\" of localhost@irc.localhost with ports=$irc_port)"
fi
cat >&2 <<HINTS

=== Passerelle demo: try this ===
  Log in:  alice@localhost / alice-password  (or bob@localhost / bob-password)
           server 127.0.0.1, port $c2s_port (STARTTLS) or $c2s_tls_port (direct TLS);
           accept the self-signed certificate for localhost when asked.
  Register with a gateway from its registration form (Gajim: service discovery,
  Register) or its ad-hoc command "settings" (Profanity: /cmd exec settings
  mail.localhost, /field1 alice, /form submit).
  Mail:    register with mail.localhost (address: alice), then
             swaks --server 127.0.0.1:$smtp_port --to alice@mail.localhost
           (sending mail out needs a relay, PASSERELLE_SMTP_RELAY: the demo has none)
  IRC:     join the room #demo%localhost@irc.localhost$irc_config
  SMS:     register with sms.localhost (number: +15550001111), then
             curl -d from=15557654321 -d to=15550001111 -d body=hello http://127.0.0.1:$sms_port/send
           texts you send to +15557654321@sms.localhost are logged by the sandbox.
  Stop:    Ctrl-C
HINTS
wait "${pids[-1]}"
