#!/usr/bin/env bash
# Builds one FROM scratch image per program for each architecture, from static binaries built on
# this machine: nothing is pulled, so it works with no registry (see README, "Container images").
#
#   scripts/images.sh                       every program, linux/amd64 and linux/arm64
#   scripts/images.sh mqbroker app          some programs
#   IMAGE_ARCHES=amd64 scripts/images.sh    one architecture
#   IMAGES_NO_DOCKER=1 scripts/images.sh    the binaries and build contexts only
#   IMAGES_OUT=dir scripts/images.sh        under dir instead of bin/
#   scripts/images.sh daprd                 a local daprd image (no registry), see below
#
# For each architecture A: `go build` with CGO_ENABLED=0 GOOS=linux GOARCH=A into bin/linux_A/,
# then per program P a build context bin/images/linux_A/P/ (P's Dockerfile, the binary, and an
# empty folder that the Dockerfile copies in as each writable path, owned by 65532, and a 0700 one
# under private/ for a data directory), then
# `docker build --platform linux/A` of that folder. The container tests (tests/containers) build
# the same contexts with IMAGES_NO_DOCKER=1 and hand them to testcontainers-go. Tags: $IMAGE_PREFIX/P:$VERSION-A, and
# $IMAGE_PREFIX/P:$VERSION for the host's architecture. Works with the legacy builder (Docker
# Engine 20.10, no buildx) and with BuildKit.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
ARCHES=${IMAGE_ARCHES:-amd64 arm64}
PREFIX=${IMAGE_PREFIX:-mqdapr}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
SOURCE=${SOURCE:-https://github.com/mqdapr/mqdapr}
HOSTARCH=$($GO env GOHOSTARCH)
OUT=${IMAGES_OUT:-bin}

# program, its package, its Dockerfile
PROGRAMS=(
  "mqbroker     ./cmd/mqbroker     cmd/mqbroker/Dockerfile"
  "pubsub-mqtt5 ./cmd/pubsub-mqtt5 cmd/pubsub-mqtt5/Dockerfile"
  "state-kv     ./cmd/state-kv     cmd/state-kv/Dockerfile"
  "app          ./app              app/Dockerfile"
  "devicesim    ./cmd/devicesim    cmd/devicesim/Dockerfile"
  "daprd-watch  ./cmd/daprd-watch  cmd/daprd-watch/Dockerfile"
)

# daprd is not one of ours: only built when named, for the host's architecture, from the static
# daprd of scripts/daprd.sh (deploy/daprd/Dockerfile), tagged $PREFIX/daprd:<daprd version>.
daprd=
if [ $# -gt 0 ]; then # keep the programs named on the command line
  chosen=()
  for want in "$@"; do
    found=
    if [ "$want" = daprd ]; then daprd=1; continue; fi
    for p in "${PROGRAMS[@]}"; do read -r name _ _ <<<"$p"; [ "$name" = "$want" ] && chosen+=("$p") && found=1; done
    [ -n "$found" ] || { echo "images.sh: no program $want (mqbroker pubsub-mqtt5 state-kv app devicesim daprd-watch daprd)" >&2; exit 2; }
  done
  PROGRAMS=(${chosen[@]+"${chosen[@]}"})
fi
pkgs=()
for p in ${PROGRAMS[@]+"${PROGRAMS[@]}"}; do read -r _ pkg _ <<<"$p"; pkgs+=("$pkg"); done

if [ -n "$daprd" ]; then
  daprd_bin=$(./scripts/daprd.sh --static)
  daprd_version=$("$daprd_bin" --version | head -n1 | tr -d '[:space:]')
  ctx=$OUT/images/linux_$HOSTARCH/daprd
  rm -rf "$ctx"
  mkdir -p "$ctx/empty"
  chmod 0755 "$ctx/empty"
  cp deploy/daprd/Dockerfile "$ctx/Dockerfile"
  ln "$daprd_bin" "$ctx/daprd" 2>/dev/null || cp "$daprd_bin" "$ctx/daprd"
fi

start=$SECONDS
for arch in $ARCHES; do
  [ ${#pkgs[@]} -gt 0 ] || break
  out=$OUT/linux_$arch
  echo "images.sh: building static binaries for linux/$arch into $out/" >&2
  mkdir -p "$out"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -trimpath -ldflags '-s -w' -o "$out/" "${pkgs[@]}"
  for p in ${PROGRAMS[@]+"${PROGRAMS[@]}"}; do
    read -r name _ dockerfile <<<"$p"
    ctx=$OUT/images/linux_$arch/$name
    rm -rf "$ctx"
    mkdir -p "$ctx/empty"
    chmod 0755 "$ctx/empty"
    # private/<program>: a 0700 folder for a Dockerfile to copy in as /var/lib/<program> (COPY of
    # private/ into /var/lib/: a copied folder's own mode is not kept by the legacy builder, the
    # modes of what it holds are).
    mkdir -p "$ctx/private/$name"
    chmod 0700 "$ctx/private/$name"
    cp "$dockerfile" "$ctx/Dockerfile"
    ln "$out/$name" "$ctx/$name" 2>/dev/null || cp "$out/$name" "$ctx/$name"
  done
done
echo "images.sh: binaries in $((SECONDS - start)) s" >&2

if [ -n "${IMAGES_NO_DOCKER:-}" ]; then exit 0; fi
if ! docker info >/dev/null 2>&1; then
  echo "images.sh: no Docker Engine answers: built the binaries and contexts under $OUT/ only" >&2
  exit 1
fi

start=$SECONDS
for arch in $ARCHES; do
  for p in ${PROGRAMS[@]+"${PROGRAMS[@]}"}; do
    read -r name _ _ <<<"$p"
    tags=(-t "$PREFIX/$name:$VERSION-$arch")
    [ "$arch" = "$HOSTARCH" ] && tags+=(-t "$PREFIX/$name:$VERSION")
    docker build -q --platform "linux/$arch" \
      --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE" \
      "${tags[@]}" "$OUT/images/linux_$arch/$name" >/dev/null
    echo "$PREFIX/$name:$VERSION-$arch"
  done
done
if [ -n "$daprd" ]; then
  docker build -q --platform "linux/$HOSTARCH" \
    --build-arg "VERSION=$daprd_version" --build-arg "REVISION=$daprd_version" \
    --build-arg "SOURCE=https://github.com/dapr/dapr" \
    -t "$PREFIX/daprd:$daprd_version" "$OUT/images/linux_$HOSTARCH/daprd" >/dev/null
  echo "$PREFIX/daprd:$daprd_version"
fi
echo "images.sh: images in $((SECONDS - start)) s" >&2
