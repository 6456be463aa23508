"""The five options strategies, one rule set for every venue.

``decide(name, ctx, positions, params)`` is pure: a market context and the strategy's open
option positions in, proposed trades out. Contracts come only from ``ctx.chain`` (listed
expiries x listed strikes), premiums from its marks (USD per coin).

Sizing (the same for every strategy): a new structure may use at most
``min(cash, capital * alloc_fraction)`` dollars. For a buy that is the premium paid
(premium x multiplier per contract); for a sold put it is the cash that secures the strike
(strike x multiplier); for a sold call not covered by a spot holding it is the spot
notional (spot x multiplier), as if covered by cash. Quantities are rounded DOWN to the
venue's quantity step; if even the venue's minimum size does not fit, the strategy proposes
nothing. So a $1K strategy can buy 0.1 of a cheap Deribit BTC call but never sells a
$60K-strike put it could not pay for. Calls written against a spot holding (covered calls,
the wheel after assignment) are sized to the coins held instead.

Exits run first, for every strategy: a position is closed at <= ``close_dte`` days to
expiry; a short is closed when its profit reaches ``take_profit_pct`` of the premium
received, or its loss ``stop_loss_pct`` of it. The wheel keeps its shorts to expiry
(close_dte 0) because assignment is the point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from options.chain import OptionChain, closest_strike
from options.contracts import OptionContract, OptionPosition, ProposedTrade, closest_expiry
from options.params import DEFAULT_PARAMS
from options.venues import UnderlyingSpec, VenueSpec
from options.vol_surface import iv_rank


class StrategyError(ValueError):
    """Unknown strategy, unknown parameter or a context that cannot be decided on."""


@dataclass(frozen=True, eq=False)  # numpy columns: compare by identity
class OptionsContext:
    """Everything a strategy may look at, at one market time."""

    strategy_id: str
    underlying: str
    venue: VenueSpec
    ts_event: int
    spot: float
    closes: np.ndarray  # recent closes of the underlying, oldest first
    atm_iv: float
    iv_history: np.ndarray
    chain: OptionChain
    capital: float  # the strategy's allocated capital, USD
    cash: float  # its free cash, USD
    spot_quantity: float = 0.0  # coins held (e.g. after a wheel assignment)
    spot_cost_basis: float = 0.0  # USD per coin of that holding


def strategy_params(name: str, params: Mapping[str, Any] | None) -> dict[str, float]:
    """Defaults overlaid with params; unknown names, unknown keys and non-numbers raise."""
    if name not in DEFAULT_PARAMS:
        raise StrategyError(f"unknown options strategy {name!r}; expected one of {', '.join(DEFAULT_PARAMS)}")
    merged = dict(DEFAULT_PARAMS[name])
    for key, value in (params or {}).items():
        if key not in merged:
            raise StrategyError(f"{name}.{key}: unknown parameter; expected one of {', '.join(sorted(merged))}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise StrategyError(f"{name}.{key}: expected a finite number >= 0, got {value!r}")
        merged[key] = value
    return merged


def decide(strategy_name: str, ctx: OptionsContext, positions: Sequence[OptionPosition],
           params: Mapping[str, Any] | None = None) -> list[ProposedTrade]:
    """Exits for the open positions, then the strategy's entries, as proposals to be scored."""
    p = strategy_params(strategy_name, params)
    if not (math.isfinite(ctx.spot) and ctx.spot > 0):
        raise StrategyError(f"{ctx.strategy_id}: ctx.spot must be a finite number > 0, got {ctx.spot!r}")
    exits = _exits(ctx, positions, p)
    closing = {t.contract for t in exits}
    still_open = [pos for pos in positions if pos.contract not in closing]
    return exits + _RULES[strategy_name](ctx, still_open, p)


def _exits(ctx: OptionsContext, positions: Sequence[OptionPosition], p: Mapping[str, float]) -> list[ProposedTrade]:
    trades = []
    for pos in positions:
        row = ctx.chain.lookup(pos.contract)
        if row is None:
            continue  # unlisted in this chain (expired or off the strike grid): the pricer settles it
        mark = float(ctx.chain.mark[row])
        dte = pos.contract.dte_days(ctx.ts_event)
        reason = ""
        if p["close_dte"] > 0 and dte <= p["close_dte"]:
            reason = f"{dte:.1f} DTE <= {p['close_dte']:g}: close before expiry"
        elif pos.quantity < 0 and pos.entry_premium > 0:
            change_pct = (pos.entry_premium - mark) / pos.entry_premium * 100.0
            if change_pct >= p["take_profit_pct"]:
                reason = f"theta harvest: kept {change_pct:.0f}% of premium >= {p['take_profit_pct']:g}%"
            elif -change_pct >= p["stop_loss_pct"]:
                reason = f"stop: loss {-change_pct:.0f}% of premium >= {p['stop_loss_pct']:g}%"
        if reason:
            trades.append(ProposedTrade("close", pos.contract, 1 if pos.quantity < 0 else -1, abs(pos.quantity),
                                        mark, ctx.chain.greeks(row), reason))
    return trades


