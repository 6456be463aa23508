"""Edge detectors: an event fires once, on the bar a condition turns, never out of warm-up."""
from __future__ import annotations

import numpy as np
import pytest

from strategies.events import StrategyOutput, becomes_true, cross_above, cross_below, to_signals

NAN = np.nan


def test_cross_above_fires_only_on_the_crossing_bar():
    a = np.array([1.0, 2.0, 3.0, 3.0, 1.0, 4.0])
    b = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert cross_above(a, b).tolist() == [False, False, True, False, False, True]
    assert cross_below(a, b).tolist() == [False, False, False, False, True, False]


def test_touching_is_not_crossing_but_leaving_from_a_touch_is():
    a = np.array([1.0, 2.0, 2.0, 3.0])
    assert np.flatnonzero(cross_above(a, 2.0)).tolist() == [3]
    assert not cross_below(a, 2.0).any()


def test_no_cross_out_of_nan_warmup():
    a = np.array([NAN, 5.0, 6.0, 1.0])
    assert cross_above(a, 2.0).tolist() == [False, False, False, False]
    assert cross_below(a, 2.0).tolist() == [False, False, False, True]


def test_becomes_true_needs_a_defined_previous_bar():
    condition = np.array([True, True, False, True, True])
    defined = np.array([False, True, True, True, True])
    assert becomes_true(condition, defined).tolist() == [False, False, False, True, False]


def test_to_signals_holds_when_both_fire():
    buy = np.array([True, False, True, False])
    sell = np.array([False, True, True, False])
    signals = to_signals(buy, sell)
    assert signals.dtype == np.int8
    assert signals.tolist() == [1, -1, 0, 0]


def test_output_rejects_misaligned_series_and_wrong_dtype():
    with pytest.raises(ValueError, match="indicator 'x' has 2 values, signals have 3"):
        StrategyOutput(np.zeros(3, dtype=np.int8), {"x": np.zeros(2)})
    with pytest.raises(ValueError, match="signals must be int8"):
        StrategyOutput(np.zeros(3, dtype=np.int64), {})
