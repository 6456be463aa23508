"""Options risk limits, checked before a proposed trade reaches the portfolio.

Closing trades always pass: they only reduce risk. An opening trade is refused when the
strategy is in drawdown beyond the limit, or when it would push a net greek past its limit
(a trade that reduces an already excessive exposure still passes). Greeks of open
positions are the ones the caller passes in (entry greeks unless it refreshed them).
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
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise OptionsRiskError(f"options risk limits.{f.name}: must be a finite number > 0, got {value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OptionsRiskLimits":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionsRiskError(
                f"options risk limits.{unknown[0]}: unknown key; expected one of {', '.join(sorted(known))}")
        return cls(**d)


def _net(positions: Sequence[OptionPosition], greek: str) -> float:
    return sum(pos.greeks.get(greek, 0.0) * pos.coins for pos in positions)


def check_options_trade(limits: OptionsRiskLimits, positions: Sequence[OptionPosition], trade: ProposedTrade,
                        portfolio_value: float, *, spot: float,
                        peak_value: float | None = None) -> tuple[bool, str]:
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
            return False, f"drawdown {drawdown_pct:.1f}% >= {limits.max_drawdown_pct:g}%: no new positions"
    checks = (("delta", spot, limits.max_delta_ratio), ("vega", 1.0, limits.max_vega_ratio))
    for greek, scale, limit in checks:
        before = abs(_net(positions, greek)) * scale / portfolio_value
        after = abs(_net(positions, greek) + trade.greeks.get(greek, 0.0) * trade.coins) * scale / portfolio_value
        if after > limit and after > before:
            return False, f"net {greek} would be {after:.3f} x value > limit {limit:g}"
    return True, "within limits"
