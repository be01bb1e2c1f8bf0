#!/usr/bin/env bash
# test.sh: run every pskvault test against real components: swtpm (TPM 2.0
# simulator), a SoftHSM2 token, and the openssl / gnutls binaries. Installs the
# Debian packages it needs when they are missing (as root, or through sudo).
# The tests start and stop their own simulators.
#
#   ./test.sh                      vet, race-enabled tests, short fuzz runs
#   FUZZTIME=1000000x ./test.sh    longer fuzzing
#
# Fuzz budgets are counts of inputs, not durations: with a duration, Go 1.26's
# fuzz coordinator can fail a target with a bare "context deadline exceeded"
# when the time runs out (golang/go#75804, fixed in Go 1.27); a count never
# starts that deadline.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

# command -> Debian package
declare -A need=(
	[swtpm]=swtpm [swtpm_setup]=swtpm-tools [tpm2_hmac]=tpm2-tools
	[softhsm2-util]=softhsm2 [pkcs11-tool]=opensc
	[openssl]=openssl [gnutls-cli]=gnutls-bin [psktool]=gnutls-bin
	[setpriv]=util-linux [gcc]=gcc [systemd-analyze]=systemd
)
# file that must exist -> Debian package (headers and libraries the C client
# library, its TLS glue and the consumer tests build against)
declare -A needfile=(
	[/usr/include/openssl/ssl.h]=libssl-dev
	[/usr/include/gnutls/gnutls.h]=libgnutls28-dev
)
need+=([stunnel4]=stunnel4 [mosquitto]=mosquitto [mosquitto_pub]=mosquitto-clients [make]=make [pkg-config]=pkg-config [debootstrap]=debootstrap)
# packaging/ tests: rpm reads back the .rpm nfpm builds, logrotate runs the snippet (dpkg-deb comes with every Debian)
need+=([rpm]=rpm [dpkg-deb]=dpkg [logrotate]=logrotate)
# cmd/pskvault's completion tests load the scripts into real shells (bash with
# bash-completion, which cobra's bash script builds on; zsh; fish)
need+=([zsh]=zsh [fish]=fish)
# packaging/: man -l formats every installed man page
need+=([man]=man-db [groff]=groff-base)
needfile+=([/usr/share/bash-completion/bash_completion]=bash-completion)
missing=()
for cmd in "${!need[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
for f in "${!needfile[@]}"; do
	[ -e "$f" ] || missing+=("${needfile[$f]}")
done
if [ ${#missing[@]} -gt 0 ]; then
	pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
	echo "test.sh: installing: $pkgs"
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $pkgs >/dev/null
fi

# Tests that need a simulator or a TLS binary fail instead of skipping.
export PSKVAULT_REQUIRE_SIMULATORS=1

# The RFC 9258-native stacks (Botan 3.13, GnuTLS 3.8) that clients/botan is
# tested against live in a Debian forky chroot, built here when it is missing
# or incomplete (a few minutes; cached in /var/cache/pskvault/forky, or
# $PSKVAULT_FORKY_CHROOT) and reused after. One line says which versions.
echo "== native RFC 9258 stacks (Debian forky chroot for clients/botan)"
if [ "$(id -u)" = 0 ]; then
	clients/botan/chroot.sh >/dev/null
else
	echo "not root: clients/botan's interop tests cannot build or enter the chroot (they will fail)"
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== C library: make -C clients/c check (ASan/UBSan unit tests against a fake daemon)"
make -C clients/c -s clean
make -C clients/c -s all check
echo "== go test -race"
go test -race -count=1 -timeout 30m ./...

fuzztime=${FUZZTIME:-100000x}
echo "== fuzz ($fuzztime per target)"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "-- $pkg $f"
		go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg"
	done
done
echo "test.sh: all tests passed"
