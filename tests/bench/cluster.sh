#!/usr/bin/env bash
# Cluster benchmark: raise on replica A, measure delivery to WebSocket clients of
# replica B (raise -> first/last client, p50/p99/max), with Redis and without it; the
# same with the clients on A (the single-node figure to compare with); and the raises/s
# both replicas accept together (closed loop, TPUT_CONCURRENCY/2 requests on each).
#
#   tests/bench/cluster.sh
#   RATE=20 DURATION=30 CLIENTS=50 tests/bench/cluster.sh
#
# Two release replicas on one fresh PostgreSQL database per mode:
#   redis — `bus.redis_url` set: A publishes the new head seq after each commit, B wakes
#           and reads the events from the store;
#   poll  — `bus.redis_url` empty: replicas on a shared store poll it every 250 ms, so
#           delivery across replicas waits for the next poll (about 125 ms on average).
#
# Environment: FOCALPOINT_TEST_POSTGRES (admin URL; default
# postgres://postgres@127.0.0.1:5432/postgres; `psql` creates and drops the databases),
# FOCALPOINT_TEST_REDIS (redis://127.0.0.1:6379), RATE (20 incidents/s), DURATION (20 s),
# CLIENTS (20), TPUT_CONCURRENCY (64), TPUT_SECONDS (10), OUT (directory for the JSON
# results; default a temporary one).

source "$(dirname "$0")/lib.sh"

PG_ADMIN="${FOCALPOINT_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
REDIS="${FOCALPOINT_TEST_REDIS:-redis://127.0.0.1:6379}"
RATE="${RATE:-20}"
DURATION="${DURATION:-20}"
CLIENTS="${CLIENTS:-20}"
TPUT_CONCURRENCY="${TPUT_CONCURRENCY:-64}"
TPUT_SECONDS="${TPUT_SECONDS:-10}"
OUT="${OUT:-$WORK/results}"
mkdir -p "$OUT"
DBS=()

command -v psql >/dev/null || { echo "psql is needed to create the benchmark databases" >&2; exit 1; }
psql "$PG_ADMIN" -Atqc 'SELECT 1' >/dev/null || { echo "PostgreSQL is not reachable at $PG_ADMIN" >&2; exit 1; }

drop_dbs() {
    cleanup
    for db in "${DBS[@]}"; do psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
}
trap drop_dbs EXIT

# start_replica NAME → sets REPLICA_URL (and records the pid for cleanup).
start_replica() {
    "$BIN" serve >"$WORK/$1.out" 2>"$WORK/$1.err" &
    local pid=$!
    PIDS+=("$pid")
    REPLICA_URL=""
    for _ in $(seq 300); do
        REPLICA_URL="$(sed -n '1s/^focalpoint listening on //p' "$WORK/$1.out" 2>/dev/null || true)"
        [ -n "$REPLICA_URL" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$1.err" >&2; echo "replica $1 exited" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$REPLICA_URL" ] || { echo "replica $1 did not start within 30 s" >&2; exit 1; }
}

build
for mode in redis poll; do
    db="fp_bench_$(date +%s)_$mode"
    DBS+=("$db")
    psql "$PG_ADMIN" -qc "CREATE DATABASE $db" >/dev/null
    export FOCALPOINT__STORE__URL="${PG_ADMIN%/*}/$db"
    export FOCALPOINT__BUS__KEY_PREFIX="fpbench-$$-$mode"
    if [ "$mode" = redis ]; then export FOCALPOINT__BUS__REDIS_URL="$REDIS"; else export FOCALPOINT__BUS__REDIS_URL=""; fi
    OFFICER="$(issue_token th-duty)"
    for id in my-drugs my-cyber sg-drugs sg-security; do issue_token "$id"; done >"$WORK/clients.tokens"
    start_replica "a-$mode"; A="$REPLICA_URL"
    start_replica "b-$mode"; B="$REPLICA_URL"
    echo "== $mode: raise on $A, $CLIENTS clients on $B, $RATE incidents/s for $DURATION s"
    "$BIN" bench --url "$A" --stream-url "$B" --officer-token "$OFFICER" --client-tokens "$WORK/clients.tokens" \
        --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --parties MY,SG --tlp green \
        --json "$OUT/cluster-$mode.json"
    echo
    if [ "$mode" = redis ]; then
        echo "== single node: raise on $A, $CLIENTS clients on $A"
        "$BIN" bench --url "$A" --officer-token "$OFFICER" --client-tokens "$WORK/clients.tokens" \
            --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" --parties MY,SG --tlp green \
            --json "$OUT/single-node.json"
        echo
        half=$((TPUT_CONCURRENCY / 2))
        echo "== accepted raises/s, both replicas: $half concurrent on each for $TPUT_SECONDS s"
        "$BIN" bench --max-throughput --url "$A" --officer-token "$OFFICER" --concurrency "$half" \
            --duration "$TPUT_SECONDS" --json "$OUT/throughput-a.json" >"$WORK/tput-a.out" &
        ta=$!
        "$BIN" bench --max-throughput --url "$B" --officer-token "$OFFICER" --concurrency "$half" \
            --duration "$TPUT_SECONDS" --json "$OUT/throughput-b.json" >"$WORK/tput-b.out"
        wait "$ta"
        cat "$WORK/tput-a.out" "$WORK/tput-b.out"
        echo
    fi
done

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'raise on A -> client on B (ms)':34} {'p50':>8} {'p99':>8} {'max':>8}")
for mode in ("redis", "poll"):
    lat = json.load(open(os.path.join(out, f"cluster-{mode}.json")))["latency"]
    for key in ("raise_to_first_client", "raise_to_last_client"):
        s = lat[key]
        print(f"{mode + ', ' + key.replace('_', ' '):34} {s['p50_ms']:>8} {s['p99_ms']:>8} {s['max_ms']:>8}")
lat = json.load(open(os.path.join(out, "single-node.json")))["latency"]
for key in ("raise_to_first_client", "raise_to_last_client"):
    s = lat[key]
    print(f"{'single node, ' + key.replace('_', ' '):34} {s['p50_ms']:>8} {s['p99_ms']:>8} {s['max_ms']:>8}")
a, b = (json.load(open(os.path.join(out, f"throughput-{r}.json")))["result"] for r in "ab")
print()
print(f"accepted raises/s, both replicas together: {a['accepted_per_s'] + b['accepted_per_s']:.0f}"
      f" (A {a['accepted_per_s']:.0f}, B {b['accepted_per_s']:.0f});"
      f" request p50 {a['latency']['p50_ms']} / {b['latency']['p50_ms']} ms, p99 {a['latency']['p99_ms']} / {b['latency']['p99_ms']} ms")
PY
echo "(JSON results: $OUT)"
