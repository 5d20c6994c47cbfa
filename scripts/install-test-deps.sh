#!/usr/bin/env bash
# Installs what the tests need when it is missing: Mosquitto (Debian package) as the third-party
# MQTT v5 broker, its command-line clients (mosquitto-clients: the broker's 3.1.1 tests and the
# client matrix, tests/clients), and a Compose tool for the container tests' run of
# docker-compose.yaml (Debian's docker-compose, unless `docker compose` or `docker-compose` is
# there). Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# mosquitto_pub / mosquitto_sub: third-party MQTT 3.1.1 and v5 clients (broker tests, tests/clients).
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need+=(docker-compose)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing test dependencies: ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian package starts a system-wide Mosquitto on :1883; the tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
