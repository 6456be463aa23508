"""Gateway under load: many concurrent keep-alive clients on /status and /metrics while the sim
stack keeps running cycles, with requests/s and p50/p99 latency, and a slow-rate /healthz
probe that shows the gateway stays responsive meanwhile.

Run: ``python -m bench.bench_gateway`` from the repo root. ``run()`` returns the numbers,
``report()`` the rows of bench/RESULTS.md.
Everything talks to 127.0.0.1 only; every loop is bounded in time and in count.
Targets: >= 300 requests/s on /status with 32 clients, p99 under 250 ms, and cycles keep running.
"""
from __future__ import annotations

import http.client
import threading
import time
from typing import Any

from bench.harness import Row, percentile, running_stack, verdict

CLIENTS = 32
SECONDS = 5.0
MAX_REQUESTS_PER_CLIENT = 5_000
STATUS_RPS_TARGET = 300
P99_TARGET_MS = 250.0


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
    flat = sorted(x for per in latencies for x in per)  # seconds
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


def run(quick: bool = False, stack: Any = None) -> dict[str, Any]:
    clients, seconds = (16, 2.0) if quick else (CLIENTS, SECONDS)
    with running_stack(stack) as started:
        port = started.config["gateway"]["port"]
        started.wait_for(lambda: started.status()["strategies"] and started.status()["cycle_count"] > 0,
                         timeout=60, what="a first cycle")
        results: dict[str, Any] = {"clients": clients, "seconds": seconds}
        for path in ("/status", "/metrics"):
            cycles_before = started.status()["cycle_count"]
            stop, probe_s = threading.Event(), []
            prober = threading.Thread(target=probe, args=(port, stop, probe_s), daemon=True)
            prober.start()
            row = hammer(port, path, clients, seconds)
            stop.set()
            prober.join(15)
            row["cycles_during_run"] = started.status()["cycle_count"] - cycles_before
            row["healthz_probe_p99_ms"] = round(percentile(probe_s, 99) * 1000, 2)
            row["healthz_probes"] = len(probe_s)
            results[path] = row
    return results


def report(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for path in ("/status", "/metrics"):
        m = r[path]
        rows += [
            (f"GET {path}, {m['clients']} keep-alive clients for {m['seconds']} s", f"{m['rps']:,.0f} req/s",
             f">= {STATUS_RPS_TARGET} req/s", verdict(m["rps"] >= STATUS_RPS_TARGET and m["failures"] == 0)),
            (f"GET {path} latency p50 / p99 / max", f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f} / {m['max_ms']:.1f} ms",
             f"p99 <= {P99_TARGET_MS:.0f} ms", verdict(m["p99_ms"] <= P99_TARGET_MS)),
            (f"meanwhile: cycles run, /healthz probe p99 ({m['healthz_probes']} probes)",
             f"{m['cycles_during_run']} cycles, {m['healthz_probe_p99_ms']:.1f} ms", "> 0 cycles, p99 <= 250 ms",
             verdict(m["cycles_during_run"] > 0 and m["healthz_probe_p99_ms"] <= P99_TARGET_MS)),
        ]
    return rows


if __name__ == "__main__":
    for row in report(run()):
        print(" | ".join(row))
