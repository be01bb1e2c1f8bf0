#!/usr/bin/env bash
# packaging/build.sh: build the pskvault .deb and .rpm into dist/ with nfpm
# (pinned below, fetched and built through the Go module proxy on first use;
# docs/DESIGN.md says why nfpm). Run from anywhere:
#
#   packaging/build.sh                 both packages, for this machine's arch
#   packaging/build.sh deb             only the .deb (or: rpm)
#
# Environment: PSKVAULT_VERSION (default: wire.Version (api/wire) with "-dev" as
# "~dev", so a release sorts after it), GOARCH (default: go env GOARCH),
# DIST (default: dist), NFPM (an nfpm binary to use instead of go run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

NFPM_VERSION=v2.48.0
# --nfpm: only make sure the pinned nfpm is there and print its path.
nfpm_only=
if [ "${1:-}" = --nfpm ]; then nfpm_only=1; shift; fi
formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(deb rpm)

dist=${DIST:-dist}
arch=${GOARCH:-$(go env GOARCH)}
if [ -z "${PSKVAULT_VERSION:-}" ]; then
	PSKVAULT_VERSION=$(sed -n 's/^const Version = "\(.*\)"$/\1/p' api/wire/types.go)
	if [ -z "$PSKVAULT_VERSION" ]; then
		echo "build.sh: no 'const Version = \"...\"' in api/wire/types.go: set PSKVAULT_VERSION" >&2
		exit 1
	fi
	PSKVAULT_VERSION=${PSKVAULT_VERSION/-/\~}
fi

# nfpm itself: built once into a cache directory (go run would relink it on
# every call, which costs a minute on a small machine).
nfpm=${NFPM:-}
if [ -z "$nfpm" ]; then
	cache=${XDG_CACHE_HOME:-${HOME:-$(go env GOPATH)}/.cache}/pskvault/nfpm-$NFPM_VERSION
	nfpm=$cache/nfpm
	if [ ! -x "$nfpm" ]; then
		mkdir -p "$cache"
		GOBIN=$cache CGO_ENABLED=0 go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
	fi
fi

if [ -n "$nfpm_only" ]; then echo "$nfpm"; exit 0; fi

# The binary goes where packaging/nfpm.yaml looks for it (nfpm does not
# expand variables in source paths).
mkdir -p "$dist"
stage=packaging/.stage
rm -rf "$stage"
mkdir -p "$stage"
trap 'rm -rf "$stage"' EXIT
# cgo on: the PKCS#11 backend dlopens C modules, and a CGO_ENABLED=0 build
# has only a stub that refuses every pkcs11: backend. Another GOARCH than
# the host's then needs CC set to a cross compiler.
CGO_ENABLED=1 GOOS=linux GOARCH=$arch go build -trimpath -o "$stage/pskvault" ./cmd/pskvault

# Man pages and shell completions, made by the binary from its own command
# definitions (pskvault __gen-docs: cobra's doc and completion generators over
# the same registry the help pages come from), so they cannot drift from it;
# TestDeb regenerates them with the installed binary and compares. Dated with
# the last commit (reproducible), today outside a checkout. Another GOARCH:
# a host build makes them.
gen=$stage/pskvault
if [ "$arch" != "$(go env GOHOSTARCH)" ]; then
	gen=$stage/pskvault-host
	go build -trimpath -o "$gen" ./cmd/pskvault
fi
docdate=$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
"$gen" __gen-docs --date "$docdate" "$stage/docs"
gzip -9n "$stage"/docs/man1/*.1

export PSKVAULT_ARCH=$arch PSKVAULT_VERSION
for f in "${formats[@]}"; do
	case $f in
	deb | rpm) ;;
	*) echo "build.sh: unknown package format $f (want deb or rpm)" >&2; exit 2 ;;
	esac
	"$nfpm" package --config packaging/nfpm.yaml --packager "$f" --target "$dist/"
done
