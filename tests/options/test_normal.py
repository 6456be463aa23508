import math

import numpy as np
import pytest

from options.normal import norm_cdf


def reference(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@pytest.mark.parametrize("lo, hi, rel", [(-5.0, 37.0, 1e-14), (-10.0, -5.0, 5e-14), (-37.0, -10.0, 5e-13)])
def test_matches_math_erfc_across_the_body_and_the_tails(lo, hi, rel):
    """Relative error: ~1e-15 in the body; exp(-z^2) rounding costs a little far in the left tail."""
    xs = np.linspace(lo, hi, 20_001)
    got = norm_cdf(xs)
    want = np.array([reference(x) for x in xs])
    assert np.all(np.abs(got - want) <= rel * want + 1e-300)


@pytest.mark.parametrize("x, expected", [(0.0, 0.5), (1.0, 0.8413447460685429), (-1.96, 0.024997895148220435),
                                         (math.inf, 1.0), (-math.inf, 0.0), (-40.0, 0.0)])
def test_known_values_and_limits(x, expected):
    assert norm_cdf(x) == pytest.approx(expected, rel=2e-15, abs=1e-300)


def test_nan_stays_nan_shape_is_kept_and_symmetry_holds():
    assert math.isnan(norm_cdf(math.nan))
    grid = np.linspace(-8, 8, 24).reshape(4, 6)
    out = norm_cdf(grid)
    assert out.shape == (4, 6)
    np.testing.assert_allclose(out + norm_cdf(-grid), 1.0, rtol=0, atol=2e-16)
