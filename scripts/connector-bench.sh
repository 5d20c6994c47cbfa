#!/usr/bin/env bash
# Sustained readings/s of the sample connector (app/) through a real daprd, durable broker
# (mqbroker -data-dir) and both pluggable components, for one or more app binaries alternated
# round by round (same daprd, same machine, same load). Prints one line per round and binary.
#
#   scripts/connector-bench.sh [-r rounds] [-n readings] [-p publishers] [-d devices] [-a "app args"] app-binary...
#
# The broker is durable (-data-dir) unless BROKER_MEM=1. DAPRD (default: scripts/daprd.sh), BIN (default: a fresh build of the broker, components and
# devicesim from this checkout). PPROF=1 serves pprof on 127.0.0.1:6060 for the app (a binary that
# has -pprof-addr) and saves CPU, block and mutex profiles of the middle of the run to $OUT.
# Each line also gives the CPU per row (µs, user + system from /proc/<pid>/stat over the drain)
# of every process: app, daprd, pubsub (pubsub-mqtt5), state (state-kv), broker (mqbroker), and
# mqbroker's packets in (a state request is one; so is a PUBACK), messages in and store commits per
# row: the operations per row, which load on the machine does not change.
# Figures are for comparison in one run, not assertions.
set -euo pipefail
rounds=3 n=4000 pubs=4 devs=8 appargs=""
while getopts "r:n:p:d:a:" o; do
  case $o in r) rounds=$OPTARG ;; n) n=$OPTARG ;; p) pubs=$OPTARG ;; d) devs=$OPTARG ;; a) appargs=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-r rounds] [-n readings] [-p publishers] [-d devices] [-a args] app-binary..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
DAPRD=${DAPRD:-$("$root/scripts/daprd.sh")}
OUT=${OUT:-$(mktemp -d /tmp/connector-bench-out.XXXX)}; mkdir -p "$OUT"
work=$(mktemp -d /tmp/connector-bench.XXXX)
if [ -z "${BIN:-}" ]; then
  BIN=$work/bin
  (cd "$root" && go build -o "$BIN/" ./cmd/mqbroker ./cmd/pubsub-mqtt5 ./cmd/state-kv ./cmd/devicesim)
fi
pids=() socks=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" "${socks[@]}"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 600); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "timeout: $1" >&2; return 1; }
# mqbroker's packets in (each state request is one), messages in and store commits, space-separated.
# messages_in_total has a series per QoS: summed. printf %d: client_golang may write 1.2e+06.
bmetrics() { curl -s "127.0.0.1:$bp/metrics" | awk '$1=="mqdapr_broker_packets_in_total"{p=$2} $1 ~ /^mqdapr_broker_messages_in_total[{]/{m+=$2} $1=="mqdapr_broker_store_commits_total"{c=$2} END{printf "%d %d %d\n", p, m, c}'; }
metric() { curl -s "127.0.0.1:$hp/metrics" | awk -v k="mqdapr_connector_$1_total" '$1==k{print $2}'; }
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system ticks of a live process
comp() { # name type url id
  printf 'apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: %s\nspec:\n  type: %s\n  version: v1\n  metadata:\n    - name: url\n      value: "%s"\n    - name: clientID\n      value: "%s"\n' "$1" "$2" "$3" "$4"
}

