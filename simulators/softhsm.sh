#!/bin/sh
# simulators/softhsm.sh: a throwaway SoftHSM2 token for pskvault.
#
#   simulators/softhsm.sh init DIR [LABEL]   # new token LABEL (default pskvault) in DIR
#   simulators/softhsm.sh destroy DIR        # remove DIR's token store and PIN file
#
# init writes DIR/softhsm2.conf (token store DIR/tokens, created 0700),
# initializes a token with a random user PIN and SO PIN, stores the user
# PIN in DIR/user.pin (0600) and the SO PIN in DIR/so.pin (0600), and prints
# shell lines to eval:
#
#   eval "$(simulators/softhsm.sh init /tmp/hsm)"
#   pskvault pkcs11 probe "$PSKVAULT_PKCS11_URI"
#   pskvault init --node-id n1 --backend "$PSKVAULT_PKCS11_URI"
#
# The PIN never appears on a command line pskvault runs: the URI names the
# PIN file. (softhsm2-util itself only takes the PINs as arguments, so this
# script is for throwaway tokens, not real ones.) The Go tests use
# backends/pkcs11/pkcs11test, which does the same.
set -eu

usage() { echo "usage: $0 init DIR [LABEL] | destroy DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2

module=${PSKVAULT_SOFTHSM_MODULE:-}
if [ -z "$module" ]; then
	for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
		/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
		if [ -e "$m" ]; then module=$m; break; fi
	done
fi

case $cmd in
init)
	label=${3:-pskvault}
	command -v softhsm2-util >/dev/null 2>&1 || { echo "softhsm.sh: error: softhsm2-util is not installed (apt-get install softhsm2)" >&2; exit 1; }
	[ -n "$module" ] || { echo "softhsm.sh: error: libsofthsm2.so not found (apt-get install softhsm2, or set PSKVAULT_SOFTHSM_MODULE)" >&2; exit 1; }
	case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac
	if [ -e "$dir/softhsm2.conf" ]; then
		echo "softhsm.sh: error: $dir already holds a token store; pick a new DIR or run: $0 destroy $dir" >&2
		exit 1
	fi
	umask 077
	mkdir -p "$dir/tokens"
	chmod 700 "$dir" "$dir/tokens"
	printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$dir/tokens" >"$dir/softhsm2.conf"
	pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
	so=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
	printf '%s\n' "$pin" >"$dir/user.pin"
	printf '%s\n' "$so" >"$dir/so.pin"
	SOFTHSM2_CONF=$dir/softhsm2.conf softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so" >/dev/null
	echo "export SOFTHSM2_CONF='$dir/softhsm2.conf'"
	echo "export PSKVAULT_PKCS11_URI='pkcs11:token=$label?module-path=$module&pin-source=file:$dir/user.pin'"
	;;
destroy)
	[ -e "$dir/softhsm2.conf" ] || { echo "softhsm.sh: error: $dir holds no token store" >&2; exit 1; }
	rm -rf "$dir/tokens" "$dir/softhsm2.conf" "$dir/user.pin" "$dir/so.pin"
	;;
*)
	usage
	;;
esac
