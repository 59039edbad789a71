#!/usr/bin/env python3
"""Alertmanager side of tests/bench/compare.sh (Python 3 standard library only).

  am_bench.py receive --port P
      A webhook receiver for Alertmanager on 127.0.0.1:P. For each alert in a
      notification it records time.time_ns() under the alert's `bench_id` label.
      GET /receipts?run=R answers {bench_id: first_receipt_ns} for ids starting with R;
      GET /count answers {"alerts": N, "notifications": M}. Runs until killed.

  am_bench.py latency --am URL --receiver URL --rate 20 --duration 10 [--json FILE]
      Open loop: POSTs one alert per request to Alertmanager's /api/v2/alerts at a fixed
      rate, each with a unique `bench_id` label and its send time (time.time_ns()) as the
      `sent_ns` annotation, then reads the receipts from the receiver and reports
      POST -> webhook delivery p50/p99/max (and POST -> response), in milliseconds.

Everything is bounded in time; only 127.0.0.1 is used.
"""

import argparse
import http.client
import json
import math
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def summary(nanos):
    """Nearest-rank p50/p99/max in milliseconds, as the Rust bench computes them."""
    if not nanos:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(nanos)

    def rank(q):
        return round(s[min(max(math.ceil(q * len(s)), 1), len(s)) - 1] / 1e6, 3)

    return {"n": len(s), "p50_ms": rank(0.5), "p99_ms": rank(0.99), "max_ms": rank(1.0)}


class Receiver(BaseHTTPRequestHandler):
    receipts = {}
    alerts = 0
    notifications = 0
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        now = time.time_ns()
        try:
            length = int(self.headers.get("content-length", "0"))
            payload = json.loads(self.rfile.read(min(length, 64 << 20)) or b"{}")
            alerts = payload.get("alerts", []) if isinstance(payload, dict) else []
        except (ValueError, json.JSONDecodeError):
            self._answer(400, {"error": "bad payload"})
            return
        with Receiver.lock:
            Receiver.notifications += 1
            for alert in alerts:
                Receiver.alerts += 1
                labels = alert.get("labels", {}) if isinstance(alert, dict) else {}
                bid = labels.get("bench_id") if isinstance(labels, dict) else None
                if isinstance(bid, str) and bid not in Receiver.receipts:
                    Receiver.receipts[bid] = now
        self._answer(200, {"ok": True})

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/count":
            with Receiver.lock:
                self._answer(200, {"alerts": Receiver.alerts, "notifications": Receiver.notifications})
        elif url.path == "/receipts":
            run = urllib.parse.parse_qs(url.query).get("run", [""])[0]
            with Receiver.lock:
                found = {k: v for k, v in Receiver.receipts.items() if run and k.startswith(run)}
            self._answer(200, found)
        else:
            self._answer(404, {"error": "not found"})


def receive(args):
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Receiver)
    server.daemon_threads = True
    print(f"receiver listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def get_json(base, path, timeout=10):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def latency(args):
    am = urllib.parse.urlparse(args.am)
    run = f"lat{time.time_ns():x}-"
    conn = http.client.HTTPConnection(am.hostname, am.port, timeout=10)
    n = int(math.ceil(args.rate * args.duration))
    sent, responses, errors, statuses, late = {}, [], 0, {}, 0
    start = time.monotonic()
    for i in range(n):
        due = start + i / args.rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        elif pause < -0.005:
            late += 1
        bid = f"{run}{i}"
        t = time.time_ns()
        body = json.dumps([{
            "labels": {"alertname": "FocalpointLatency", "bench_id": bid},
            "annotations": {"sent_ns": str(t), "summary": "focalpoint bench; safe to ignore"},
        }])
        try:
            conn.request("POST", "/api/v2/alerts", body, {"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            if 200 <= r.status < 300:
                sent[bid] = t
                responses.append(time.time_ns() - t)
            else:
                statuses[r.status] = statuses.get(r.status, 0) + 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(am.hostname, am.port, timeout=10)
    seconds = time.monotonic() - start
    # Drain: wait (bounded) for the webhook receipts.
    deadline = time.monotonic() + args.drain
    receipts = {}
    while time.monotonic() < deadline:
        _, receipts = get_json(args.receiver, f"/receipts?run={run}")
        if len(receipts) >= len(sent):
            break
        time.sleep(0.1)
    deliveries = [receipts[b] - t for b, t in sent.items() if b in receipts]
    result = {
        "target": "alertmanager",
        "rate": args.rate, "duration_s": args.duration,
        "sent": n, "accepted": len(sent), "accepted_per_s": round(len(sent) / seconds, 3) if seconds else 0,
        "non_2xx": statuses, "errors": errors, "late_over_5ms": late,
        "delivered": len(deliveries),
        "latency": {"post_to_response": summary(responses), "post_to_webhook": summary(deliveries)},
    }
    d, p = result["latency"]["post_to_webhook"], result["latency"]["post_to_response"]
    print(f"alertmanager latency — {args.rate}/s for {args.duration:.0f} s: accepted {len(sent)}/{n}, "
          f"delivered {len(deliveries)}, non-2xx {statuses}, errors {errors}")
    print(f"  POST -> webhook   p50 {d['p50_ms']} ms  p99 {d['p99_ms']} ms  max {d['max_ms']} ms")
    print(f"  POST -> response  p50 {p['p50_ms']} ms  p99 {p['p99_ms']} ms  max {p['max_ms']} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receive")
    r.add_argument("--port", type=int, default=0)
    lat = sub.add_parser("latency")
    lat.add_argument("--am", required=True)
    lat.add_argument("--receiver", required=True)
    lat.add_argument("--rate", type=float, default=20.0)
    lat.add_argument("--duration", type=float, default=10.0)
    lat.add_argument("--drain", type=float, default=5.0)
    lat.add_argument("--json")
    args = ap.parse_args()
    if args.cmd == "receive":
        receive(args)
    else:
        if not (0 < args.rate <= 10000 and 0 < args.duration <= 3600):
            sys.exit("rate must be in (0, 10000] and duration in (0, 3600]")
        latency(args)


if __name__ == "__main__":
    main()
