#!/usr/bin/env bash
# tls13-handshake.sh: a real TLS 1.3 handshake with keys from pskvault.
#
# Two vaults on the soft backend, node-a (TLS client) and node-b (TLS
# server), each with its own daemon, share one EPSK: created on node-a,
# imported on node-b. Each side asks its own daemon's data socket for the
# RFC 9258 imported PSK, with a context that names both nodes, and hands it
# to OpenSSL and to GnuTLS as an ordinary external PSK. Application data
# crosses in psk_dhe_ke mode. Then the client derives with another context
# and the handshake fails.
#
# Usage: examples/tls13-handshake.sh [path/to/pskvault]   (default: PATH, else built here)
# Needs: openssl; gnutls-bin for the GnuTLS part (skipped when missing).
#
# The CLI tools take the PSK identity as a C string and every serialized
# ImportedIdentity holds zero bytes, so the identity on the wire here is the
# ImportedIdentity in hex; a TLS stack using the library API sends the bytes.
# openssl takes the key on its command line (visible in /proc to local
# users): fine for a demo, not for production.
set -euo pipefail

command -v openssl >/dev/null || { echo "openssl is not installed" >&2; exit 2; }

W=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

# The pskvault to use: the argument, else the one on PATH, else built from
# this checkout.
PSKVAULT=${1:-$(command -v pskvault || true)}
if [ -z "$PSKVAULT" ]; then
	echo "== building pskvault from this checkout"
	(cd "$(dirname "$0")/.." && go build -o "$W/pskvault" ./cmd/pskvault)
	PSKVAULT=$W/pskvault
fi

start_node() { # NAME
	local n=$1
	"$PSKVAULT" --state-dir "$W/$n/state" init --node-id "$n" --backend soft >/dev/null
	"$PSKVAULT" --state-dir "$W/$n/state" --socket "$W/$n/admin/s.sock" --data-socket "$W/$n/data/s.sock" \
		serve --log-level warn 2>"$W/$n.log" &
	pids+=($!)
	for _ in $(seq 100); do
		[ -S "$W/$n/data/s.sock" ] && return 0
		sleep 0.05
	done
	echo "daemon for $n did not start:" >&2; cat "$W/$n.log" >&2; exit 1
}
pv() { local n=$1; shift; "$PSKVAULT" --state-dir "$W/$n/state" --socket "$W/$n/admin/s.sock" --data-socket "$W/$n/data/s.sock" "$@"; }
field() { sed -n "s/.*\"$1\":\"\([0-9a-f]*\)\".*/\1/p"; }
hexof() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
freeport() { # a loopback port nothing listens on
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
	echo "no free port found" >&2; return 1
}

start_node node-a
start_node node-b
# --node-context: the RFC 9258 context names both nodes in role order
# (docs/RFC9257.md), so a reflected or rerouted connection derives another key.
# The bundle carries the key and its whole policy, authenticated (docs/BUNDLE.md);
# node-b imports it with no other flag.
pv node-a psk create --identity tls-a-b --client node-a --server node-b --node-context --out - 2>/dev/null |
  pv node-b psk import --bundle - >/dev/null
echo "node-a and node-b share PSK tls-a-b (bundle piped from node-a to node-b)"

# Each daemon fills in the node context itself.
A=$(pv node-a derive --identity tls-a-b --protocol tls1.3 --kdf sha256 --json)
B=$(pv node-b derive --identity tls-a-b --protocol tls1.3 --kdf sha256 --json)
A_ID=$(echo "$A" | field imported_identity); A_KEY=$(echo "$A" | field ipskx)
B_ID=$(echo "$B" | field imported_identity); B_KEY=$(echo "$B" | field ipskx)
[ "$A_ID" = "$B_ID" ] || { echo "imported identities differ" >&2; exit 1; }
echo "imported identity on the wire: $A_ID"

# feed_until LOG PATTERN: a TLS client's stdin: one line, then open until
# the client's LOG shows PATTERN (the echo) or a failure (10 s at most),
# never for a fixed time, which a loaded machine can outlast.
feed_until() {
	echo hello-from-node-a
	for _ in $(seq 200); do grep -q "$2" "$1" && break; grep -qiE "error|alert|fail" "$1" && break; sleep 0.05; done
}

