"""The five options strategies, one rule set for every venue.

``decide(name, ctx, positions, params)`` is pure: a market context and the strategy's open
option positions in, proposed trades out. Contracts come only from ``ctx.chain`` (listed
expiries x listed strikes), premiums from its marks (USD per coin). ``decide_with_reason``
also says why a strategy proposes no new position ("no signal: ...", "holding: ...",
"venue minimum: ...", "no chain: ..."): a strategy is never silently idle.

Sizing: each structure is the largest venue-valid quantity (rounded DOWN to the venue's
step) within its budget and within the greek limits (``ctx.limits``: net delta and vega
after the trade, coins held counted at one delta each; ``options.risk.max_quantity``). The
budget is ``min(cash, capital * alloc_fraction)``: for a buy the premium paid, for a sold
put the cash that secures the strike, for a short strangle the larger of put strike and
spot. If not even the venue's minimum fits, nothing is proposed and the reason names the
limit and the numbers (so a $1K strategy can buy 0.1 of a cheap Deribit BTC call but never
sells a $60K-strike put it could not pay for).

Calls are only ever written against coins, never "covered by cash". ``covered_calls`` and
``protective_puts`` hold the underlying in the strategy's spot leg: with no coins they buy
them together with the option (a buy-write, a married put: ``ProposedTrade.spot_coins``,
booked all or nothing with the option) from ``min(cash, capital * spot_fraction)``; with
coins they write or hedge exactly the coins held. The wheel's calls follow its assignment.

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
from options.risk import OptionsRiskLimits, greek_limit, max_quantity, net_greek
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
    portfolio_value: float | None = None  # the book's value, USD (None: the capital)
    limits: OptionsRiskLimits | None = None  # size within these greek limits (None: budget only)


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


# Coins of a spot leg are budgeted at spot x this, so the fee never leaves the cash short.
_FEE_MARGIN = 1.01


def decide(strategy_name: str, ctx: OptionsContext, positions: Sequence[OptionPosition],
           params: Mapping[str, Any] | None = None) -> list[ProposedTrade]:
    """Exits for the open positions, then the strategy's entries, as proposals to be scored."""
    return decide_with_reason(strategy_name, ctx, positions, params)[0]


def decide_with_reason(strategy_name: str, ctx: OptionsContext, positions: Sequence[OptionPosition],
                       params: Mapping[str, Any] | None = None) -> tuple[list[ProposedTrade], str | None]:
    """(exits + entries, why the strategy proposes no entry or None when it proposes one)."""
    p = strategy_params(strategy_name, params)
    if not (math.isfinite(ctx.spot) and ctx.spot > 0):
        raise StrategyError(f"{ctx.strategy_id}: ctx.spot must be a finite number > 0, got {ctx.spot!r}")
    exits = _exits(ctx, positions, p)
    closing = {t.contract for t in exits}
    still_open = [pos for pos in positions if pos.contract not in closing]
    entries = _RULES[strategy_name](ctx, still_open, p)
    if isinstance(entries, str):
        return exits, entries
    return exits + entries, None


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


def _budget(ctx: OptionsContext, p: Mapping[str, float], fraction: str = "alloc_fraction") -> float:
    return max(min(ctx.cash, ctx.capital * p[fraction]), 0.0)


def _round_down(quantity: float, spec: UnderlyingSpec) -> float:
    """Quantity on the venue's step (rounded down), or 0 below the venue minimum."""
    if not math.isfinite(quantity):
        raise StrategyError(f"quantity: no finite size bounds this structure ({quantity!r})")
    steps = math.floor(quantity / spec.quantity_step + 1e-9)
    rounded = round(steps * spec.quantity_step, 10)
    return rounded if rounded >= spec.min_quantity else 0.0


@dataclass(frozen=True, slots=True)
class _Bound:
    """One upper bound on a structure's size, in contracts, and how to say it binds at the minimum."""

    quantity: float
    why_not_minimum: str  # completes "venue minimum: N contracts (C coins) of X ..."


