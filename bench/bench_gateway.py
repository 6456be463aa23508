"""Gateway under load: many concurrent keep-alive clients on /status and /metrics while the sim
stack keeps running cycles, with requests/s and p50/p99 latency, and a slow-rate /healthz
probe that shows the gateway stays responsive meanwhile.

Run: ``python -m bench.bench_gateway`` from the repo root. ``run()`` returns the numbers.
Everything talks to 127.0.0.1 only; every loop is bounded in time and in count.
Targets: >= 300 requests/s on /status with 32 clients, p99 under 250 ms, and cycles keep running.
"""
from __future__ import annotations

import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.stack import Stack, stack_config

CLIENTS = 32
SECONDS = 5.0
MAX_REQUESTS_PER_CLIENT = 5_000
STATUS_RPS_TARGET = 300
P99_TARGET_MS = 250.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def hammer(port: int, path: str, clients: int = CLIENTS, seconds: float = SECONDS) -> dict[str, Any]:
    """``clients`` threads, each on one keep-alive connection, GET ``path`` until time is up."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    start_gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start_gate.wait()
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.perf_counter() >= deadline[0]:
                break
            began = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    failures[i] += 1
            except (OSError, http.client.HTTPException):
                failures[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            latencies[i].append(time.perf_counter() - began)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start_gate.wait()
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.perf_counter() - began
    flat = sorted(x for per in latencies for x in per)
    return {
        "path": path, "clients": clients, "seconds": round(elapsed, 2), "requests": len(flat),
        "failures": sum(failures), "rps": round(len(flat) / elapsed, 1),
        "p50_ms": round(percentile(flat, 50) * 1000, 2), "p99_ms": round(percentile(flat, 99) * 1000, 2),
        "max_ms": round(flat[-1] * 1000, 2) if flat else None,
    }


def probe(port: int, stop: threading.Event, out: list[float]) -> None:
    """A person's browser: one /healthz every 100 ms on a fresh connection, timed."""
    while not stop.wait(0.1):
        began = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            out.append(time.perf_counter() - began)
        except (OSError, http.client.HTTPException):
            out.append(float("inf"))
        finally:
            conn.close()


def run(clients: int = CLIENTS, seconds: float = SECONDS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, Stack(Path(tmp), stack_config()) as stack:
        port = stack.config["gateway"]["port"]
        stack.wait_for(lambda: stack.status()["strategies"] and stack.status()["cycle_count"] > 0, timeout=60,
                       what="a first cycle")
        results: dict[str, Any] = {"clients": clients}
        for path in ("/status", "/metrics"):
            cycles_before = stack.status()["cycle_count"]
            stop, probe_ms = threading.Event(), []
            prober = threading.Thread(target=probe, args=(port, stop, probe_ms), daemon=True)
            prober.start()
            row = hammer(port, path, clients, seconds)
            stop.set()
            prober.join(15)
            probe_sorted = sorted(probe_ms)
            row["cycles_during_run"] = stack.status()["cycle_count"] - cycles_before
            row["healthz_probe_p99_ms"] = round(percentile(probe_sorted, 99) * 1000, 2)
            row["healthz_probes"] = len(probe_sorted)
            results[path] = row
        status = results["/status"]
        results["meets_target"] = (status["rps"] >= STATUS_RPS_TARGET and status["p99_ms"] <= P99_TARGET_MS
                                   and status["failures"] == 0 and status["cycles_during_run"] > 0)
        return results


def main() -> int:
    results = run()
    for path in ("/status", "/metrics"):
        r = results[path]
        print(f"{path:9s} {r['clients']} clients {r['seconds']}s: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
              f"p99 {r['p99_ms']:7.2f} ms  max {r['max_ms']} ms  failures {r['failures']}  "
              f"cycles meanwhile {r['cycles_during_run']}  /healthz probe p99 {r['healthz_probe_p99_ms']} ms")
    print(json.dumps(results))
    return 0 if results["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
