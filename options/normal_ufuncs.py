"""scipy's compiled normal CDF (``ndtr``) and its inverse (``ndtri``), without the
``scipy.special`` package namespace.

``import scipy.special`` runs that package's ``__init__``: about 300 modules (numpy.f2py and
charset_normalizer through array_api_compat's copy of numpy's namespace, the special-function
wrappers), 21 MB in a fresh process, for two ufuncs that live in the compiled extension
``scipy.special._ufuncs``. That extension imports only its compiled siblings, so it is loaded
here under a bare stand-in for its package, which is taken out of ``sys.modules`` at once. A
later ``import scipy.special`` (a test, a notebook) runs the real package; it finds ``_ufuncs``
already loaded and hands out the very same ufunc objects.
"""
from __future__ import annotations

import _imp
import importlib
import os
import sys
import types
from typing import Any

_UFUNCS = "scipy.special._ufuncs"


def _load_ufuncs() -> Any:
    """The ``scipy.special._ufuncs`` module, loaded without running ``scipy.special/__init__``."""
    if "scipy.special" in sys.modules or _UFUNCS in sys.modules:
        return importlib.import_module(_UFUNCS)
    import scipy

    stand_in = types.ModuleType("scipy.special", "stand-in while scipy.special._ufuncs loads")
    stand_in.__path__ = [os.path.join(path, "special") for path in scipy.__path__]
    _imp.acquire_lock()  # no other thread may see the stand-in (the global import lock is re-entrant)
    try:
        sys.modules["scipy.special"] = stand_in
        try:
            return importlib.import_module(_UFUNCS)
        finally:
            if sys.modules.get("scipy.special") is stand_in:
                del sys.modules["scipy.special"]
    finally:
        _imp.release_lock()


_ufuncs = _load_ufuncs()
ndtr: Any = _ufuncs.ndtr
ndtri: Any = _ufuncs.ndtri
