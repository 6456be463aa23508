"""bench_backtest's pieces that need neither backtrader nor vectorbt: the reference series and
how a missing vectorbt is reported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import bench_backtest
from tests.backtest.test_spot_gbm import gbm_bars


def test_the_benchmark_gbm_is_the_tests_reference_series() -> None:
    ours, reference = bench_backtest.gbm_bars(5_000), gbm_bars(5_000)
    for column in ("ts", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(ours, column), getattr(reference, column)), column


def test_a_python_without_vectorbt_is_named_with_the_way_to_get_it(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    python_without = tmp_path / "python"
    python_without.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'vectorbt'\" >&2\nexit 1\n")
    python_without.chmod(0o755)
    monkeypatch.setenv("VECTORBT_PYTHON", str(python_without))
    python, why = bench_backtest.vectorbt_python()
    assert python == str(python_without)
    assert why == (f"{python_without} cannot import vectorbt (ModuleNotFoundError: No module named 'vectorbt'): "
                   "pip install -r requirements-bench.txt, or set VECTORBT_PYTHON to a python that has it")
    result = bench_backtest.vectorbt_comparison({}, {}, runs=1)
    assert result == {"ran": False, "why": why}
    assert bench_backtest.vectorbt_report(result) == [("vectorbt comparison", f"not run: {why}", "", "")]


def test_trade_lists_name_the_other_engine_at_the_first_difference() -> None:
    ours = [(81, "buy", 4063.35), (104, "sell", 4000.0)]
    assert bench_backtest.compare_trades(ours, list(ours), "vectorbt") == {"agree": True}
    moved = bench_backtest.compare_trades(ours, [(81, "buy", 4063.35), (105, "sell", 4000.0)], "vectorbt")
    assert moved == {"agree": False, "first_difference": {"trade": 1, "go_trader": (104, "sell", 4000.0),
                                                          "vectorbt": (105, "sell", 4000.0)}}
    short = bench_backtest.compare_trades(ours, ours[:1], "vectorbt")
    assert short["first_difference"] == {"trade": 1, "go_trader_count": 2, "vectorbt_count": 1}