openssl_handshake() { # SERVER_ID SERVER_KEY CLIENT_ID CLIENT_KEY
	local port; port=$(freeport)
	timeout 20 openssl s_server -nocert -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256 \
		-psk "$2" -psk_identity "$1" -accept "127.0.0.1:$port" -naccept 1 -rev >"$W/s_server.log" 2>&1 &
	local sp=$!; pids+=($sp)
	for _ in $(seq 200); do grep -q ACCEPT "$W/s_server.log" && break; sleep 0.05; done
	local out="$W/s_client.log"
	: >"$out"
	feed_until "$out" "a-edon-morf-olleh" | timeout 15 openssl s_client -connect "127.0.0.1:$port" -tls1_3 \
		-ciphersuites TLS_AES_128_GCM_SHA256 -psk "$4" -psk_identity "$3" -brief >"$out" 2>&1 || true
	kill "$sp" 2>/dev/null || true
	grep -q "a-edon-morf-olleh" "$out" && grep -q "Server Temp Key" "$out"
}

gnutls_handshake() { # SERVER_ID SERVER_KEY CLIENT_ID CLIENT_KEY
	local port pri='NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+DHE-PSK:+ECDHE-PSK'
	port=$(freeport)
	(umask 077; echo "$1:$2" >"$W/psk.passwd")
	# gnutls-serv 3.7 cannot bind to loopback only.
	timeout 20 gnutls-serv --pskpasswd "$W/psk.passwd" --priority "$pri" -p "$port" --echo >"$W/gnutls-serv.log" 2>&1 &
	local sp=$!; pids+=($sp)
	for _ in $(seq 200); do grep -q "listening on IPv4" "$W/gnutls-serv.log" && break; sleep 0.05; done
	local out="$W/gnutls-cli.log"
	: >"$out"
	feed_until "$out" "^hello-from-node-a" | timeout 15 gnutls-cli --pskusername "$3" --pskkey "$4" \
		--priority "$pri" -p "$port" 127.0.0.1 >"$out" 2>&1 || true
	kill "$sp" 2>/dev/null || true
	grep -q "PSK authentication" "$out" && grep -q "^hello-from-node-a" "$out"
}

openssl_handshake "$B_ID" "$B_KEY" "$A_ID" "$A_KEY" && echo "OpenSSL: TLS 1.3 psk_dhe_ke handshake done, data crossed" \
	|| { echo "OpenSSL handshake FAILED" >&2; cat "$W/s_server.log" "$W/s_client.log" >&2; exit 1; }
if command -v gnutls-serv >/dev/null && command -v gnutls-cli >/dev/null; then
	gnutls_handshake "$B_ID" "$B_KEY" "$A_ID" "$A_KEY" && echo "GnuTLS: TLS 1.3 (EC)DHE-PSK handshake done, data crossed" \
		|| { echo "GnuTLS handshake FAILED" >&2; cat "$W/gnutls-serv.log" "$W/gnutls-cli.log" >&2; exit 1; }
else
	echo "GnuTLS: skipped (install gnutls-bin)"
fi

# The client believes it talks to node-x: its daemon will not derive for a
# context that names a node the PSK is not shared with.
nodectx() { # CLIENT SERVER: the canonical node context, in hex
	local l="pskvault nodes v1"
	printf '%02x%s%02x%s%02x%s' ${#l} "$(hexof "$l")" ${#1} "$(hexof "$1")" ${#2} "$(hexof "$2")"
}
if pv node-a derive --identity tls-a-b --context-hex "$(nodectx node-a node-x)" --protocol tls1.3 --kdf sha256 >/dev/null 2>&1; then
	echo "derive for node-x SUCCEEDED: wrong" >&2; exit 1
fi
echo "context naming node-x: node-a's daemon refuses to derive"

# On the wire: a PSK without --node-context, the two sides using different
# contexts. Different identities and keys: the server refuses the handshake.
pv node-a psk create --identity tls-free --client node-a --server node-b --out "$W/bundle2" >/dev/null
pv node-b psk import --bundle "$W/bundle2" >/dev/null 2>&1
rm -f "$W/bundle2"
X=$(pv node-a derive --identity tls-free --context-hex "$(hexof "to node-x")" --protocol tls1.3 --kdf sha256 --json)
Y=$(pv node-b derive --identity tls-free --context-hex "$(hexof "to node-b")" --protocol tls1.3 --kdf sha256 --json)
X_ID=$(echo "$X" | field imported_identity); X_KEY=$(echo "$X" | field ipskx)
Y_ID=$(echo "$Y" | field imported_identity); Y_KEY=$(echo "$Y" | field ipskx)
if openssl_handshake "$Y_ID" "$Y_KEY" "$X_ID" "$X_KEY"; then
	echo "handshake with a different context SUCCEEDED: wrong" >&2; exit 1
fi
echo "different context: handshake refused, as it must be"
