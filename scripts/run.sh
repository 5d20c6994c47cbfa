#!/usr/bin/env bash
# `make run`: runs mqdapr on the embedded default on this machine: the embedded broker (mqbroker,
# durable data directory) and the pluggable pub/sub component serving its unix socket, with
# prefixed logs. Ctrl-C stops everything and leaves no stale socket.
#
# Not yet here (issue 5): daprd, the state store component and the sample connector app.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${MQDAPR_RUN_DIR:-$PWD/.run}
MQTT_ADDR=${MQDAPR_MQTT_ADDR:-127.0.0.1:1883}
SOCKETS=${DAPR_COMPONENTS_SOCKETS_FOLDER:-$RUN_DIR/sockets}
mkdir -p "$RUN_DIR/data" "$SOCKETS"
rm -f "$SOCKETS"/*.sock

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$SOCKETS"/*.sock
  echo "[run] stopped; data kept in $RUN_DIR/data"
}
trap cleanup INT TERM EXIT

prefix() { sed -u "s/^/[$1] /"; }

./bin/mqbroker -addr "$MQTT_ADDR" -data-dir "$RUN_DIR/data" 2>&1 | prefix broker &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/${MQTT_ADDR%:*}/${MQTT_ADDR#*:}") 2>/dev/null && break
  sleep 0.1
done

DAPR_COMPONENT_SOCKETS_FOLDER="$SOCKETS" DAPR_COMPONENTS_SOCKETS_FOLDER="$SOCKETS" \
  ./bin/pubsub-mqtt5 2>&1 | prefix pubsub &
pids+=($!)

echo "[run] broker on mqtt://$MQTT_ADDR (data in $RUN_DIR/data); pub/sub component socket in $SOCKETS"
echo "[run] point daprd at it: DAPR_COMPONENTS_SOCKETS_FOLDER=$SOCKETS daprd --resources-path ./components.yaml ..."
echo "[run] Ctrl-C to stop"
wait
