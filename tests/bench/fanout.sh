#!/usr/bin/env bash
# Fan-out benchmark: `focalpoint bench` against a fresh release hub (embedded SQLite).
#
#   tests/bench/fanout.sh                 # 1,000 clients, then 10,000 clients
#   CLIENTS="1000" tests/bench/fanout.sh  # only the 1,000-client run
#
# Each run: CLIENTS WebSocket clients (focal points of MY, SG, TH, CN and ASEAN, cycling
# through one token each), RATE incidents/s for DURATION s addressed to MY,SG with TLP
# green (every client sees each one), ACK_SHARE of them acknowledged over a WebSocket by
# a MY or SG focal point. Reports raise -> first/last client, ack -> first/last client,
# accepted raises/s, errors and the hub's RSS per idle connection.
#
# Environment: CLIENTS ("1000 10000"), RATE (10), DURATION (20 s), ACK_SHARE (0.5),
# OUT (directory for the JSON results; default: a temporary directory, removed at exit).
# 10,000 clients need an open-files hard limit above ~10,100 (see lib.sh).

source "$(dirname "$0")/lib.sh"

CLIENTS="${CLIENTS:-1000 10000}"
RATE="${RATE:-10}"
DURATION="${DURATION:-20}"
ACK_SHARE="${ACK_SHARE:-0.5}"
OUT="${OUT:-$WORK/results}"
mkdir -p "$OUT"

raise_fd_limit
build

for n in $CLIENTS; do
    if [ "$((n + 100))" -gt "$(ulimit -n)" ]; then
        echo "== skipping $n clients: open-files limit $(ulimit -n) is too low"
        continue
    fi
    # A fresh hub per run, so each RSS figure starts from the same place.
    rm -f "$WORK"/hub.db*
    OFFICER="$(issue_token th-duty)"
    for id in my-drugs my-cyber sg-drugs sg-security th-drugs cn-drugs asean-drugs; do
        issue_token "$id"
    done >"$WORK/clients.tokens"
    start_hub
    echo "== $n clients, $RATE incidents/s for $DURATION s, ack share $ACK_SHARE"
    /usr/bin/time -f "bench cpu: %U user %S sys %e wall" "$BIN" bench --url "$HUB_URL" --officer-token "$OFFICER" --client-tokens "$WORK/clients.tokens" \
        --clients "$n" --rate "$RATE" --duration "$DURATION" --ack-share "$ACK_SHARE" \
        --parties MY,SG --tlp green --hub-pid "$HUB_PID" --json "$OUT/fanout-$n.json"
    echo "hub cpu: $(ps -o time= -p "$HUB_PID")"
    kill "$HUB_PID"
    for _ in $(seq 100); do kill -0 "$HUB_PID" 2>/dev/null || break; sleep 0.1; done
    echo
done
echo "(JSON results: $OUT)"