one() { # app-binary label
  local d=$work/run sock mp hp gp ap bp
  rm -rf "$d"; mkdir -p "$d/res"; sock=$(mktemp -d /tmp/mqd-b.XXXX); socks+=("$sock")
  mp=$(port); hp=$(port); gp=$(port); ap=$(port); bp=$(port)
  local bargs=(-data-dir "$d/broker")
  [ -n "${BROKER_MEM:-}" ] && bargs=()
  "$BIN/mqbroker" -addr "127.0.0.1:$mp" -metrics-addr "127.0.0.1:$bp" "${bargs[@]}" >"$d/broker.log" 2>&1 & pids+=($!)
  local -A who=([broker]=$!)
  waitfor "bash -c '</dev/tcp/127.0.0.1/$mp'"
  comp mqtt pubsub.mqttv5 "mqtt://127.0.0.1:$mp" bench-r1 >"$d/res/pubsub.yaml"
  comp kv state.mqttkv "mqtt://127.0.0.1:$mp" bench-r1 >"$d/res/state.yaml"
  export DAPR_COMPONENT_SOCKETS_FOLDER=$sock DAPR_COMPONENTS_SOCKETS_FOLDER=$sock XDG_STATE_HOME=$d/xdg
  "$BIN/pubsub-mqtt5" >"$d/pubsub.log" 2>&1 & pids+=($!); who[pubsub]=$!
  "$BIN/state-kv" >"$d/state.log" 2>&1 & pids+=($!); who[state]=$!
  waitfor "test -S $sock/mqttv5.sock -a -S $sock/mqttkv.sock"
  local pp=()
  [ -n "${PPROF:-}" ] && pp=(-pprof-addr 127.0.0.1:6060)
  # shellcheck disable=SC2086
  "$1" -app-port "$ap" -dapr-grpc-port "$gp" -health-addr "127.0.0.1:$hp" -lake "$d/lake" -replica r1 "${pp[@]}" $appargs >"$d/app.log" 2>&1 & pids+=($!)
  local app=$!; who[app]=$!
  waitfor "curl -sf 127.0.0.1:$hp/healthz"
  local dh; dh=$(port)
  "$DAPRD" --app-id connector --resources-path "$d/res" --dapr-http-port "$dh" --dapr-grpc-port "$gp" \
    --dapr-internal-grpc-port "$(port)" --metrics-port "$(port)" --dapr-listen-addresses 127.0.0.1 \
    --app-port "$ap" --app-protocol grpc --log-level warn >"$d/daprd.log" 2>&1 & pids+=($!)
  local daprd=$!; who[daprd]=$!
  waitfor "curl -sf 127.0.0.1:$dh/v1.0/healthz"
  # The subscription exists once a reading gets through (earlier ones find no subscriber).
  local w=1
  until [ "$(metric written)" -ge 1 ]; do
    "$BIN/devicesim" -broker "mqtt://127.0.0.1:$mp" -client-id warm -devices "$devs" -rate 0 -count 1 -seq-start "$w" >/dev/null 2>&1
    w=$((w + 1)); sleep 0.2
  done
  local base; base=$(metric written)
  # The backlog is published while the app is stopped (SIGSTOP: daprd's deliveries wait), so the
  # figure is the connector's own pace, not the publishers'.
  local per=$((n / pubs)) i ppids=()
  local st0; st0="$(metric state_calls) $(metric state_keys)" # read now: a stopped app does not answer
  kill -STOP "$app"
  for i in $(seq "$pubs"); do
    "$BIN/devicesim" -broker "mqtt://127.0.0.1:$mp" -client-id "pub$i" -devices "$devs" -rate 0 -count "$per" \
      -seq-start $((i * 100000000)) -publish-config=false >"$d/pub$i.log" 2>&1 & ppids+=($!); pids+=($!)
  done
  wait "${ppids[@]}"
  local total=$((base + per * pubs))
  local k b0 b1; local -A cpu0=()
  b0="$(bmetrics) $st0"
  for k in "${!who[@]}"; do cpu0[$k]=$(cpu "${who[$k]}"); done
  kill -CONT "$app"
  local t0; t0=$(date +%s.%N)
  if [ -n "${PPROF:-}" ]; then
    curl -s "127.0.0.1:6060/debug/pprof/profile?seconds=5" >"$OUT/$2.cpu.pprof" & local c1=$!
    curl -s "127.0.0.1:6060/debug/pprof/trace?seconds=2" >"$OUT/$2.trace" & local c2=$!
  fi
  for _ in $(seq 6000); do [ "$(metric written)" -ge "$total" ] && break; sleep 0.05; done
  local t1; t1=$(date +%s.%N)
  b1="$(bmetrics) $(metric state_calls) $(metric state_keys)"
  local -A cpu1=()
  for k in "${!who[@]}"; do cpu1[$k]=$(cpu "${who[$k]}"); done
  if [ -n "${PPROF:-}" ]; then
    wait "$c1" "$c2" || true
    curl -s "127.0.0.1:6060/debug/pprof/block" >"$OUT/$2.block.pprof"
    curl -s "127.0.0.1:6060/debug/pprof/mutex" >"$OUT/$2.mutex.pprof"
  fi
  local w0=$base w1; w1=$(metric written)
  local rows; rows=$(cat "$d"/lake/*/*/*.jsonl | wc -l)
  printf '%-8s %8.1f readings/s  (written %s of %s, %s lake rows, dups %s, failed %s)\n' "$2" \
    "$(echo "($w1 - $w0) / ($t1 - $t0)" | bc -l)" "$(metric written)" "$total" "$rows" "$(metric duplicates_skipped)" "$(metric failed)"
  local line="         CPU µs/row:" sum=0 us
  for k in app daprd pubsub state broker; do
    us=$(( (cpu1[$k] - cpu0[$k]) * 1000000 / tck / (w1 - w0) ))
    sum=$((sum + us)); line+=" $k $us"
  done
  echo "$line  total $sum  (load $(cut -d' ' -f1-3 /proc/loadavg))"
  # The app's state_calls/state_keys counters (daprd round trips, keys in them): "-" for an app
  # without them.
  echo "$b0 | $b1" | awk -F' [|] ' -v n=$((w1 - w0)) '{split($1, a, " "); split($2, b, " ")
    st = (a[4] == "" || b[4] == "") ? "-" : sprintf("%.2f calls, %.2f keys", (b[4]-a[4])/n, (b[5]-a[5])/n)
    printf "         per row: broker packets in %.2f, messages in %.2f, store commits %.2f; app state %s\n", (b[1]-a[1])/n, (b[2]-a[2])/n, (b[3]-a[3])/n, st}'

  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=(); rm -rf "$sock"
}

for r in $(seq "$rounds"); do
  i=0
  for b in "$@"; do i=$((i + 1)); one "$b" "r$r-b$i"; done
done
echo "profiles (PPROF=1): $OUT"
