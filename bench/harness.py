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
