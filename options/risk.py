"""Options risk limits, checked before a proposed trade reaches the portfolio.

Closing trades always pass: they only reduce risk. An opening trade is refused when the
strategy is in drawdown beyond the limit, or when it would push a net greek past its limit
(a trade that reduces an already excessive exposure still passes). Greeks of open
positions are the ones the caller passes in (entry greeks unless it refreshed them). Coins
the strategy holds (its spot leg: a buy-write, a married put, a wheel's assignment) count
one delta each, as do the coins a trade buys with it (``ProposedTrade.spot_coins``).

:func:`max_quantity` is the same rule solved for size: the largest quantity of a structure
that the check would still pass, so strategies propose what the limits allow.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from options.contracts import OptionPosition, ProposedTrade


class OptionsRiskError(ValueError):
    """Bad limits or inputs to a risk check; the message names the field."""


@dataclass(frozen=True, slots=True)
class OptionsRiskLimits:
    """Per-strategy limits. Ratios are to the strategy's portfolio value."""

    max_drawdown_pct: float = 20.0  # from peak value
    max_delta_ratio: float = 1.0  # |net delta| x spot / value: 1.0 = delta-equivalent to all capital in coin
    max_vega_ratio: float = 0.02  # |net vega| (USD per vol point) / value: 2% of capital per vol point

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not (math.isfinite(value) and value > 0)):
                raise OptionsRiskError(f"options risk limits.{f.name}: must be a finite number > 0, got {value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OptionsRiskLimits":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionsRiskError(
                f"options risk limits.{unknown[0]}: unknown key; expected one of {', '.join(sorted(known))}")
        return cls(**d)


_GREEKS = ("delta", "vega")


def net_greek(positions: Sequence[OptionPosition], greek: str, spot_coins: float = 0.0) -> float:
    """The book's net ``greek``: options' per-coin greek x signed coins, plus coins held for delta."""
    options = sum(pos.greeks.get(greek, 0.0) * pos.coins for pos in positions)
    return options + spot_coins if greek == "delta" else options


def greek_limit(limits: OptionsRiskLimits, greek: str, spot: float) -> tuple[float, float]:
    """(USD scale of one unit of the net greek, the limit as a ratio of value)."""
    return (spot, limits.max_delta_ratio) if greek == "delta" else (1.0, limits.max_vega_ratio)


def trade_greek(trade: ProposedTrade, greek: str) -> float:
    """What ``trade`` adds to the book's net ``greek`` (coins of delta, USD per vol point of vega)."""
    added = trade.greeks.get(greek, 0.0) * trade.coins
    return added + trade.spot_coins if greek == "delta" else added


@dataclass(frozen=True, slots=True)
class SizeLimit:
    """The largest quantity the greek limits allow and the limit that binds (None: unbounded)."""

    quantity: float
    greek: str | None


def max_quantity(limits: OptionsRiskLimits, positions: Sequence[OptionPosition], per_unit: Mapping[str, float],
                 portfolio_value: float, *, spot: float, spot_coins: float = 0.0) -> SizeLimit:
    """Largest ``q >= 0`` such that adding ``q`` units of a structure whose net greeks per unit
    are ``per_unit`` (delta in coins, vega in USD per vol point) passes :func:`check_options_trade`:
    for each greek ``|net + q g| <= limit x value / scale``, or ``|net + q g| <= |net|``.

    Solved per greek: ``q <= (L - sign(g) net) / |g|``, or, when ``g`` points against ``net``,
    ``q <= 2 |net| / |g|`` (still no further from zero than now); the smallest bound binds.
    """
    if not (math.isfinite(portfolio_value) and portfolio_value > 0):
        return SizeLimit(0.0, "value")
    best = SizeLimit(math.inf, None)
    for greek in _GREEKS:
        g = float(per_unit.get(greek, 0.0))
        if g == 0.0 or not math.isfinite(g):
            continue
        scale, ratio = greek_limit(limits, greek, spot)
        bound_value = ratio * portfolio_value / scale
        net = net_greek(positions, greek, spot_coins)
        within = (bound_value - math.copysign(1.0, g) * net) / abs(g)
        reducing = 2.0 * abs(net) / abs(g) if net * g < 0 else 0.0
        q = max(within, reducing, 0.0) * (1.0 - 1e-9)  # a hair inside, so the check passes after rounding
        if q < best.quantity:
            best = SizeLimit(q, greek)
    return best


def check_options_trade(limits: OptionsRiskLimits, positions: Sequence[OptionPosition], trade: ProposedTrade,
                        portfolio_value: float, *, spot: float, peak_value: float | None = None,
                        spot_coins: float = 0.0) -> tuple[bool, str]:
    """(ok, reason) for one proposed trade; reason says which limit and the numbers."""
    for name, value in (("portfolio_value", portfolio_value), ("spot", spot)):
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise OptionsRiskError(f"{name}: must be a finite number, got {value!r}")
    if trade.action == "close":
        return True, "close: reduces risk"
    if portfolio_value <= 0:
        return False, f"portfolio value {portfolio_value:.2f} <= 0: no new positions"
    if peak_value is not None and peak_value > 0:
        drawdown_pct = (peak_value - portfolio_value) / peak_value * 100.0
        if drawdown_pct >= limits.max_drawdown_pct:
            return False, f"risk limit: drawdown {drawdown_pct:.1f}% >= {limits.max_drawdown_pct:g}%: no new positions"
    for greek in _GREEKS:
        scale, limit = greek_limit(limits, greek, spot)
        net = net_greek(positions, greek, spot_coins)
        before = abs(net) * scale / portfolio_value
        after = abs(net + trade_greek(trade, greek)) * scale / portfolio_value
        if after > limit and after > before:
            return False, f"risk limit: net {greek} would be {after:.3f} x value > limit {limit:g}"
    return True, "within limits"
