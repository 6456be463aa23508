"""The fill path's cores and the others' (cpu.split_cores)."""
from __future__ import annotations

import pytest

from common.cores import split_cores


@pytest.mark.parametrize(("allowed", "fill_path", "off_path"), [
    ({0, 1}, {1}, {0}),
    ({0, 1, 2}, {1, 2}, {0}),
    ({0, 1, 2, 3}, {2, 3}, {0, 1}),
    ({5, 2}, {5}, {2}),  # a cpuset that is not 0..n-1: the upper half of what is given
    ([3, 1, 3, 7], {3, 7}, {1}),  # repeats count once
])
def test_the_fill_path_takes_the_upper_half_of_the_cores_rounded_up(allowed, fill_path, off_path):
    assert split_cores(allowed) == (frozenset(fill_path), frozenset(off_path))


@pytest.mark.parametrize("allowed", [set(), {0}, [4, 4]])
def test_fewer_than_two_cores_are_not_split(allowed):
    assert split_cores(allowed) is None


@pytest.mark.parametrize("bad", [[0, -1], [0, "1"], [0, 1.0], [True, 1]])
def test_a_core_that_is_not_a_non_negative_integer_is_named(bad):
    with pytest.raises(ValueError, match=r"cores: expected non-negative integers, got \["):
        split_cores(bad)
