"""What every market feed is: the protocol the marketdata service drives, and what one
advance yields. The simulator and replay (``market``) and the live exchange
(``exchange_client``) implement it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from common.bars import Bar
from common.ohlcv import OHLCV

Tick = tuple[float, int]  # (price, ts in ms)


@dataclass(frozen=True, slots=True)
class FeedUpdate:
    """What changed since the previous advance: the latest price of each symbol that moved,
    and the bars that closed, in close-time order (finer timeframes first at equal times)."""

    ticks: dict[str, Tick] = field(default_factory=dict)
    bars: list[Bar] = field(default_factory=list)


class MarketFeed(Protocol):
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]

    @property
    def now_ts(self) -> int | None: ...

    @property
    def finished(self) -> bool: ...

    def start(self, market_ts: int | None = None) -> int: ...

    def advance_to(self, ts: int) -> FeedUpdate: ...

    def history(self, symbol: str, timeframe: str, limit: int | None = None) -> OHLCV: ...

    def prices(self) -> dict[str, Tick]: ...
