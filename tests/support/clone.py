"""Gateway clones of hand-written books, for the views' tests (services.views.status.BookClone)."""
from __future__ import annotations

from typing import Any, Mapping

from options.contracts import OptionPosition, parse_instrument_name
from services.views.status import BookClone
from trading.ledger import Position, StrategyBook, new_book

T0 = 1_767_225_600_000


Held = Mapping[str, tuple[float, float]]  # symbol -> (quantity, avg_price)


def book(sid: str, category: str, cash: float, initial: float, positions: Held | None = None,
         option_value: float | None = None) -> tuple[StrategyBook, str]:
    """A book of ``category`` holding ``positions`` (symbol -> (quantity, avg_price)) and, when
    ``option_value`` is given, one option position last marked at that value."""
    held = new_book(sid, "spot" if category == "spot" else "options", initial, T0)
    held.cash = cash
    held.positions = {s: Position(s, q, avg, T0) for s, (q, avg) in (positions or {}).items()}
    if option_value is not None:
        call = OptionPosition(parse_instrument_name("BTC-25DEC26-100000-C"), 1.0, option_value, T0)
        held.option_positions = {call.name: call}  # one BTC coin each: value = premium
    return held, category


def clone(books: Mapping[str, tuple[StrategyBook, str]], prices: Mapping[str, float], market_ts: int = T0,
          journal_seq: int = 0, **more: Any) -> BookClone:
    return BookClone(more.get("stream", "s"), more.get("seq", 0), market_ts, journal_seq, dict(prices), dict(books))
