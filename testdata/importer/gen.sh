#!/usr/bin/env bash
# Generates testdata/importer/vectors.json: RFC 9258 importer known-answer
# vectors computed with the OpenSSL 3 command-line tool only (no Go code).
#
# Usage: testdata/importer/gen.sh            (writes vectors.json next to itself)
#        testdata/importer/gen.sh -          (writes to stdout)
# Needs: bash, openssl (3.x, for "openssl kdf ... TLS13-KDF"), xxd, jq.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
out="$here/vectors.json"
[ "${1:-}" = "-" ] && out=/dev/stdout

openssl version | grep -q '^OpenSSL 3\.' || { echo "need OpenSSL 3.x" >&2; exit 1; }

lower() { tr 'A-F' 'a-f'; }

# u16 big-endian length prefix of a hex string's byte length, as hex.
u16len() { printf '%04x' $(( ${#1} / 2 )); }

# seqhex N: N bytes 00 01 02 ... as hex (obviously-test key material).
seqhex() { local i s=""; for ((i = 0; i < $1; i++)); do s+=$(printf '%02x' "$i"); done; printf '%s' "$s"; }

asciihex() { printf '%s' "$1" | xxd -p | tr -d '\n'; }

hashlen() { case $1 in sha256) echo 32 ;; sha384) echo 48 ;; esac; }
ossl_digest() { case $1 in sha256) echo SHA256 ;; sha384) echo SHA384 ;; esac; }
proto_code() { case $1 in tls1.3) echo 0304 ;; dtls1.3) echo fefc ;; esac; }
# HKDF-Expand-Label prefix: "tls13 " (RFC 8446) or "dtls13" (RFC 9147 5.9).
proto_prefix() { case $1 in tls1.3) echo 746c73313320 ;; dtls1.3) echo 64746c733133 ;; esac; }
kdf_code() { case $1 in HKDF_SHA256) echo 0001 ;; HKDF_SHA384) echo 0002 ;; esac; }
kdf_len() { case $1 in HKDF_SHA256) echo 32 ;; HKDF_SHA384) echo 48 ;; esac; }

# ImportedIdentity = u16 len || external_identity || u16 len || context
#                    || u16 target_protocol || u16 target_kdf
imported_identity() { # ext_hex ctx_hex protocol kdf
	printf '%s%s%s%s%s%s' "$(u16len "$1")" "$1" "$(u16len "$2")" "$2" \
		"$(proto_code "$3")" "$(kdf_code "$4")"
}

# epskx = HKDF-Extract(salt = HashLen zero bytes, epsk) = HMAC(0^HashLen, epsk)
epskx() { # hash epsk_hex
	local zeros a b
	zeros=$(printf "%0$(( $(hashlen "$1") * 2 ))d" 0)
	a=$(printf '%s' "$2" | xxd -r -p |
		openssl dgst "-$1" -mac HMAC -macopt "hexkey:$zeros" | awk '{print $NF}' | lower)
	# Cross-check with OpenSSL's HKDF in EXTRACT_ONLY mode (explicit zero salt).
	b=$(openssl kdf -keylen "$(hashlen "$1")" -kdfopt "digest:$(ossl_digest "$1")" \
		-kdfopt mode:EXTRACT_ONLY -kdfopt "hexkey:$2" -kdfopt "hexsalt:$zeros" HKDF |
		tr -d ':\n' | lower)
	[ "$a" = "$b" ] || { echo "epskx mismatch between HMAC and HKDF extract" >&2; exit 1; }
	printf '%s' "$a"
}

# ipskx = HKDF-Expand-Label(epskx, "derived psk", Hash(ImportedIdentity), L)
# with the EPSK's hash; prefix per target_protocol; L per target_kdf.
ipskx() { # hash epskx_hex wire_hex protocol kdf
	local ctxhash
	ctxhash=$(printf '%s' "$3" | xxd -r -p | openssl dgst "-$1" | awk '{print $NF}' | lower)
	openssl kdf -keylen "$(kdf_len "$5")" -kdfopt "digest:$(ossl_digest "$1")" \
		-kdfopt mode:EXPAND_ONLY -kdfopt "hexkey:$2" \
		-kdfopt "hexprefix:$(proto_prefix "$4")" -kdfopt "label:derived psk" \
		-kdfopt "hexdata:$ctxhash" TLS13-KDF | tr -d ':\n' | lower
}

vectors=()
add() { # name hash epsk_hex ext_hex ctx_hex protocol kdf [expected_wire]
	local name=$1 h=$2 epsk=$3 ext=$4 ctx=$5 proto=$6 kdf=$7 wire x ip
	wire=$(imported_identity "$ext" "$ctx" "$proto" "$kdf")
	if [ -n "${8:-}" ] && [ "$wire" != "$8" ]; then
		echo "$name: ImportedIdentity $wire, published $8" >&2
		exit 1
	fi
	x=$(epskx "$h" "$epsk")
	ip=$(ipskx "$h" "$x" "$wire" "$proto" "$kdf")
	[ ${#ip} -eq $(( $(kdf_len "$kdf") * 2 )) ] || { echo "$name: bad ipskx length" >&2; exit 1; }
	vectors+=("$(jq -cn --arg name "$name" --arg epsk "$epsk" --arg ext "$ext" \
		--arg ctx "$ctx" --arg proto "$proto" --arg kdf "$kdf" --arg h "$h" \
		--arg wire "$wire" --arg x "$x" --arg ip "$ip" \
		'{name: $name, epsk_hash: $h, epsk: $epsk, external_identity: $ext,
		  context: $ctx, protocol: $proto, kdf: $kdf, imported_identity: $wire,
		  epskx: $x, ipskx: $ip}')")
}

# Published encoding vector (GnuTLS tests): CAFECAFE / DEADBEEF / TLS 1.3 / HKDF_SHA256.
add "gnutls-cafecafe-deadbeef" sha256 "$(seqhex 32)" cafecafe deadbeef tls1.3 HKDF_SHA256 \
	0004cafecafe0004deadbeef03040001

ext=$(asciihex "pskvault-test-identity")
# Non-empty context as RFC 9258 Appendix A suggests: both endpoints' identifiers.
ctx=$(asciihex "client=02:00:5e:00:53:01 server=02:00:5e:00:53:02")
for h in sha256 sha384; do
	epsk=$(seqhex "$(hashlen "$h")") # 00 01 .. 1f or 00 01 .. 2f
	for proto in tls1.3 dtls1.3; do
		for kdf in HKDF_SHA256 HKDF_SHA384; do
			k=$(echo "$kdf" | tr 'A-Z_' 'a-z-')
			add "epsk-$h/$proto/$k/empty-context" "$h" "$epsk" "$ext" "" "$proto" "$kdf"
			add "epsk-$h/$proto/$k/context" "$h" "$epsk" "$ext" "$ctx" "$proto" "$kdf"
		done
	done
done

# A 1-byte identity and a 64-byte EPSK (longer than HashLen for SHA-256).
add "epsk-sha256-64byte/tls1.3/hkdf-sha384/one-byte-identity" sha256 "$(seqhex 64)" 41 "" tls1.3 HKDF_SHA384

{
	printf '{\n  "generator": "testdata/importer/gen.sh",\n  "openssl": %s,\n  "vectors": [\n' \
		"$(openssl version | jq -R .)"
	n=${#vectors[@]}
	for i in "${!vectors[@]}"; do
		sep=","; [ "$i" -eq $((n - 1)) ] && sep=""
		printf '    %s%s\n' "${vectors[$i]}" "$sep"
	done
	printf '  ]\n}\n'
} >"$out"
