"""Each service loads only the libraries it uses: memory is paid per process, five times over.

Imported in a fresh interpreter each, as supervisord starts them, and the default config
loaded and checked as each does on start. ccxt, requests and ib_async are loaded only when a
live feed, a webhook or IBKR is configured (lazily, at that point). asyncio (with
concurrent.futures, 4 MB) in no service: the gateway's HTTP server runs on selectors, and ssl
(libssl and libcrypto mapped) nowhere either; difflib only when a config name is wrong (a
did-you-mean hint).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("numpy", "pandas", "scipy", "ccxt", "requests", "ib_async", "matplotlib", "tqdm", "prometheus_client",
         "asyncio", "ssl", "difflib")
NEEDS = {
    "marketdata": {"numpy"},
    "signals": {"numpy"},
    "portfolio": set(),
    "pricer": {"numpy"},
    "gateway": set(),
}


def heavy_modules_after_import(module: str) -> set[str]:
    code = (f"import json, sys, {module}\n"
            "from config.settings import load_config\n"
            "load_config('config/default.json')\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("service", sorted(NEEDS))
def test_service_imports_no_library_it_does_not_use(service: str):
    assert heavy_modules_after_import(f"services.{service}") == NEEDS[service]


def test_the_probe_sees_a_heavy_import():
    assert "pandas" in heavy_modules_after_import("pandas")
