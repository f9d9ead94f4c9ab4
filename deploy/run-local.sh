#!/usr/bin/env bash
# Run Passerelle against a throwaway Prosody on loopback, with the IRC, email
# and SMS components and two accounts (alice, bob) to log in with from any
# XMPP client (127.0.0.1:5222, plain login allowed on loopback).
#
#   bash deploy/run-local.sh        # Ctrl-C stops both
#
# Installs prosody with apt-get when missing (root). Everything lives in a
# temporary directory that is removed at the end.
#
# The loopback ports can be changed from the environment:
#   LOCAL_C2S_PORT        XMPP clients (default 5222)
#   LOCAL_COMPONENT_PORT  components, i.e. Passerelle (default 5347)
#   LOCAL_SMTP_PORT       Passerelle's SMTP listener (default 2525)
#   LOCAL_HTTP_PORT       Passerelle's /healthz and /metrics (default 9100)
set -euo pipefail
cd "$(dirname "$0")/.."
c2s_port=${LOCAL_C2S_PORT:-5222}
component_port=${LOCAL_COMPONENT_PORT:-5347}
smtp_port=${LOCAL_SMTP_PORT:-2525}
http_port=${LOCAL_HTTP_PORT:-9100}

if ! command -v prosody >/dev/null; then
	echo "installing prosody" >&2
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prosody >/dev/null
	rm -f /usr/sbin/policy-rc.d
fi

dir=$(mktemp -d /tmp/passerelle-local.XXXXXX)
secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
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

mkdir -p "$dir/data"
cat > "$dir/prosody.cfg.lua" <<CFG
run_as_root = true
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { { levels = { min = "info" }, to = "file", filename = "$dir/prosody.log" } }
interfaces = { "127.0.0.1" }
component_interfaces = { "127.0.0.1" }
c2s_ports = { $c2s_port }
component_ports = { $component_port }
s2s_ports = { }
modules_enabled = { "disco"; "roster"; "saslauth"; "register"; "ping"; "version"; "posix"; "offline" }
modules_disabled = { "s2s" }
authentication = "internal_plain"
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
# Wait until Prosody listens on both ports. It keeps running when a port is
# taken (by another XMPP server, say), so its log tells whether it got them.
ready=""
for _ in $(seq 100); do
	kill -0 "${pids[0]}" 2>/dev/null || break
	if grep -q "Activated service 'c2s'" "$dir/prosody.log" 2>/dev/null &&
		grep -q "Activated service 'component'" "$dir/prosody.log"; then
		grep -q "Failed to open server port" "$dir/prosody.log" || ready=1
		break
	fi
	sleep 0.1
done
if [ -z "$ready" ]; then
	echo "Prosody did not start on 127.0.0.1:$c2s_port and 127.0.0.1:$component_port" \
		"(ports in use? set LOCAL_C2S_PORT and LOCAL_COMPONENT_PORT):" >&2
	tail -n 20 "$dir/prosody.console" "$dir/prosody.log" >&2 2>/dev/null || true
	exit 1
fi

echo "Prosody on 127.0.0.1:$c2s_port; log in as alice@localhost / alice-password or bob@localhost / bob-password" >&2
PASSERELLE_XMPP_ADDR=127.0.0.1:$component_port \
PASSERELLE_XMPP_SECRET=$secret \
PASSERELLE_DB="$dir/passerelle.db" \
PASSERELLE_ADMINS=alice@localhost \
PASSERELLE_IRC_DOMAIN=irc.localhost \
PASSERELLE_EMAIL_DOMAIN=mail.localhost \
PASSERELLE_SMTP_LISTEN=127.0.0.1:$smtp_port \
PASSERELLE_SMS_DOMAIN=sms.localhost \
PASSERELLE_SMS_NUMBERS=+15550001111,+15550002222 \
PASSERELLE_HTTP_LISTEN=127.0.0.1:$http_port \
	"$dir/passerelle" &
pids+=($!)
wait "${pids[-1]}"
