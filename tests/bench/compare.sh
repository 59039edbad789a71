#!/usr/bin/env bash
# Side-by-side benchmark: focalpoint (release build, embedded SQLite store) against
# Prometheus Alertmanager, on one machine, everything on 127.0.0.1.
#
#   tests/bench/compare.sh            # about 1.5 minutes after the build
#
# Workloads (each server alone on the machine with the load generator):
#  1. single-incident latency at a low rate (LAT_RATE/s for LAT_SECONDS s), one at a time:
#     hub: POST /api/v1/incidents -> the incident.raised event on a WebSocket client
#          (`focalpoint bench --clients 1`);
#     Alertmanager: POST /api/v2/alerts (one alert, unique label) -> webhook receipt
#          (tests/bench/am_bench.py; group_by ['...'], group_wait 0s).
#  2. sustained accepted incidents/s: closed loop, TPUT_CONCURRENCY concurrent requests
#     for TPUT_SECONDS s, one incident / one alert per POST, the same generator for both
#     (`focalpoint bench --max-throughput --target hub|alertmanager`).
# The hub answers 2xx only after a durable commit (SQLite WAL); Alertmanager keeps alerts
# in memory (snapshots to disk every 15 min), so its figures include no commit.
#
# Environment: LAT_RATE (20), LAT_SECONDS (10), TPUT_CONCURRENCY (64), TPUT_SECONDS (10),
# OUT (directory for the JSON results; default: a temporary directory, removed at exit).

source "$(dirname "$0")/lib.sh"

LAT_RATE="${LAT_RATE:-20}"
LAT_SECONDS="${LAT_SECONDS:-10}"
TPUT_CONCURRENCY="${TPUT_CONCURRENCY:-64}"
TPUT_SECONDS="${TPUT_SECONDS:-10}"
OUT="${OUT:-$WORK/results}"
mkdir -p "$OUT"

raise_fd_limit
build

AM=/usr/bin/prometheus-alertmanager
if [ ! -x "$AM" ]; then
    echo "== installing prometheus-alertmanager"
    apt-get install -y prometheus-alertmanager >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y prometheus-alertmanager >/dev/null; }
fi
echo "alertmanager: $("$AM" --version 2>&1 | head -n 1)"

echo "== hub"
OFFICER="$(issue_token th-duty)"
issue_token my-drugs >"$WORK/clients.tokens"
start_hub

echo "== alertmanager"
RECV_PORT="$(free_port)"
python3 "$ROOT/tests/bench/am_bench.py" receive --port "$RECV_PORT" >"$WORK/receiver.out" 2>&1 &
PIDS+=("$!")
RECV_URL="http://127.0.0.1:$RECV_PORT"
wait_http "$RECV_URL/count" 10
cat >"$WORK/alertmanager.yml" <<EOF
route:
  receiver: bench
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: bench
    webhook_configs:
      - url: $RECV_URL/hook
        send_resolved: false
EOF
AM_PORT="$(free_port)"
mkdir -p "$WORK/am-data"
"$AM" --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am-data" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= --log.level=warn \
    >"$WORK/am.out" 2>&1 &
PIDS+=("$!")
AM_URL="http://127.0.0.1:$AM_PORT"
wait_http "$AM_URL/-/ready" 30
echo "alertmanager: $AM_URL (webhook receiver $RECV_URL)"

echo
echo "== 1. latency, $LAT_RATE/s for $LAT_SECONDS s"
"$BIN" bench --url "$HUB_URL" --officer-token "$OFFICER" --client-tokens "$WORK/clients.tokens" \
    --clients 1 --rate "$LAT_RATE" --duration "$LAT_SECONDS" --json "$OUT/hub-latency.json"
echo
python3 "$ROOT/tests/bench/am_bench.py" latency --am "$AM_URL" --receiver "$RECV_URL" \
    --rate "$LAT_RATE" --duration "$LAT_SECONDS" --json "$OUT/am-latency.json"

echo
echo "== 2. sustained accepted incidents/s, $TPUT_CONCURRENCY concurrent for $TPUT_SECONDS s"
"$BIN" bench --max-throughput --url "$HUB_URL" --officer-token "$OFFICER" \
    --concurrency "$TPUT_CONCURRENCY" --duration "$TPUT_SECONDS" --json "$OUT/hub-throughput.json"
echo
"$BIN" bench --max-throughput --target alertmanager --url "$AM_URL" \
    --concurrency "$TPUT_CONCURRENCY" --duration "$TPUT_SECONDS" --json "$OUT/am-throughput.json"
sleep 2 # let the last notifications reach the receiver before counting
echo "  webhook receiver: $(python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('$RECV_URL/count', timeout=5)))")"

echo
python3 - "$OUT" <<'EOF'
import json, sys, os
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n)))
hl, al, ht, at = load("hub-latency.json"), load("am-latency.json"), load("hub-throughput.json"), load("am-throughput.json")
h1, a1 = hl["latency"]["raise_to_first_client"], al["latency"]["post_to_webhook"]
h2, a2 = ht["result"], at["result"]
def ratio(a, b, higher_better):
    if not a or not b:
        return "-"
    return f"{(a / b if higher_better else b / a):.2f}x"
rows = [
    ("latency p50 (ms), POST -> delivery", h1["p50_ms"], a1["p50_ms"], False),
    ("latency p99 (ms), POST -> delivery", h1["p99_ms"], a1["p99_ms"], False),
    ("latency max (ms), POST -> delivery", h1["max_ms"], a1["max_ms"], False),
    ("accepted incidents/s (closed loop)", h2["accepted_per_s"], a2["accepted_per_s"], True),
    ("request p50 (ms) under that load", h2["latency"]["p50_ms"], a2["latency"]["p50_ms"], False),
    ("request p99 (ms) under that load", h2["latency"]["p99_ms"], a2["latency"]["p99_ms"], False),
]
print(f"{'':38} {'focalpoint':>12} {'alertmanager':>13} {'hub advantage':>14}")
for label, h, a, hb in rows:
    print(f"{label:38} {h if h is not None else '-':>12} {a if a is not None else '-':>13} {ratio(h, a, hb):>14}")
print()
print("errors: hub non-2xx %s timeouts %s other %s; alertmanager non-2xx %s timeouts %s other %s" % (
    h2["non_2xx"], h2["timeouts"], h2["other_errors"], a2["non_2xx"], a2["timeouts"], a2["other_errors"]))
print("The hub's figures include a durable commit (SQLite WAL, synchronous=normal) before 2xx and")
print("fan-out to a WebSocket; Alertmanager's include no commit (alerts live in memory).")
print("Delivery: hub = WebSocket client of a focal point; Alertmanager = webhook receiver (Python).")
EOF
echo "(JSON results: $OUT)"