def _size(ctx: OptionsContext, positions: Sequence[OptionPosition], legs: Sequence[tuple[int, int]],
          bounds: Sequence[_Bound], spot_coins_per_contract: float = 0.0) -> float | str:
    """The largest venue-valid quantity (contracts per leg) within every bound and the greek
    limits, or why not even the venue minimum fits, naming the limit and the numbers."""
    spec = ctx.venue.underlying(ctx.underlying)
    chain = ctx.chain
    per_unit = {greek: sum(side * chain.greeks(row).get(greek, 0.0) for row, side in legs) * spec.multiplier
                for greek in ("delta", "vega")}
    per_unit["delta"] += spot_coins_per_contract
    bound = min(bounds, key=lambda b: b.quantity, default=_Bound(math.inf, ""))
    if ctx.limits is not None:
        value = ctx.capital if ctx.portfolio_value is None else ctx.portfolio_value
        limit = max_quantity(ctx.limits, positions, per_unit, value, spot=ctx.spot, spot_coins=ctx.spot_quantity)
        if limit.quantity < bound.quantity:
            bound = _Bound(limit.quantity, _limit_text(ctx, positions, per_unit, value, spec, limit.greek))
    quantity = _round_down(bound.quantity, spec)
    if quantity > 0:
        return quantity
    names = "+".join(chain.contract(row).name for row, _ in legs)
    return (f"venue minimum: {spec.min_quantity:g} contract(s) ({spec.min_quantity * spec.multiplier:g} "
            f"{ctx.underlying}) of {names} {bound.why_not_minimum}")


def _limit_text(ctx: OptionsContext, positions: Sequence[OptionPosition], per_unit: Mapping[str, float],
                value: float, spec: UnderlyingSpec, greek: str | None) -> str:
    if greek is None or greek == "value" or ctx.limits is None:
        return f"cannot be risked at portfolio value {value:,.2f}"
    scale, limit = greek_limit(ctx.limits, greek, ctx.spot)
    net = net_greek(positions, greek, ctx.spot_quantity)
    after = abs(net + spec.min_quantity * per_unit[greek]) * scale / value
    return f"would put net {greek} at {after:.3f} x value > risk limit {limit:g}"


def _budget_bound(budget: float, usd_per_contract: float, label: str, spec: UnderlyingSpec) -> _Bound:
    """Contracts ``budget`` pays for at ``usd_per_contract``."""
    quantity = budget / usd_per_contract if usd_per_contract > 0 else math.inf
    return _Bound(quantity, f"needs ${usd_per_contract * spec.min_quantity:,.2f} > {label} ${budget:,.2f}")


def _pick(chain: OptionChain, ts_event: int, target_dte: float, strike: float, is_call: bool) -> int | None:
    """Row of the listed contract nearest (target_dte, strike)."""
    if chain.expiry_ts.size == 0:
        return None
    expiry = closest_expiry(chain.expiries(), ts_event, target_dte)
    listed = chain.strike[chain.expiry_ts == expiry]
    contract = OptionContract(chain.venue, chain.underlying, expiry, closest_strike(listed, strike), is_call,
                              chain.multiplier)
    return chain.lookup(contract)


def _no_contract(ctx: OptionsContext, what: str) -> str:
    return f"no chain: no listed {what} for {ctx.underlying} on {ctx.venue.name} at {ctx.ts_event}"


def _open(ctx: OptionsContext, row: int, side: int, quantity: float, reason: str, group: str = "",
          spot_coins: float = 0.0) -> ProposedTrade:
    chain = ctx.chain
    return ProposedTrade("open", chain.contract(row), side, quantity, float(chain.mark[row]), chain.greeks(row),
                         reason, group=group, spot_coins=spot_coins)


def _held(positions: Sequence[OptionPosition], is_call: bool | None, long: bool) -> OptionPosition | None:
    return next((pos for pos in positions if (pos.quantity > 0) == long
                 and (is_call is None or pos.contract.is_call == is_call)), None)


def _holding(pos: OptionPosition) -> str:
    return f"holding: {pos.contract.name} x {pos.quantity:+g} still open"


def _cost_label(p: Mapping[str, float], fraction: str = "alloc_fraction") -> str:
    return f"budget min(cash, capital x {fraction} {p[fraction]:g})"


def _buy_single(ctx: OptionsContext, positions: Sequence[OptionPosition], p: Mapping[str, float], strike: float,
                is_call: bool, reason: str) -> list[ProposedTrade] | str:
    row = _pick(ctx.chain, ctx.ts_event, p["target_dte"], strike, is_call)
    if row is None:
        return _no_contract(ctx, "call" if is_call else "put")
    spec = ctx.venue.underlying(ctx.underlying)
    cost = float(ctx.chain.mark[row]) * spec.multiplier
    quantity = _size(ctx, positions, [(row, 1)], [_budget_bound(_budget(ctx, p), cost, _cost_label(p), spec)])
    return quantity if isinstance(quantity, str) else [_open(ctx, row, 1, quantity, reason)]


