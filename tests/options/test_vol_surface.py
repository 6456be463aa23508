"""Smile shape, the seeded ATM IV path and IV rank."""
import math

import numpy as np
import pytest

from common.timeframes import HOUR_MS
from options.vol_surface import VolSurfaceError, iv_rank, simulate_atm_iv, smile_iv


def test_smile_by_hand():
    # m = ln(80/100) = -0.22314: 0.5 * (1 + 0.2*0.22314 + 0.6*0.049793) = 0.537252
    assert float(smile_iv(0.5, 80.0, 100.0)) == pytest.approx(0.5 * (1 + 0.2 * 0.223144 + 0.6 * 0.223144**2), abs=1e-6)
    assert float(smile_iv(0.5, 100.0, 100.0)) == 0.5
    put_wing, call_wing = smile_iv(0.5, np.array([80.0, 125.0]), 100.0)
    assert put_wing > 0.5 > call_wing  # put skew: ln(125/100) = +0.2231 mirrors ln(80/100)


def test_smile_is_floored():
    assert float(smile_iv(0.5, 100.0, 100.0, skew=-5.0, curvature=0.0, floor=0.05)) == 0.5
    assert float(smile_iv(0.5, 200.0, 100.0, skew=-5.0, curvature=0.0, floor=0.05)) == 0.05


def test_path_is_deterministic_and_prefix_stable():
    ts = np.arange(0, 24 * 28, dtype=np.int64) * HOUR_MS
    full = simulate_atm_iv(7, ts, 0.5)
    assert full[0] == 0.5
    np.testing.assert_array_equal(simulate_atm_iv(7, ts[:100], 0.5), full[:100])
    np.testing.assert_array_equal(simulate_atm_iv(7, ts, 0.5), full)
    assert not np.array_equal(simulate_atm_iv(8, ts, 0.5), full)
    assert np.all(full > 0)


@pytest.mark.parametrize("seed", range(10))
def test_iv_rank_visits_both_extremes_within_four_weeks(seed):
    ts = np.arange(0, 24 * 28, dtype=np.int64) * HOUR_MS
    path = simulate_atm_iv(seed, ts, 0.5)
    ranks = [iv_rank(path[:i], path[i]) for i in range(48, path.size)]  # after a 2-day warm-up
    assert max(ranks) > 75 and min(ranks) < 25


def test_path_bad_inputs():
    with pytest.raises(VolSurfaceError, match=r"ts\[2\]: timestamps must not decrease"):
        simulate_atm_iv(1, np.array([0, 10, 5]), 0.5)
    with pytest.raises(VolSurfaceError, match="ts: expected a 1-d array of int ms"):
        simulate_atm_iv(1, np.array([0.0, 1.0]), 0.5)
    with pytest.raises(VolSurfaceError, match="base_iv"):
        simulate_atm_iv(1, np.array([0, 1]), -0.5)
    assert simulate_atm_iv(1, np.array([], dtype=np.int64), 0.5).size == 0


def test_iv_rank_values():
    assert iv_rank(np.array([0.4, 0.6, 0.5]), 0.45) == pytest.approx(25.0)
    assert iv_rank(np.array([0.4, 0.6]), 0.7) == 100.0
    assert iv_rank(np.array([0.4, 0.6]), 0.3) == 0.0
    assert iv_rank(np.array([0.5, 0.5]), 0.5) == 50.0
    assert iv_rank(np.array([]), 0.5) == 50.0
    assert iv_rank(np.array([np.nan, 0.4, 0.6]), 0.5) == pytest.approx(50.0)
    assert iv_rank(np.array([0.4, 0.6]), math.nan) == 50.0
