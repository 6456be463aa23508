"""Portfolio-aware scoring: does a proposed option trade fit the strategy's open book?

Parts of a score (``score_trade``), summed into ``total``:

- ``strike_distance``: nearest open strike more than 10% of spot away +0.4, within 5% -0.3.
- ``expiry_spread``: an expiry none of the open positions has +0.3.
- ``greek_balance``: the trade moves the book's net delta (in coins) toward zero +0.2, away
  from it -0.3; 0 on a delta-flat book, where there is nothing to balance.
- ``premium_efficiency``: the premium as a fraction of spot, capped at 0.1: added for a sale
  (premium collected), subtracted for a purchase (premium paid). A small tie-breaker.

Base score of a fresh strategy: on an empty book no strike is near and every expiry is new,
so the first two parts award +0.4 and +0.3 and the first trade scores about 0.7, above
``EXECUTE_THRESHOLD``. Closing trades are not scored against the book: risk reduction is
never blocked, they carry ``CLOSE_SCORE`` and free their slot before any opening is counted.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

from options.contracts import OptionPosition, ProposedTrade

EXECUTE_THRESHOLD = 0.3
MAX_POSITIONS = 4
CLOSE_SCORE = 1.0
_DELTA_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class ScoreBreakdown:
    total: float
    parts: Mapping[str, float]


class _Leg(NamedTuple):
    strike: float
    expiry_ts: int
    delta_coins: float  # per-coin delta x signed coins


def _position_leg(pos: OptionPosition) -> _Leg:
    return _Leg(pos.contract.strike, pos.contract.expiry_ts, pos.greeks.get("delta", 0.0) * pos.coins)


def _trade_leg(trade: ProposedTrade) -> _Leg:
    return _Leg(trade.contract.strike, trade.contract.expiry_ts, trade.greeks.get("delta", 0.0) * trade.coins)


def _score(trade: ProposedTrade, book: Sequence[_Leg], spot: float) -> ScoreBreakdown:
    if trade.action == "close":
        return ScoreBreakdown(CLOSE_SCORE, {"close": CLOSE_SCORE})
    nearest = min((abs(trade.contract.strike - leg.strike) / spot for leg in book), default=float("inf"))
    strike_part = 0.4 if nearest > 0.10 else -0.3 if nearest < 0.05 else 0.0
    expiry_part = 0.3 if all(leg.expiry_ts != trade.contract.expiry_ts for leg in book) else 0.0
    before = sum(leg.delta_coins for leg in book)
    after = before + _trade_leg(trade).delta_coins
    if abs(before) < _DELTA_EPS or abs(after) == abs(before):
        greek_part = 0.0
    else:
        greek_part = 0.2 if abs(after) < abs(before) else -0.3
    premium_part = min(trade.premium / spot, 0.1) * (1.0 if trade.side < 0 else -1.0)
    parts = {"strike_distance": strike_part, "expiry_spread": expiry_part, "greek_balance": greek_part,
             "premium_efficiency": premium_part}
    return ScoreBreakdown(sum(parts.values()), parts)


def score_trade(trade: ProposedTrade, open_positions: Sequence[OptionPosition], spot: float) -> ScoreBreakdown:
    """Score one proposal against the strategy's open positions (spot in USD per coin)."""
    if not spot > 0:
        raise ValueError(f"spot: must be > 0 to score a trade, got {spot!r}")
    return _score(trade, [_position_leg(p) for p in open_positions], spot)


def select_trades(proposals: Sequence[ProposedTrade], open_positions: Sequence[OptionPosition],
                  spot: float, max_positions: int = MAX_POSITIONS,
                  min_score: float = EXECUTE_THRESHOLD) -> list[ProposedTrade]:
    """The proposals to execute, each carrying its score (see :func:`select_with_reasons`)."""
    return select_with_reasons(proposals, open_positions, spot, max_positions, min_score)[0]


def select_with_reasons(proposals: Sequence[ProposedTrade], open_positions: Sequence[OptionPosition],
                        spot: float, max_positions: int = MAX_POSITIONS,
                        min_score: float = EXECUTE_THRESHOLD) -> tuple[list[ProposedTrade], list[str]]:
    """(the proposals to execute, each carrying its score; why each other structure is skipped).

    Closes first (they free slots). Then openings in proposal order: the legs of one group
    (a strangle, a straddle) are scored against the book without each other, the group's
    score is the mean of its legs, and the group goes in whole or not at all: only if that
    score is >= ``min_score`` and the open count stays <= ``max_positions``. Accepted
    openings join the book that later proposals are scored against.
    """
    if not spot > 0:
        raise ValueError(f"spot: must be > 0 to select trades, got {spot!r}")
    closes = [dataclasses.replace(t, score=CLOSE_SCORE) for t in proposals if t.action == "close"]
    closing = {t.contract for t in closes}
    book = [_position_leg(p) for p in open_positions if p.contract not in closing]
    count = len(book)
    groups: dict[object, list[ProposedTrade]] = {}
    for i, trade in enumerate(t for t in proposals if t.action == "open"):
        groups.setdefault(trade.group or i, []).append(trade)
    selected: list[ProposedTrade] = list(closes)
    skipped: list[str] = []
    for legs in groups.values():
        score = sum(_score(leg, book, spot).total for leg in legs) / len(legs)
        names = "+".join(leg.contract.name for leg in legs)
        if score < min_score:
            skipped.append(f"score below {min_score:g}: open {names} scores {score:.3f}")
            continue
        if count + len(legs) > max_positions:
            skipped.append(f"position cap: open {names} would hold {count + len(legs)} positions > max {max_positions}")
            continue
        selected.extend(dataclasses.replace(leg, score=score) for leg in legs)
        book.extend(_trade_leg(leg) for leg in legs)
        count += len(legs)
    return selected, skipped