def _coins_bound(ctx: OptionsContext, spec: UnderlyingSpec) -> _Bound:
    held = ctx.spot_quantity / spec.multiplier
    return _Bound(held, f"exceeds the {ctx.spot_quantity:g} {ctx.underlying} held")


def _with_spot_leg(ctx: OptionsContext, positions: Sequence[OptionPosition], p: Mapping[str, float], row: int,
                   side: int, reason: str) -> list[ProposedTrade] | str:
    """Open ``side`` of ``row`` on coins: on the coins held if they cover the venue minimum,
    else bought with it (a buy-write, a married put) from ``spot_fraction`` of the capital."""
    spec = ctx.venue.underlying(ctx.underlying)
    premium = float(ctx.chain.mark[row]) * spec.multiplier
    bounds = [_budget_bound(_budget(ctx, p), premium, _cost_label(p), spec)] if side > 0 else []
    if ctx.spot_quantity >= spec.min_quantity * spec.multiplier:
        quantity = _size(ctx, positions, [(row, side)], [*bounds, _coins_bound(ctx, spec)])
        return quantity if isinstance(quantity, str) else [_open(ctx, row, side, quantity, reason)]
    # Coins and option together, all or nothing: per contract the coins cost spot x multiplier
    # (with 1% for fees) plus a bought option's premium.
    per_contract = spec.multiplier * ctx.spot * _FEE_MARGIN + (premium if side > 0 else 0.0)
    coin_bound = _budget_bound(_budget(ctx, p, "spot_fraction"), per_contract,
                                   _cost_label(p, "spot_fraction"), spec)
    quantity = _size(ctx, positions, [(row, side)], [*bounds, coin_bound], spot_coins_per_contract=spec.multiplier)
    if isinstance(quantity, str):
        return quantity
    coins = round(quantity * spec.multiplier, 10)
    kind = "buy-write" if side < 0 else "married put"
    return [_open(ctx, row, side, quantity, f"{reason} ({kind}: buy {coins:g} {ctx.underlying} with it)",
                  spot_coins=coins)]


def _momentum(ctx: OptionsContext, positions: Sequence[OptionPosition],
              p: Mapping[str, float]) -> list[ProposedTrade] | str:
    period = int(p["roc_period"])
    closes = np.asarray(ctx.closes, dtype=np.float64)
    if period < 1 or closes.size <= period or not closes[-1 - period] > 0:
        return f"warming up: {closes.size} closes, ROC({period}) needs {period + 1}"
    roc = (closes[-1] / closes[-1 - period] - 1.0) * 100.0
    threshold = p["roc_threshold_pct"]
    if roc > threshold:
        held = _held(positions, True, long=True)
        return _holding(held) if held else _buy_single(
            ctx, positions, p, ctx.spot, True, f"ROC({period}) {roc:+.1f}% > +{threshold:g}%: buy ATM call")
    if roc < -threshold:
        held = _held(positions, False, long=True)
        return _holding(held) if held else _buy_single(
            ctx, positions, p, ctx.spot, False, f"ROC({period}) {roc:+.1f}% < -{threshold:g}%: buy ATM put")
    return f"no signal: ROC({period}) {roc:+.1f}% within +-{threshold:g}%"


def _vol_mean_reversion(ctx: OptionsContext, positions: Sequence[OptionPosition],
                        p: Mapping[str, float]) -> list[ProposedTrade] | str:
    rank = iv_rank(ctx.iv_history, ctx.atm_iv)
    spec = ctx.venue.underlying(ctx.underlying)
    if rank > p["high_rank"]:
        held = _held(positions, None, long=False)
        if held:
            return _holding(held)
        put = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 - p["strangle_otm"]), False)
        call = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 + p["strangle_otm"]), True)
        if put is None or call is None:
            return _no_contract(ctx, "strangle")
        # One side at most ends in the money: secure the larger of put strike and spot notional.
        collateral = max(float(ctx.chain.strike[put]), ctx.spot) * spec.multiplier
        quantity = _size(ctx, positions, [(put, -1), (call, -1)],
                         [_budget_bound(_budget(ctx, p), collateral, _cost_label(p), spec)])
        if isinstance(quantity, str):
            return quantity
        reason = f"IV rank {rank:.0f} > {p['high_rank']:g}: sell strangle"
        return [_open(ctx, put, -1, quantity, reason, "strangle"), _open(ctx, call, -1, quantity, reason, "strangle")]
    if rank < p["low_rank"]:
        held = _held(positions, None, long=True)
        if held:
            return _holding(held)
        call = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot, True)
        put = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot, False)
        if put is None or call is None:
            return _no_contract(ctx, "straddle")
        cost = (float(ctx.chain.mark[call]) + float(ctx.chain.mark[put])) * spec.multiplier
        quantity = _size(ctx, positions, [(call, 1), (put, 1)],
                         [_budget_bound(_budget(ctx, p), cost, _cost_label(p), spec)])
        if isinstance(quantity, str):
            return quantity
        reason = f"IV rank {rank:.0f} < {p['low_rank']:g}: buy straddle"
        return [_open(ctx, call, 1, quantity, reason, "straddle"), _open(ctx, put, 1, quantity, reason, "straddle")]
    return f"no signal: IV rank {rank:.0f} between {p['low_rank']:g} and {p['high_rank']:g}"


