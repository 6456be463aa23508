"""Memory of each service and of the whole stack over a long, fast sim run.

Every few seconds: VmRSS (/proc/<pid>/status) and PSS (/proc/<pid>/smaps_rollup, which
shares common pages fairly between processes) of each program, pids from
``supervisorctl pid``. Steady state = the median over the second half of the run; growth =
the least-squares slope over that half (MB per wall minute) and last minus first sample after
warm-up. The stack's total is the six service programs, and the six with supervisord: the
services are forked from it (services/forking_supervisord.py), so it holds a share of the pages
they share, and only the second total is all the stack's memory. A full run also compares, one
after the other, a short run with every program exec'd by plain supervisord. Which heavy
libraries each service really loaded is read from /proc/<pid>/maps (their native .so files),
and each service module's import cost is measured in a fresh interpreter.

Run: ``python -m bench.bench_memory [--quick] [--seconds N]`` (``--seconds``: a shorter window
for iterating; its steady state is before the signal engines' buffers fill, so compare such
runs only with each other).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Row, rss_mb, running_stack, smaps_rollup_mb, verdict

TARGET_TOTAL_MB = 220.0  # the seed's peak for a whole cycle
TARGET_TOTAL_PSS_MB = 123.0  # issue 15: the whole stack's fair share of memory, steady
FLAT_MB_PER_MIN = 0.5  # growth above this over the second half is a leak, not noise
SPEED = 120_000  # 1 wall minute = 83 market days
EXEC_VS_FORK_SECONDS = 60.0  # each side of the same-run comparison (before the engines' buffers fill)
SERVICES = ("marketdata", "signals-spot", "signals-options", "portfolio", "pricer", "gateway")  # program names
NATIVE_LIBS = ("numpy", "scipy", "pandas", "zmq", "msgpack", "charset_normalizer", "aiohttp", "yarl",
               "multidict", "cryptography", "coincurve")
PURE_PYTHON_HEAVY = ("pandas", "scipy", "ccxt", "requests", "aiohttp")
PACKAGE_PROBES = ("options.normal_ufuncs", "scipy.special", "requests", "pandas", "ccxt")  # first: the pricer
REPO = Path(__file__).resolve().parents[1]


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of ``pid`` in MB."""
    return rss_mb(pid), smaps_rollup_mb(pid)["Pss"]


def native_libraries(pid: int) -> list[str]:
    """Packages whose native code is mapped into ``pid`` (a package imported, not just installed)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    found = set(re.findall(r"site-packages/([A-Za-z0-9_]+)[./]", maps))
    return sorted(lib for lib in NATIVE_LIBS if lib in found)


IMPORT_PROBE = """
import builtins, importlib, sys
heavy = {heavy!r}
chains = {{}}
real_import = builtins.__import__
def spy(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.split('.')[0]
    if top in heavy and top not in sys.modules and top not in chains:
        chains[top] = (globals or {{}}).get('__name__', '?') + ' -> ' + name
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = spy
importlib.import_module({module!r})
rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]
print(int(rss) / 1024)
for top, chain in sorted(chains.items()):
    print(chain)
