"""Bar timeframes and their length in ms.

Kept apart from ``common.ohlcv`` so that the config loader, which every service and the
gateway import, does not pull numpy into processes that never touch a bar.
"""
from __future__ import annotations

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": HOUR_MS,
    "4h": 14_400_000,
    "1d": DAY_MS,
}


def timeframe_ms(timeframe: str) -> int:
    """Length of one bar in ms; a clear error names the unknown timeframe."""
    try:
        return TIMEFRAME_MS[timeframe]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAME_MS)}"
        ) from None
