#!/usr/bin/env bash
# Installs what the side-by-side benchmarks (bench/, `make bench-harness`) need beyond the tests:
# the tests' dependencies (Mosquitto) and redis-server (Debian package), the peer of state.mqttkv.
# The harness starts its own redis-server on a free loopback port; the system-wide one the package
# may start is stopped. Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

"$(dirname "$0")/install-test-deps.sh"
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing benchmark dependencies: redis-server" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
