"""Discord cycle summaries, the pure part: the text, the split at Discord's 2000-character
limit, how long a 429 asks us to wait, and the redacted form of a webhook URL for logs.

The posting itself (requests, a background thread) lives in services/discord_webhook.py.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Mapping

from common.timeframes import DAY_MS, HOUR_MS
from services.views.summary import format_summary
from trading.risk import iso_utc

DISCORD_LIMIT = 2000
DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 60.0
_URL_ORIGIN = re.compile(r"^([A-Za-z][\w+.-]*)://(?:[^@/?#]*@)?([^/?#]*)")


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at line ends; only a single line longer than
    ``limit`` is cut inside, so a summary never loses or reorders a line."""
    if limit < 1:
        raise ValueError(f"split_message: limit must be >= 1, got {limit!r}")
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            candidate = line
        current = candidate
    if current.strip():
        pieces.append(current)
    return [p for p in pieces if p.strip()]


SUMMARY_GROUPS: Mapping[str, tuple[str, ...]] = {"spot": ("spot",), "options": ("deribit", "ibkr")}
_FREQ_MS = {"hourly": HOUR_MS, "daily": DAY_MS}


def summary_due(freq: str, last_posted_ts: int | None, market_ts: int, traded: bool) -> bool:
    """Whether a summary group posts on this cycle, as the seed's ``*_summary_freq`` say:
    ``per_check`` after every cycle in which the group traded; ``hourly`` / ``daily`` on the
    first cycle of each market hour / UTC day (trades or not), the trades since the last post with it."""
    if freq == "per_check":
        return traded
    if freq not in _FREQ_MS:
        raise ValueError(f"summary frequency: expected per_check, hourly or daily, got {freq!r}")
    return last_posted_ts is None or market_ts // _FREQ_MS[freq] != last_posted_ts // _FREQ_MS[freq]


def cycle_summary(status: Mapping[str, Any], fills: Iterable[Mapping[str, Any]], cycle: int | None = None,
                  group: str | None = None) -> str:
    """The seed's Discord summary for a status document (strategies marked now + totals) and
    the fills since the last post; with ``group`` ("spot" or "options"), that group's categories only."""
    when = status.get("market_ts")
    title = "**go-trader**"
    if cycle is not None:
        title += f" cycle {cycle}"
    if isinstance(when, int) and not isinstance(when, bool):
        title += f" at {iso_utc(when)}"
    if group is not None:
        title += f": {group}"
    categories = None if group is None else SUMMARY_GROUPS[group]
    return format_summary(status, fills, markdown=True, title=title, categories=categories)


def cycle_messages(status: Mapping[str, Any], fills: Iterable[Mapping[str, Any]], cycle: int | None = None,
                   limit: int = DISCORD_LIMIT, group: str | None = None) -> list[str]:
    return split_message(cycle_summary(status, fills, cycle, group), limit)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def retry_after_seconds(headers: Mapping[str, str], body: bytes | str | Mapping[str, Any] | None) -> float:
    """Seconds a 429 asks us to wait: the JSON body's ``retry_after`` first (Discord sends it in
    seconds, fractional), then the ``Retry-After`` header; capped so a bad value cannot stall us."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    delay = _number(body.get("retry_after")) if isinstance(body, Mapping) else None
    if delay is None:
        header = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        delay = _number(header)
    if delay is None:
        delay = DEFAULT_RETRY_AFTER_S
    return min(delay, MAX_RETRY_AFTER_S)


def redact_webhook(url: str) -> str:
    """``https://discord.com/***``: enough to tell which service, nothing that lets anyone post
    (the path carries the webhook's token; user info, if any, is dropped too)."""
    match = _URL_ORIGIN.match(url)
    if match is None:
        return "***"
    return f"{match.group(1)}://{match.group(2)}/***"
