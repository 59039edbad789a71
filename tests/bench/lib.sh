# Shared helpers for tests/bench/*.sh (sourced, not run). Everything listens on 127.0.0.1.
#
# Each WebSocket client holds a file descriptor in the bench and one in the hub, so the
# scripts raise the open-files soft limit to the hard limit (`ulimit -n`) before starting
# anything; both processes inherit it. For 10,000 clients the hard limit must be above
# ~10,100 (`ulimit -Hn`; raise it in /etc/security/limits.conf or the container's
# settings if it is lower).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/focalpoint"
WORK="$(mktemp -d /tmp/focalpoint-bench.XXXXXX)"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait, then insist.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

raise_fd_limit() {
    local hard
    hard="$(ulimit -Hn)"
    if [ "$hard" = unlimited ]; then hard=65536; fi
    if [ "$hard" -gt 65536 ]; then hard=65536; fi
    ulimit -n "$hard" || true
    echo "open-files limit: $(ulimit -n)"
}

# SKIP_BUILD=1 uses the existing target/release/focalpoint as it is.
build() {
    if [ "${SKIP_BUILD:-0}" = 1 ] && [ -x "$BIN" ]; then
        echo "== using the existing $BIN (SKIP_BUILD=1)"
        return
    fi
    echo "== cargo build --release"
    cargo build --release --quiet
}

# The hub's environment: fresh SQLite file in $WORK, random port, quiet logs.
export FOCALPOINT__STORE__URL="sqlite://$WORK/hub.db"
export FOCALPOINT__SERVER__LISTEN="127.0.0.1:0"
export FOCALPOINT__LOG__FILTER="warn"
# /metrics answers only with this token (server.metrics_token).
export FOCALPOINT__SERVER__METRICS_TOKEN="bench-metrics-token-$$-0000"

# issue_token ID → prints the token (the last line of `focalpoint token issue`).
issue_token() {
    "$BIN" token issue "$1" --label bench | tail -n 1
}

# start_hub → sets HUB_URL and HUB_PID.
start_hub() {
    "$BIN" serve >"$WORK/hub.out" 2>"$WORK/hub.err" &
    HUB_PID=$!
    PIDS+=("$HUB_PID")
    HUB_URL=""
    for _ in $(seq 300); do
        HUB_URL="$(sed -n '1s/^focalpoint listening on //p' "$WORK/hub.out" 2>/dev/null || true)"
        [ -n "$HUB_URL" ] && break
        kill -0 "$HUB_PID" 2>/dev/null || { cat "$WORK/hub.err" >&2; echo "the hub exited" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$HUB_URL" ] || { echo "the hub did not start within 30 s" >&2; exit 1; }
    echo "hub: $HUB_URL (pid $HUB_PID, store $FOCALPOINT__STORE__URL)"
}

# free_port → prints a port that was free a moment ago.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL SECONDS → waits until URL answers 2xx.
wait_http() {
    python3 - "$1" "$2" <<'EOF'
import sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if 200 <= r.status < 300:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(f"{url} did not answer within {limit} s")
EOF
}

# jq-free JSON field reader: jget FILE a.b.c
jget() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("null" if v is None else v)
EOF
}
