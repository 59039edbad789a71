#!/usr/bin/env bash
# Restart benchmark: CLIENTS WebSocket clients on a release hub, incidents raised at RATE/s;
# mid-run the hub is killed with SIGKILL and started again on the same address and store.
# `focalpoint bench --reconnect` clients reconnect with ?after=<last cursor they saw>; the
# report says how long from the first loss to the last client live again, and whether
# every raise the hub accepted reached every client exactly once (no gap).
#
#   tests/bench/restart.sh                  # 10,000 clients
#   CLIENTS=1000 tests/bench/restart.sh
#
# Environment: CLIENTS (10000), RATE (10), DURATION (20 s), OUT (JSON results directory).

source "$(dirname "$0")/lib.sh"

CLIENTS="${CLIENTS:-10000}"
RATE="${RATE:-10}"
DURATION="${DURATION:-20}"
OUT="${OUT:-$WORK/results}"
mkdir -p "$OUT"

raise_fd_limit
build
if [ "$((CLIENTS + 100))" -gt "$(ulimit -n)" ]; then
    echo "open-files limit $(ulimit -n) is too low for $CLIENTS clients"; exit 1
fi
OFFICER="$(issue_token th-duty)"
for id in my-drugs my-cyber sg-drugs sg-security th-drugs cn-drugs asean-drugs; do
    issue_token "$id"
done >"$WORK/clients.tokens"
start_hub
ADDR="${HUB_URL#http://}"

"$BIN" bench --url "$HUB_URL" --officer-token "$OFFICER" --client-tokens "$WORK/clients.tokens" \
    --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --parties MY,SG --tlp green \
    --reconnect --drain 10 --json "$OUT/restart-$CLIENTS.json" &
BENCH=$!
PIDS+=("$BENCH")

# Wait until every client is connected, let incidents flow for a few seconds, then kill.
python3 - "$HUB_URL/metrics" "$CLIENTS" <<'PY'
import os, sys, time, urllib.request
url, want = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        request = urllib.request.Request(url, headers={"Authorization": "Bearer " + os.environ["FOCALPOINT__SERVER__METRICS_TOKEN"]})
        text = urllib.request.urlopen(request, timeout=2).read().decode()
        n = sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("focalpoint_stream_clients"))
        if n >= want:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("the clients did not all connect within 120 s")
PY
sleep 5
echo "== kill -9 the hub (pid $HUB_PID) and start it again on $ADDR"
kill -9 "$HUB_PID"
wait "$HUB_PID" 2>/dev/null || true
FOCALPOINT__SERVER__LISTEN="$ADDR" start_hub
wait "$BENCH"
echo "(JSON results: $OUT)"
