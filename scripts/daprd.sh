#!/usr/bin/env bash
# Prints the path of a daprd binary of the pinned version, building it once into a cache folder
# when none fits. Order: $DAPRD if set, daprd on PATH, ~/.dapr/bin/daprd (when its version
# matches), then $MQDAPR_TOOLS/daprd-<version> (built here from the Go module proxy).
#
#   scripts/daprd.sh            any daprd of the version (the end-to-end tests run it as a process)
#   scripts/daprd.sh --static   only a statically linked one (for a FROM scratch image): daprd on
#                               PATH or in ~/.dapr/bin is skipped when it is not static
#   scripts/daprd.sh --cached   never build: exit 1 when no daprd of the version is at hand
#                               (bench/ uses it for daprd 1.15.0, whose build it does not wait for)
#
# The cache entry is always built static (CGO_ENABLED=0): a cached daprd that is not (built by an
# older version of this script) is rebuilt once, in place. "Static" is read from the binary's Go
# build information (`go version -m`: CGO_ENABLED=0), which needs nothing but Go; where readelf
# exists, the ELF program headers are checked for an interpreter too.
#
# Why v1.16.0: it builds from the module proxy on this kind of machine (v1.16.2/.5/.8 and v1.17.0
# do not: dependencies missing from the proxy or checksum database). daprd 1.16 dispatches
# pluggable pub/sub messages one at a time per subscription; DAPRD_VERSION=v1.15.0 also builds
# and dispatches concurrently.
#
# `go install github.com/dapr/dapr/cmd/daprd@V` fails because dapr's go.mod has replace
# directives, so this builds a throw-away wrapper module whose go.mod is dapr's own (requires and
# replaces) plus a require of dapr itself, with the stablecomponents tag (without it daprd panics
# at start). Cold: about 15 minutes on 2 cores; cached: instant.
set -euo pipefail

static_only=
cached_only=
for arg in "$@"; do
  case "$arg" in
    --static) static_only=1 ;;
    --cached) cached_only=1 ;;
    *) echo "usage: $0 [--static] [--cached]" >&2; exit 2 ;;
  esac
done
VERSION=${DAPRD_VERSION:-v1.16.0}
TOOLS=${MQDAPR_TOOLS:-$HOME/.cache/mqdapr/tools}
want=${VERSION#v}

fits() { # $1: a daprd binary
  [ -x "$1" ] || return 1
  local v
  v=$("$1" --version 2>/dev/null | head -n1 | tr -d '[:space:]') || return 1
  [ "$v" = "$want" ]
}

static() { # $1: a daprd binary; true when statically linked
  go version -m "$1" 2>/dev/null | grep -q '^[[:space:]]*build[[:space:]]*CGO_ENABLED=0$' || return 1
  if command -v readelf >/dev/null 2>&1; then
    ! readelf -lW "$1" 2>/dev/null | grep -q 'Requesting program interpreter'
  fi
}

usable() { fits "$1" && { [ -z "$static_only" ] || static "$1"; }; }

if [ -n "${DAPRD:-}" ]; then
  fits "$DAPRD" || { echo "daprd.sh: \$DAPRD=$DAPRD is not daprd $want" >&2; exit 1; }
  if [ -n "$static_only" ] && ! static "$DAPRD"; then
    echo "daprd.sh: \$DAPRD=$DAPRD is not statically linked" >&2; exit 1
  fi
  echo "$DAPRD"; exit 0
fi
if p=$(command -v daprd 2>/dev/null) && usable "$p"; then echo "$p"; exit 0; fi
if usable "$HOME/.dapr/bin/daprd"; then echo "$HOME/.dapr/bin/daprd"; exit 0; fi
out="$TOOLS/daprd-$VERSION"
if fits "$out" && static "$out"; then echo "$out"; exit 0; fi
if [ -n "$cached_only" ]; then
  echo "daprd.sh: no daprd $want at hand (--cached: not building it; run DAPRD_VERSION=$VERSION $0 to build it)" >&2
  exit 1
fi
if [ -e "$out" ]; then
  echo "daprd.sh: $out is not a static daprd $want: rebuilding it (once)" >&2
fi

mkdir -p "$TOOLS"
# One build at a time per cache entry: a second caller (another make test, a parallel script)
# waits for the first one's build and then takes its result instead of compiling daprd again.
if command -v flock >/dev/null 2>&1 && [ -z "${MQDAPR_DAPRD_LOCKED:-}" ]; then
  exec 9>"$out.lock"
  if ! flock -n 9; then
    echo "daprd.sh: another build of $out is under way; waiting for it" >&2
    flock 9
  fi
  export MQDAPR_DAPRD_LOCKED=1
  if fits "$out" && static "$out"; then echo "$out"; exit 0; fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work" "${tmp:-}"' EXIT
echo "daprd.sh: building daprd $VERSION into $out (first time only, ~15 min on 2 cores)" >&2
cd "$work"
moddir=$(GOFLAGS=-mod=mod go mod download -json "github.com/dapr/dapr@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$moddir" ] || { echo "daprd.sh: cannot download github.com/dapr/dapr@$VERSION" >&2; exit 1; }
# dapr's go.mod, renamed, plus a require of dapr itself; relative replaces point into the module.
sed -e 's#^module github.com/dapr/dapr$#module mqdapr.local/daprdbuild#' \
    -e "s#=> \./#=> $moddir/#" "$moddir/go.mod" > go.mod
cp "$moddir/go.sum" go.sum
chmod u+w go.mod go.sum
printf '\nrequire github.com/dapr/dapr %s\n' "$VERSION" >> go.mod
tmp="$out.tmp.$$"
CGO_ENABLED=0 go build -mod=mod -tags stablecomponents \
  -ldflags "-X github.com/dapr/dapr/pkg/buildinfo.version=$want" \
  -o "$tmp" github.com/dapr/dapr/cmd/daprd
static "$tmp" || { echo "daprd.sh: built $tmp but it is not statically linked" >&2; exit 1; }
# Atomic: a daprd already running from the old entry keeps its file.
mv "$tmp" "$out"
fits "$out" || { echo "daprd.sh: built $out but it does not report version $want" >&2; exit 1; }
echo "$out"
