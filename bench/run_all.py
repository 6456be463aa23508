"""``make bench``: every benchmark, each in its own process, into bench/RESULTS.md.

A benchmark module exposes ``run()`` (``run(quick=True)`` when it has a quick mode) returning
plain numbers, and optionally ``report(result)`` rows ``(measure, value, target, verdict)``.
Each runs in a fresh interpreter with a time limit, so a crash, a hang or a leak in one is
reported in its section and the others still run, and none inherits another's imports or
memory. A full run writes bench/RESULTS.md (committed); ``--quick`` or ``--only`` runs write
bench/RESULTS.partial.md unless ``--output`` says otherwise.

Usage: ``python -m bench.run_all [--quick] [--only NAME[,NAME]] [--output PATH]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("bench_cycle", "bench_latency", "bench_memory", "bench_bus", "bench_greeks", "bench_backtest",
              "bench_gateway", "bench_scale", "bench_clone")
TIMEOUT_S = 1800
CHILD = """
import inspect, json, sys
import bench.{name} as bench
quick = {quick!r}
kwargs = {{"quick": quick}} if "quick" in inspect.signature(bench.run).parameters else {{}}
result = bench.run(**kwargs)
rows = bench.report(result) if hasattr(bench, "report") else None
with open(sys.argv[1], "w") as out:
    json.dump({{"result": result, "rows": rows, "quick_mode": bool(kwargs)}}, out, default=repr)
"""


def run_isolated(name: str, quick: bool, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Run one benchmark in a fresh interpreter: its result and rows, or what went wrong."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"go-trader-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
        try:
            done = subprocess.run([sys.executable, "-c", CHILD.format(name=name, quick=quick), str(out)], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"status": "error", "error": f"timed out after {timeout_s:.0f} s",
                    "seconds": time.monotonic() - started}
        seconds = time.monotonic() - started
        if done.returncode != 0 or not out.exists():
            tail = "\n".join(done.stderr.strip().splitlines()[-12:])
            return {"status": "error", "error": f"exit {done.returncode}:\n{tail}", "seconds": seconds}
        return {"status": "ok", "seconds": seconds, **json.loads(out.read_text())}


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _flatten(sub, f"{prefix}{key}.")]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [item for i, sub in enumerate(value) for item in _flatten(sub, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), value)]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def section(name: str, outcome: dict[str, Any]) -> str:
    """One benchmark's part of RESULTS.md: its table, or its error."""
    lines = [f"## {name}", ""]
    if outcome["status"] != "ok":
        lines += [f"**ERROR** after {outcome['seconds']:.0f} s:", "", "```", outcome["error"], "```", ""]
        return "\n".join(lines)
    mode = "" if outcome.get("quick_mode", True) else " (no quick mode: full run)"
    lines += [f"Ran in {outcome['seconds']:.0f} s{mode}.", ""]
    rows = outcome["rows"]
    if rows is None:  # no report(): show every number it returned
        rows = [(key, _shown(value), "", "") for key, value in _flatten(outcome["result"])]
    lines += ["| measure | value | target | verdict |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def verdicts(outcome: dict[str, Any]) -> str:
    if outcome["status"] != "ok":
        return "ERROR"
    marks = [row[3] for row in outcome.get("rows") or []]
    passed, failed = marks.count("PASS"), marks.count("FAIL")
    if not passed and not failed:
        return "ran (no targets)"
    return f"{passed} PASS, {failed} FAIL"


def machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    versions = subprocess.run(
        [sys.executable, "-c", "import numpy, zmq, msgpack; print(numpy.__version__, zmq.__version__, "
                               "zmq.zmq_version(), '.'.join(map(str, msgpack.version)))"],
        capture_output=True, text=True, check=True).stdout.split()
    return [f"- CPU: {cpu}, {os.cpu_count()} cores (nproc), {mem_kb / 1024 / 1024:.0f} GiB memory",
            f"- Python {platform.python_version()}, numpy {versions[0]}, pyzmq {versions[1]} (libzmq {versions[2]}), "
            f"msgpack {versions[3]}, {platform.system()} {platform.release()}"]


def render(outcomes: dict[str, dict[str, Any]], quick: bool, started: datetime) -> str:
    lines = ["# go-trader benchmarks", "",
             f"Generated by `make bench` (`python -m bench.run_all{' --quick' if quick else ''}`) on "
             f"{started:%Y-%m-%d %H:%M} UTC. Medians of several runs; every ratio is taken against a "
             "reference run in the same benchmark run.", "", *machine(), "",
             "| benchmark | verdicts | seconds |", "|---|---|---|"]
    lines += [f"| [{name}](#{name}) | {verdicts(o)} | {o['seconds']:.0f} |" for name, o in outcomes.items()]
    lines.append("")
    lines += [section(name, o) for name, o in outcomes.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (each benchmark's quick mode)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names, e.g. bench_bus,cycle")
    parser.add_argument("--output", type=Path, help="where to write the markdown (see the module docstring)")
    args = parser.parse_args(argv)
    wanted = [w if w.startswith("bench_") else f"bench_{w}" for w in filter(None, args.only.split(","))]
    unknown = sorted(set(wanted) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = [n for n in BENCHMARKS if not wanted or n in wanted]
    output = args.output or REPO / "bench" / ("RESULTS.partial.md" if args.quick or wanted else "RESULTS.md")
    started = datetime.now(timezone.utc)
    outcomes: dict[str, dict[str, Any]] = {}
    for name in names:
        if not (REPO / "bench" / f"{name}.py").exists():
            outcomes[name] = {"status": "error", "error": f"bench/{name}.py does not exist yet", "seconds": 0.0}
            continue
        print(f"{name} ...", flush=True)
        outcomes[name] = run_isolated(name, args.quick)
        print(f"{name}: {verdicts(outcomes[name])} in {outcomes[name]['seconds']:.0f} s", flush=True)
    output.write_text(render(outcomes, args.quick, started))
    print(f"wrote {output}")
    return 0 if all(o["status"] == "ok" for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