def _budget(ctx: OptionsContext, p: Mapping[str, float]) -> float:
    return max(min(ctx.cash, ctx.capital * p["alloc_fraction"]), 0.0)


def _round_down(quantity: float, spec: UnderlyingSpec) -> float:
    """Quantity on the venue's step (rounded down), or 0 below the venue minimum."""
    steps = math.floor(quantity / spec.quantity_step + 1e-9)
    rounded = round(steps * spec.quantity_step, 10)
    return rounded if rounded >= spec.min_quantity else 0.0


def _contracts_for(budget: float, usd_per_contract: float, spec: UnderlyingSpec) -> float:
    if not usd_per_contract > 0:
        return 0.0
    return _round_down(budget / usd_per_contract, spec)


def _pick(chain: OptionChain, ts_event: int, target_dte: float, strike: float, is_call: bool) -> int | None:
    """Row of the listed contract nearest (target_dte, strike)."""
    expiry = closest_expiry(chain.expiries(), ts_event, target_dte)
    listed = chain.strike[chain.expiry_ts == expiry]
    contract = OptionContract(chain.venue, chain.underlying, expiry, closest_strike(listed, strike), is_call,
                              chain.multiplier)
    return chain.lookup(contract)


def _open(ctx: OptionsContext, row: int, side: int, quantity: float, reason: str, group: str = "") -> ProposedTrade:
    chain = ctx.chain
    return ProposedTrade("open", chain.contract(row), side, quantity, float(chain.mark[row]), chain.greeks(row),
                         reason, group=group)


def _holds(positions: Sequence[OptionPosition], is_call: bool | None, long: bool) -> bool:
    return any((pos.quantity > 0) == long and (is_call is None or pos.contract.is_call == is_call)
               for pos in positions)


def _buy_single(ctx: OptionsContext, p: Mapping[str, float], strike: float, is_call: bool, reason: str,
                quantity_cap: float = math.inf) -> list[ProposedTrade]:
    row = _pick(ctx.chain, ctx.ts_event, p["target_dte"], strike, is_call)
    if row is None:
        return []
    spec = ctx.venue.underlying(ctx.underlying)
    premium = float(ctx.chain.mark[row])
    quantity = min(_contracts_for(_budget(ctx, p), premium * spec.multiplier, spec), quantity_cap)
    return [_open(ctx, row, 1, quantity, reason)] if quantity > 0 else []


def _sell_call(ctx: OptionsContext, p: Mapping[str, float], row: int | None, reason: str) -> list[ProposedTrade]:
    """Sell a call: covered by the spot holding if there is one, else by cash at spot notional."""
    if row is None:
        return []
    spec = ctx.venue.underlying(ctx.underlying)
    if ctx.spot_quantity > 0:
        quantity = _round_down(ctx.spot_quantity / spec.multiplier, spec)
    else:
        quantity = _contracts_for(_budget(ctx, p), ctx.spot * spec.multiplier, spec)
    return [_open(ctx, row, -1, quantity, reason)] if quantity > 0 else []


def _momentum(ctx: OptionsContext, positions: Sequence[OptionPosition], p: Mapping[str, float]) -> list[ProposedTrade]:
    period = int(p["roc_period"])
    closes = np.asarray(ctx.closes, dtype=np.float64)
    if period < 1 or closes.size <= period or not closes[-1 - period] > 0:
        return []
    roc = (closes[-1] / closes[-1 - period] - 1.0) * 100.0
    threshold = p["roc_threshold_pct"]
    if roc > threshold and not _holds(positions, True, long=True):
        return _buy_single(ctx, p, ctx.spot, True, f"ROC({period}) {roc:+.1f}% > +{threshold:g}%: buy ATM call")
    if roc < -threshold and not _holds(positions, False, long=True):
        return _buy_single(ctx, p, ctx.spot, False, f"ROC({period}) {roc:+.1f}% < -{threshold:g}%: buy ATM put")
    return []


