"""bench_decision, where the capacity constants come from, still measures the real engine."""
from __future__ import annotations

import math

from bench import bench_decision


def test_quick_run_times_every_default_strategy_through_the_signal_engine() -> None:
    r = bench_decision.run(quick=True)
    assert (r["spot_strategies"], r["options_strategies"]) == (14, 20)
    assert r["orders_acked"] > 0  # orders went through the stand-in portfolio, as in the service
    for key in ("spot_decision_ms", "options_decision_ms", "chain_request_ms"):
        assert math.isfinite(r[key]) and r[key] > 0
