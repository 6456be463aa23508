"""The standard normal CDF in plain numpy, so pricing needs no scipy (26 MB per process).

Cephes' ``ndtr`` (S. L. Moshier, public domain): rational approximations of erf for
|x| < 1 and of erfc on [1, 8) and [8, inf). Relative error against math.erfc: ~1e-15 in
the body, up to ~3e-13 far in the left tail where exp(-z^2) rounds (tests pin both). About
4x slower than scipy's compiled ndtr, and it saves every pricing process 26 MB.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

_SQRT_HALF = 7.07106781186547524401e-1
_MAX_LOG = 7.09782712893383996843e2
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)


def _poly(x: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """Horner's rule, highest power first."""
    result = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        result = result * x + c
    return result


def _erf_small(t: np.ndarray) -> np.ndarray:
    """erf(t) for |t| < 1."""
    tt = t * t
    return t * _poly(tt, _ERF_T) / _poly(tt, _ERF_U)


def _half_erfc(z: np.ndarray) -> np.ndarray:
    """erfc(z) / 2 for z >= 0 (0 where exp(-z^2) underflows); each piece only where it applies."""
    out = np.zeros_like(z)
    low = z < 1.0
    near = ~low & (z < 8.0)
    far = (z >= 8.0) & (z * z <= _MAX_LOG)
    zl, zn, zf = z[low], z[near], z[far]
    out[low] = 0.5 * (1.0 - _erf_small(zl))
    out[near] = 0.5 * np.exp(-zn * zn) * _poly(zn, _ERFC_P) / _poly(zn, _ERFC_Q)
    out[far] = 0.5 * np.exp(-zf * zf) * _poly(zf, _ERFC_R) / _poly(zf, _ERFC_S)
    return out


def norm_cdf(x: ArrayLike) -> np.ndarray:
    """P(N(0,1) <= x), elementwise; NaN stays NaN, +-inf give 1 and 0."""
    x = np.asarray(x, dtype=np.float64)
    t = x * _SQRT_HALF
    z = np.abs(t)
    out = np.full_like(t, np.nan)
    body = z < _SQRT_HALF
    tail = z >= _SQRT_HALF  # NaN is in neither
    out[body] = 0.5 + 0.5 * _erf_small(t[body])
    half = _half_erfc(z[tail])
    out[tail] = np.where(t[tail] > 0, 1.0 - half, half)
    return out if out.ndim else out[()]