def _vol_mean_reversion(ctx: OptionsContext, positions: Sequence[OptionPosition],
                        p: Mapping[str, float]) -> list[ProposedTrade]:
    rank = iv_rank(ctx.iv_history, ctx.atm_iv)
    spec = ctx.venue.underlying(ctx.underlying)
    if rank > p["high_rank"] and not _holds(positions, None, long=False):
        put = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 - p["strangle_otm"]), False)
        call = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 + p["strangle_otm"]), True)
        if put is None or call is None:
            return []
        # One side at most ends in the money: secure the larger of put strike and spot notional.
        collateral = max(float(ctx.chain.strike[put]), ctx.spot) * spec.multiplier
        quantity = _contracts_for(_budget(ctx, p), collateral, spec)
        if quantity == 0:
            return []
        reason = f"IV rank {rank:.0f} > {p['high_rank']:g}: sell strangle"
        return [_open(ctx, put, -1, quantity, reason, "strangle"), _open(ctx, call, -1, quantity, reason, "strangle")]
    if rank < p["low_rank"] and not _holds(positions, None, long=True):
        call = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot, True)
        put = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot, False)
        if put is None or call is None:
            return []
        cost = (float(ctx.chain.mark[call]) + float(ctx.chain.mark[put])) * spec.multiplier
        quantity = _contracts_for(_budget(ctx, p), cost, spec)
        if quantity == 0:
            return []
        reason = f"IV rank {rank:.0f} < {p['low_rank']:g}: buy straddle"
        return [_open(ctx, call, 1, quantity, reason, "straddle"), _open(ctx, put, 1, quantity, reason, "straddle")]
    return []


def _protective_puts(ctx: OptionsContext, positions: Sequence[OptionPosition],
                     p: Mapping[str, float]) -> list[ProposedTrade]:
    if _holds(positions, False, long=True):
        return []
    spec = ctx.venue.underlying(ctx.underlying)
    # With a spot holding, hedge no more than the coins held; without one, the budget decides.
    cap = _round_down(ctx.spot_quantity / spec.multiplier, spec) if ctx.spot_quantity > 0 else math.inf
    if cap == 0:
        return []
    return _buy_single(ctx, p, ctx.spot * (1 - p["otm"]), False,
                       f"no put held: buy {p['otm']:.0%} OTM protective put", quantity_cap=cap)


def _covered_calls(ctx: OptionsContext, positions: Sequence[OptionPosition],
                   p: Mapping[str, float]) -> list[ProposedTrade]:
    if _holds(positions, True, long=False):
        return []
    row = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 + p["otm"]), True)
    return _sell_call(ctx, p, row, f"no call written: sell {p['otm']:.0%} OTM covered call")


def _wheel(ctx: OptionsContext, positions: Sequence[OptionPosition], p: Mapping[str, float]) -> list[ProposedTrade]:
    if _holds(positions, None, long=False):
        return []
    spec = ctx.venue.underlying(ctx.underlying)
    chain = ctx.chain
    if ctx.spot_quantity >= spec.min_quantity * spec.multiplier:
        floor = max(ctx.spot_cost_basis, ctx.spot * (1 + p["call_otm"]))
        expiry = closest_expiry(chain.expiries(), ctx.ts_event, p["target_dte"])
        above = np.flatnonzero((chain.expiry_ts == expiry) & chain.is_call & (chain.strike >= floor))
        if above.size == 0:
            return []
        row = int(above[np.argmin(chain.strike[above])])
        return _sell_call(ctx, p, row, f"assigned {ctx.spot_quantity:g} coins at {ctx.spot_cost_basis:.0f}: "
                                       f"sell call at {chain.strike[row]:.0f} >= cost basis")
    row = _pick(chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 - p["put_otm"]), False)
    if row is None:
        return []
    strike, premium = float(chain.strike[row]), float(chain.mark[row])
    premium_pct = premium / strike * 100.0
    if premium_pct < p["min_premium_pct"]:
        return []
    quantity = _contracts_for(_budget(ctx, p), strike * spec.multiplier, spec)
    reason = f"sell {p['put_otm']:.0%} OTM cash-secured put: premium {premium_pct:.1f}% of strike"
    return [_open(ctx, row, -1, quantity, reason)] if quantity > 0 else []


_RULES: dict[str, Callable[[OptionsContext, Sequence[OptionPosition], Mapping[str, float]], list[ProposedTrade]]] = {
    "momentum_options": _momentum,
    "vol_mean_reversion": _vol_mean_reversion,
    "protective_puts": _protective_puts,
    "covered_calls": _covered_calls,
    "wheel": _wheel,
}