"""


def import_cost(module: str) -> dict[str, Any]:
    """RSS right after importing ``module`` in a fresh interpreter, and who pulled in each heavy package."""
    code = IMPORT_PROBE.format(heavy=PURE_PYTHON_HEAVY, module=module)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=True)
    lines = done.stdout.strip().splitlines()
    return {"rss_mb": float(lines[0]), "heavy_chains": lines[1:]}


def package_costs() -> dict[str, float]:
    """MB each heavy package adds to a fresh interpreter that already holds zmq, msgpack and numpy."""
    def rss_after(extra: str) -> float:
        code = (f"import zmq, msgpack, numpy{', ' + extra if extra else ''}\n"
                "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        return int(done.stdout) / 1024

    base = rss_after("")
    return {"zmq+msgpack+numpy": base, **{pkg: rss_after(pkg) - base for pkg in PACKAGE_PROBES}}


def _slope_mb_per_min(t_s: np.ndarray, mb: np.ndarray) -> float:
    if t_s.size < 2:
        return float("nan")
    return float(np.polyfit(t_s / 60.0, mb, 1)[0])


def stack_pss_mb(seconds: float, supervisord: str, every: float = 2.0) -> dict[str, float]:
    """Median PSS (MB) over the second half of ``seconds`` of a fresh stack under
    ``supervisord``: the six services, and the six with supervisord."""
    services: list[float] = []
    whole: list[float] = []
    with running_stack(speed=SPEED, supervisord=supervisord) as running:
        pids = [running.pid(name) for name in SERVICES]
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            time.sleep(every)
            if time.monotonic() - start >= seconds / 2:
                each = sum(memory_mb(pid)[1] for pid in pids)
                services.append(each)
                whole.append(each + memory_mb(running.proc.pid)[1])
    return {"services_pss_mb": float(np.median(services)), "with_supervisord_pss_mb": float(np.median(whole))}


def exec_vs_fork(seconds: float = EXEC_VS_FORK_SECONDS) -> dict[str, dict[str, float]]:
    """The same short run under plain supervisord (every program exec'd) and under
    services/forking_supervisord.py, one after the other in this run."""
    return {"exec": stack_pss_mb(seconds, "supervisor.supervisord"),
            "fork": stack_pss_mb(seconds, "services.forking_supervisord")}


def run(quick: bool = False, stack: Any = None, seconds: float | None = None) -> dict[str, Any]:
    # Steady state needs every bounded buffer full: the signal engine's 1,000 daily bars take
    # 1,000 market days (12 wall minutes here), so the growth half of a 20-minute run starts
    # at 833 days; a 10-minute run measured mostly that fill (+0.53 MB/min, then flat).
    default_seconds, every = (5.0, 0.5) if quick else (1200.0, 6.0)
    if seconds is None:
        seconds = default_seconds
    else:
        every = min(every, seconds / 20)
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in (*SERVICES, "supervisord")}
    with running_stack(stack, speed=SPEED) as running:
        pids = {name: running.pid(name) for name in SERVICES}
        pids["supervisord"] = running.proc.pid
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            for name, pid in pids.items():
                rss, pss = memory_mb(pid)
                samples[name].append((elapsed, rss, pss))
            time.sleep(every)
        libs = {name: native_libraries(pids[name]) for name in SERVICES}
        restarted = {name: running.pid(name) != pids[name] for name in SERVICES}
    result: dict[str, Any] = {"seconds": seconds, "sample_every_s": every, "speed": SPEED,
                              "market_days": seconds * SPEED / 86_400,
                              "restarted": [n for n, r in restarted.items() if r]}
    with ThreadPoolExecutor() as pool:  # fresh interpreters, so running them side by side changes no number
        imports = dict(zip(SERVICES, pool.map(import_cost, [f"services.{name.split('-')[0]}" for name in SERVICES])))
    n = len(samples["marketdata"])
    half = n // 2
    t = np.array([s[0] for s in samples["marketdata"]])
    total_rss = np.sum([[s[1] for s in samples[name]] for name in SERVICES], axis=0)
    total_pss = np.sum([[s[2] for s in samples[name]] for name in SERVICES], axis=0)
    for name in (*SERVICES, "supervisord"):
        rss = np.array([s[1] for s in samples[name]])
        result[name] = {
            "rss_mb": float(np.median(rss[half:])),
            "pss_mb": float(np.median([s[2] for s in samples[name]][half:])),
            "rss_peak_mb": float(rss.max()),
            "slope_mb_per_min": _slope_mb_per_min(t[half:], rss[half:]),
            "first_to_last_mb": float(rss[-1] - rss[max(1, n // 10)]),
        }
        if name in SERVICES:
            result[name]["native_libs"] = libs[name]
            result[name]["import"] = imports[name]
    supervisord_pss = np.array([s[2] for s in samples["supervisord"]])
    result["total"] = {
        "rss_mb": float(np.median(total_rss[half:])),
        "pss_mb": float(np.median(total_pss[half:])),
        "with_supervisord_pss_mb": float(np.median(total_pss[half:] + supervisord_pss[half:])),
        "rss_peak_mb": float(total_rss.max()),
        "pss_peak_mb": float(total_pss.max()),
        "with_supervisord_rss_mb": float(np.median(total_rss[half:]) + result["supervisord"]["rss_mb"]),
        "slope_mb_per_min": _slope_mb_per_min(t[half:], total_rss[half:]),
        "first_to_last_mb": float(total_rss[-1] - total_rss[max(1, n // 10)]),
    }
    result["package_cost_mb"] = {} if quick else package_costs()  # ten fresh interpreters: full runs only
    result["exec_vs_fork"] = {} if quick else exec_vs_fork()
    return result


def report(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name in SERVICES:
        s = r[name]
        heavy = "; ".join(s["import"]["heavy_chains"]) or "none"
        rows.append((f"{name}: RSS / PSS steady (native libs: {', '.join(s['native_libs'])}; "
                     f"heavy imports: {heavy}; {s['import']['rss_mb']:.0f} MB right after import)",
                     f"{s['rss_mb']:.1f} / {s['pss_mb']:.1f} MB, {s['slope_mb_per_min']:+.2f} MB/min", "", ""))
    total = r["total"]
    rows += [
        ("supervisord RSS / PSS", f"{r['supervisord']['rss_mb']:.1f} / {r['supervisord']['pss_mb']:.1f} MB", "", ""),
        (f"whole stack ({len(SERVICES)} service programs), RSS steady / peak ({r['seconds']:g} s wall at "
         f"{r['speed']:,}x = {r['market_days']:.0f} market days)",
         f"{total['rss_mb']:.1f} / {total['rss_peak_mb']:.1f} MB",
         f"< {TARGET_TOTAL_MB:g} MB", verdict(total["rss_peak_mb"] < TARGET_TOTAL_MB)),
        ("whole stack, PSS (smaps_rollup) steady / peak", f"{total['pss_mb']:.1f} / {total['pss_peak_mb']:.1f} MB",
         f"steady <= {TARGET_TOTAL_PSS_MB:g} MB", verdict(total["pss_mb"] <= TARGET_TOTAL_PSS_MB)),
        _with_supervisord_row(total["with_supervisord_pss_mb"], r["exec_vs_fork"]),
        ("whole stack, RSS with supervisord", f"{total['with_supervisord_rss_mb']:.1f} MB", "", ""),
        ("whole stack growth, second half slope / first-to-last", f"{total['slope_mb_per_min']:+.2f} MB/min / "
         f"{total['first_to_last_mb']:+.1f} MB", f"|slope| <= {FLAT_MB_PER_MIN} MB/min",
         verdict(abs(total["slope_mb_per_min"]) <= FLAT_MB_PER_MIN)),
        ("services restarted during the run", ", ".join(r["restarted"]) or "none", "none",
         verdict(not r["restarted"])),
    ]
    if r["package_cost_mb"]:
        rows.insert(-1, _package_row(r["package_cost_mb"]))
    if r["exec_vs_fork"]:
        rows.insert(-1, _exec_vs_fork_row(r["exec_vs_fork"]))
    return rows


def _with_supervisord_row(pss_mb: float, runs: dict[str, dict[str, float]]) -> Row:
    """The floor was set on the services alone, beside a supervisord that shared nothing with
    them; now it holds a share of their pages, so its own PSS when it execs every program (the
    same-run comparison's) is added to the floor."""
    measure = "whole stack with supervisord, PSS steady (the services are forked from it: it holds a share of " \
              "the pages they share)"
    if not runs:
        return measure, f"{pss_mb:.1f} MB", "", ""
    plain = runs["exec"]["with_supervisord_pss_mb"] - runs["exec"]["services_pss_mb"]
    return (measure, f"{pss_mb:.1f} MB", f"<= {TARGET_TOTAL_PSS_MB:g} MB + plain supervisord's {plain:.1f} MB",
            verdict(pss_mb <= TARGET_TOTAL_PSS_MB + plain))


def _exec_vs_fork_row(runs: dict[str, dict[str, float]]) -> Row:
    exec_, fork = runs["exec"], runs["fork"]
    return (f"services exec'd by plain supervisord vs forked by services/forking_supervisord.py, "
            f"{EXEC_VS_FORK_SECONDS:g} s each, PSS of the six services / with supervisord",
            f"exec {exec_['services_pss_mb']:.1f} / {exec_['with_supervisord_pss_mb']:.1f} MB, "
            f"fork {fork['services_pss_mb']:.1f} / {fork['with_supervisord_pss_mb']:.1f} MB "
            f"({fork['with_supervisord_pss_mb'] / exec_['with_supervisord_pss_mb']:.2f}x)", "", "")


def _package_row(costs: dict[str, float]) -> Row:
    added = ", ".join(f"+{pkg} {mb:.0f} MB" for pkg, mb in costs.items() if pkg in PACKAGE_PROBES)
    return (f"import cost per process: {added}", f"base (python + zmq + msgpack + numpy) "
            f"{costs['zmq+msgpack+numpy']:.0f} MB", "", "")


def _window(argv: list[str]) -> float | None:
    """The ``--seconds N`` of the command line, or None (the default window)."""
    if "--seconds" not in argv:
        return None
    at = argv.index("--seconds") + 1
    if at >= len(argv) or not argv[at].replace(".", "", 1).isdigit() or float(argv[at]) <= 0:
        raise SystemExit("bench_memory: --seconds needs a positive number of wall seconds")
    return float(argv[at])


if __name__ == "__main__":
    for row in report(run(quick="--quick" in sys.argv, seconds=_window(sys.argv))):
        print(" | ".join(row))
