"""What the go-trader benchmarks share: a real stack in a temp dir, percentiles, result rows.

A benchmark module exposes ``run(quick=False) -> dict`` (plain numbers, JSON-safe) and
``report(result) -> list[Row]``; ``bench.run_all`` turns the rows into bench/RESULTS.md.
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

Row = tuple[str, str, str, str]  # measure, value, target, verdict ("PASS", "FAIL" or "")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def smaps_rollup_mb(pid: int) -> dict[str, float]:
    """Every size field of /proc/<pid>/smaps_rollup (Rss, Pss, Private_Dirty, ...) in MB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.rstrip().endswith(" kB"):
            fields[name] = int(rest.split()[0]) / 1024
    return fields


def cpu_ticks(stat: str | None = None) -> tuple[int, int]:
    """(all, stolen) CPU ticks since boot, from the ``cpu`` line of /proc/stat (or ``stat``):
    stolen ticks are the ones a VM's host gave to someone else while this VM wanted them, which
    no code in the VM can win back (0 on bare metal)."""
    text = Path("/proc/stat").read_text() if stat is None else stat
    line = next((line for line in text.splitlines() if line.startswith("cpu ")), None)
    if line is None:
        raise ValueError("/proc/stat: no aggregate 'cpu' line")
    fields = [int(x) for x in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(fields), fields[7] if len(fields) == 8 else 0


def stolen_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share (%) of the CPU time between two ``cpu_ticks`` readings that the host took."""
    elapsed = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / elapsed if elapsed > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``; NaN when there are none."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@contextlib.contextmanager
def running_stack(stack: Any = None, base: dict[str, Any] | None = None, supervisord: str | None = None,
                  **feed: Any) -> Iterator[Any]:
    """The caller's stack if it passes one (tests share one), else a fresh one stopped at exit,
    from ``base`` (a config dict; default config/default.json) with ``feed`` settings over it,
    under ``supervisord`` (a module; default the stack's own)."""
    if stack is not None:
        yield stack
        return
    from bench.stack import Stack, stack_config  # only benchmarks that need a stack pay for it

    with tempfile.TemporaryDirectory(prefix="go-trader-bench-") as workdir:
        options = {} if supervisord is None else {"supervisord": supervisord}
        with Stack(Path(workdir), stack_config(base, **feed), **options) as started:
            yield started
