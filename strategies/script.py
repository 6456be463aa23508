"""A seed-style strategy script's answer, checked: what ``python SCRIPT ARGS...`` printed.

The seed ran each strategy as a script printing one JSON object (``check-strategy`` prints the
same one): ``{"strategy", "symbol", "timeframe", "signal", "price", "indicators", "timestamp"}``.
``signal`` and ``price`` decide; ``indicators`` (name -> number) is published with the signal;
an ``error`` key is the script saying it could not decide. Pure: the text in, a record or a
ScriptError naming the script out (the subprocess lives in services/script_runner.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

REQUIRED_FIELDS = ("strategy", "symbol", "signal", "price")
MAX_OUTPUT_CHARS = 1_000_000


class ScriptError(ValueError):
    """A script failed, timed out, or printed something that is not the seed's JSON."""


@dataclass(frozen=True, slots=True)
class ScriptSignal:
    signal: int  # -1 sell, 0 hold, 1 buy
    price: float
    indicators: dict[str, float]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def parse_script_output(stdout: str, script: str, symbol: str) -> ScriptSignal:
    """The last non-empty line of ``stdout`` as the seed's JSON for ``symbol``, or a ScriptError
    saying what is wrong (earlier lines are the script's own chatter)."""
    lines = [line for line in stdout[-MAX_OUTPUT_CHARS:].splitlines() if line.strip()]
    if not lines:
        raise ScriptError(f"{script}: printed nothing; expected one JSON object with {', '.join(REQUIRED_FIELDS)}")
    try:
        doc = json.loads(lines[-1])
    except ValueError as exc:
        raise ScriptError(f"{script}: last line is not JSON ({exc}): {lines[-1][:200]!r}") from None
    if not isinstance(doc, dict):
        raise ScriptError(f"{script}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("error"):
        raise ScriptError(f"{script}: reported an error: {str(doc['error'])[:200]}")
    missing = [key for key in REQUIRED_FIELDS if key not in doc]
    if missing:
        raise ScriptError(f"{script}: missing field(s) {', '.join(missing)} in {lines[-1][:200]}")
    signal = doc["signal"]
    if isinstance(signal, bool) or signal not in (-1, 0, 1):
        raise ScriptError(f"{script}: signal must be -1, 0 or 1, got {signal!r}")
    price = _number(doc["price"])
    if price is None or price <= 0:
        raise ScriptError(f"{script}: price must be a finite number > 0, got {doc['price']!r}")
    if doc["symbol"] != symbol:
        raise ScriptError(f"{script}: answered for symbol {doc['symbol']!r}, configured for {symbol!r}")
    raw = doc.get("indicators") or {}
    if not isinstance(raw, dict):
        raise ScriptError(f"{script}: indicators must be an object of numbers, got {raw!r}")
    indicators = {str(k): v for k, v in ((k, _number(v)) for k, v in raw.items()) if v is not None}
    return ScriptSignal(int(signal), price, indicators)
