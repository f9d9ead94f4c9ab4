#!/usr/bin/env bash
# Run Passerelle against a throwaway Prosody on loopback, with the IRC, email
# and SMS components and two accounts (alice, bob) to log in with from any
# XMPP client (127.0.0.1:5222, plain login allowed on loopback).
#
#   bash deploy/run-local.sh        # Ctrl-C stops both
#
# Installs prosody with apt-get when missing (root). Everything lives in a
# temporary directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

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
c2s_ports = { 5222 }
component_ports = { 5347 }
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
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/5347) 2>/dev/null && break; sleep 0.1; done

echo "Prosody on 127.0.0.1:5222; log in as alice@localhost / alice-password or bob@localhost / bob-password" >&2
PASSERELLE_XMPP_ADDR=127.0.0.1:5347 \
PASSERELLE_XMPP_SECRET=$secret \
PASSERELLE_DB="$dir/passerelle.db" \
PASSERELLE_ADMINS=alice@localhost \
PASSERELLE_IRC_DOMAIN=irc.localhost \
PASSERELLE_EMAIL_DOMAIN=mail.localhost \
PASSERELLE_SMTP_LISTEN=127.0.0.1:2525 \
PASSERELLE_SMS_DOMAIN=sms.localhost \
PASSERELLE_SMS_NUMBERS=+15550001111,+15550002222 \
PASSERELLE_HTTP_LISTEN=127.0.0.1:9100 \
	"$dir/passerelle" &
pids+=($!)
wait "${pids[-1]}"
