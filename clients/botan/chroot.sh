#!/usr/bin/env bash
# clients/botan/chroot.sh: make sure the Debian forky (testing) chroot with the
# RFC 9258-native TLS stacks exists, building it when it is missing or
# incomplete, and print one line naming it and the Botan and GnuTLS versions
# inside it. Needs root (debootstrap, and chroot to build and run in it).
#
#   clients/botan/chroot.sh            build or reuse; prints the path on stdout
#   PSKVAULT_FORKY_CHROOT=/dir ...     where it lives (default /var/cache/pskvault/forky)
#   PSKVAULT_DEBIAN_MIRROR=URI ...     mirror (default: the Debian URI in the apt sources)
#
# Debian 12's debootstrap has no forky script: the sid one is passed explicitly
# (forky and sid share the same bootstrap logic).
#
# A build goes into DIR.partial and is renamed to DIR only after the packages
# are installed and a stamp naming them is written, so an interrupted build
# never looks complete: the next run removes DIR.partial (unmounting whatever
# debootstrap left mounted in it first) and starts again. A DIR without the
# stamp, or with a stamp for another package list, or missing one of the files
# the tests build against, is rebuilt the same way.
set -euo pipefail

dir=${PSKVAULT_FORKY_CHROOT:-/var/cache/pskvault/forky}
dir=${dir%/}
packages="libbotan-3-dev,g++,gcc,make,libgnutls28-dev,pkg-config"
stamp_name=.pskvault-chroot-complete
# files whose absence means the chroot cannot serve the tests
required=(
	/usr/include/botan-3/botan/tls_external_psk.h
	/usr/include/gnutls/gnutls.h
	/usr/bin/g++
	/usr/bin/gcc
	/usr/bin/make
	/usr/bin/pkg-config
)

log() { echo "chroot.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

mirror=${PSKVAULT_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	# The first http(s) Debian archive URI in the apt sources (deb822 or
	# one-line format), not the security archive.
	mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
		grep -vE '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
	mirror=${mirror:-http://deb.debian.org/debian}
fi

script=/usr/share/debootstrap/scripts/forky
[ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
[ -e "$script" ] || die "debootstrap has neither a forky nor a sid script"

# unmount_under PATH: unmount everything mounted at or below PATH, deepest
# first, so that removing PATH can never reach into a host file system.
unmount_under() {
	local p=$1 m
	awk -v p="$p" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo |
		sort -r | while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" || die "cannot unmount $m"
		done
	if awk -v p="$p" '$5 == p || index($5, p "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
		die "something is still mounted under $p; refusing to remove it"
	fi
}

remove_tree() {
	local p=$1
	[ -e "$p" ] || return 0
	unmount_under "$p"
	rm -rf --one-file-system "$p"
}

complete() {
	local f
	[ -f "$dir/$stamp_name" ] || return 1
	[ "$(cat "$dir/$stamp_name")" = "$packages" ] || return 1
	for f in "${required[@]}"; do
		[ -e "$dir$f" ] || return 1
	done
	chroot "$dir" pkg-config --exists botan-3 gnutls 2>/dev/null || return 1
}

mkdir -p "$(dirname "$dir")"
# One builder at a time (go test runs packages in parallel).
exec 9>"$dir.lock"
flock 9

if ! complete; then
	if [ -e "$dir" ]; then
		log "$dir is incomplete or stale; rebuilding it"
		remove_tree "$dir"
	fi
	remove_tree "$dir.partial"
	log "building $dir (Debian forky, minbase, $packages) from $mirror"
	start=$(date +%s)
	if ! debootstrap --variant=minbase --include="$packages" forky "$dir.partial" "$mirror" "$script" \
		>"$dir.debootstrap.log" 2>&1; then
		tail -n 20 "$dir.debootstrap.log" >&2 || true
		remove_tree "$dir.partial"
		die "debootstrap failed (log: $dir.debootstrap.log)"
	fi
	unmount_under "$dir.partial"
	# Drop the downloaded .debs: the cache is the installed tree, not the archives.
	rm -f "$dir.partial"/var/cache/apt/archives/*.deb
	printf '%s' "$packages" >"$dir.partial/$stamp_name"
	sync -f "$dir.partial/$stamp_name" 2>/dev/null || sync
	mv -T "$dir.partial" "$dir"
	complete || die "$dir was built but is missing files the tests need"
	log "built $dir in $(($(date +%s) - start)) s"
fi

botan=$(chroot "$dir" pkg-config --modversion botan-3)
gnutls=$(chroot "$dir" pkg-config --modversion gnutls)
gxx=$(chroot "$dir" g++ -dumpfullversion)
echo "chroot.sh: Debian forky chroot $dir: Botan $botan, GnuTLS $gnutls, g++ $gxx" >&2
echo "$dir"