def _protective_puts(ctx: OptionsContext, positions: Sequence[OptionPosition],
                     p: Mapping[str, float]) -> list[ProposedTrade] | str:
    held = _held(positions, False, long=True)
    if held:
        return _holding(held)
    row = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 - p["otm"]), False)
    if row is None:
        return _no_contract(ctx, "put")
    return _with_spot_leg(ctx, positions, p, row, 1, f"no put held: buy {p['otm']:.0%} OTM protective put")


def _covered_calls(ctx: OptionsContext, positions: Sequence[OptionPosition],
                   p: Mapping[str, float]) -> list[ProposedTrade] | str:
    held = _held(positions, True, long=False)
    if held:
        return _holding(held)
    row = _pick(ctx.chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 + p["otm"]), True)
    if row is None:
        return _no_contract(ctx, "call")
    return _with_spot_leg(ctx, positions, p, row, -1, f"no call written: sell {p['otm']:.0%} OTM covered call")


def _wheel(ctx: OptionsContext, positions: Sequence[OptionPosition],
           p: Mapping[str, float]) -> list[ProposedTrade] | str:
    held = _held(positions, None, long=False)
    if held:
        return _holding(held)
    spec = ctx.venue.underlying(ctx.underlying)
    chain = ctx.chain
    if chain.expiry_ts.size == 0:
        return _no_contract(ctx, "contract")
    if ctx.spot_quantity >= spec.min_quantity * spec.multiplier:
        floor = max(ctx.spot_cost_basis, ctx.spot * (1 + p["call_otm"]))
        expiry = closest_expiry(chain.expiries(), ctx.ts_event, p["target_dte"])
        above = np.flatnonzero((chain.expiry_ts == expiry) & chain.is_call & (chain.strike >= floor))
        if above.size == 0:
            return _no_contract(ctx, f"call at or above the cost basis {floor:,.0f}")
        call_row = int(above[np.argmin(chain.strike[above])])
        quantity = _size(ctx, positions, [(call_row, -1)], [_coins_bound(ctx, spec)])
        if isinstance(quantity, str):
            return quantity
        return [_open(ctx, call_row, -1, quantity,
                      f"assigned {ctx.spot_quantity:g} coins at {ctx.spot_cost_basis:.0f}: "
                      f"sell call at {chain.strike[call_row]:.0f} >= cost basis")]
    row = _pick(chain, ctx.ts_event, p["target_dte"], ctx.spot * (1 - p["put_otm"]), False)
    if row is None:
        return _no_contract(ctx, "put")
    strike, premium = float(chain.strike[row]), float(chain.mark[row])
    premium_pct = premium / strike * 100.0
    if premium_pct < p["min_premium_pct"]:
        return f"no signal: put premium {premium_pct:.2f}% of strike < min_premium_pct {p['min_premium_pct']:g}%"
    quantity = _size(ctx, positions, [(row, -1)],
                     [_budget_bound(_budget(ctx, p), strike * spec.multiplier, _cost_label(p), spec)])
    if isinstance(quantity, str):
        return quantity
    reason = f"sell {p['put_otm']:.0%} OTM cash-secured put: premium {premium_pct:.1f}% of strike"
    return [_open(ctx, row, -1, quantity, reason)]


_RULES: dict[str, Callable[[OptionsContext, Sequence[OptionPosition], Mapping[str, float]],
                            list[ProposedTrade] | str]] = {
    "momentum_options": _momentum,
    "vol_mean_reversion": _vol_mean_reversion,
    "protective_puts": _protective_puts,
    "covered_calls": _covered_calls,
    "wheel": _wheel,
}
