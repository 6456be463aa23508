"""What the signal engine decides, without its sockets: which strategies are due and what
each one says on the newest closed bar (spot), or which option orders it sends (options).

Pure: bars come in as OHLCV, market time as int ms. The service feeds it from the bus; tests
and ``make once`` feed it directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from common.clock import next_due
from common.model import Signal, SpotOrder, spot_order_id
from common.ohlcv import OHLCV
from common.timeframes import timeframe_ms
from options.contracts import OptionPosition, ProposedTrade
from options.risk import OptionsRiskLimits, check_options_trade
from options.scoring import MAX_POSITIONS, score_trade, select_with_reasons
from options.strategies import OptionsContext, decide_with_reason
from options.venues import VenueSpec, venue_spec
from strategies.incremental import SignalCache
from strategies.registry import latest_signal
from strategies.script import ScriptSignal
from strategies.user import is_user_spec
from trading.book_view import BookView
from trading.option_book import OptionOrder, option_orders
from trading.option_inputs import OptionsMarket

BarSource = Callable[..., OHLCV]  # (symbol, timeframe[, newest n bars]) -> that history
HISTORY_BARS = 1000  # bars of each series the engine decides on (the backtester uses as many)


@dataclass(frozen=True, slots=True)
class SpotDecision:
    """The outcome of one strategy run: a signal (and an order when it says buy/sell), or why not."""

    strategy_id: str
    signal: Signal | None
    order: SpotOrder | None
    skipped: str | None = None


def stale_reason(data: OHLCV, timeframe: str, now_ts: int, label: str) -> str | None:
    """Why ``data`` must not be traded at ``now_ts``: no bars, or a newer bar should have closed."""
    if len(data) == 0:
        return f"no {label} bars yet"
    step = timeframe_ms(timeframe)
    last_close = int(data.ts[-1]) + step
    if now_ts - last_close >= step:
        return f"stale {label} data: last {timeframe} bar closed at {last_close}, market time is {now_ts}"
    return None


def evaluate_spot(strategy_id: str, strategy: str, symbol: str, timeframe: str, params: dict[str, Any],
                  bars: BarSource, now_ts: int, pair_symbol: str | None = None,
                  signals: SignalCache | None = None) -> SpotDecision:
    """Run one spot strategy on the newest closed bar; never trades on stale or missing data.

    With ``signals`` the decision comes from its incremental state (``bars`` must then take a
    third argument, the number of newest bars wanted, None for all) and only the last bar is
    read here; without it the strategy recomputes over everything ``bars`` returns. Both give
    the same decision on the same history. A user function (``"pkg.mod:fn"``) has no
    incremental form: it always recomputes over the engine's bars.
    """
    if is_user_spec(strategy):
        signals = None
    newest: Callable[[str], OHLCV] = (
        (lambda s: bars(s, timeframe, 1)) if signals is not None else (lambda s: bars(s, timeframe)))
    data = newest(symbol)
    reason = stale_reason(data, timeframe, now_ts, symbol)
    pair = None
    if reason is None and pair_symbol is not None:
        pair = newest(pair_symbol)
        reason = stale_reason(pair, timeframe, now_ts, pair_symbol)
    if reason is not None:
        return SpotDecision(strategy_id, None, None, reason)
    if signals is None:
        latest = latest_signal(strategy, data, params, pair)
    else:
        latest = signals.latest(strategy, symbol, timeframe, params, bars, pair_symbol)
    if not latest.enough_history:
        return SpotDecision(strategy_id, None, None, f"warming up: {len(bars(symbol, timeframe))} bars")
    return _spot_decision(strategy_id, strategy, symbol, timeframe, latest.signal, latest.price, latest.ts_bar,
                          now_ts, latest.indicators)


def script_decision(strategy_id: str, label: str, symbol: str, timeframe: str, answer: ScriptSignal,
                    newest: OHLCV, now_ts: int) -> SpotDecision:
    """A user script's answer as a decision on ``newest``, the engine's last bar when the script
    was started (its order id is strategy + that bar, like the built-ins'); skipped when market
    time has moved a whole bar past it since."""
    reason = stale_reason(newest, timeframe, now_ts, symbol)
    if reason is not None:
        return SpotDecision(strategy_id, None, None, reason)
    return _spot_decision(strategy_id, label, symbol, timeframe, answer.signal, answer.price, int(newest.ts[-1]),
                          now_ts, answer.indicators)


def _spot_decision(strategy_id: str, strategy: str, symbol: str, timeframe: str, signal: int, price: float,
                   ts_bar: int, now_ts: int, indicators: dict[str, float]) -> SpotDecision:
    record = Signal(strategy_id, strategy, symbol, timeframe, signal, price, ts_bar, now_ts, indicators)
    order = None
    if signal != 0:
        order = SpotOrder(spot_order_id(strategy_id, ts_bar), strategy_id, symbol, signal, price,
                          ts_bar + timeframe_ms(timeframe))
    return SpotDecision(strategy_id, record, order)


@dataclass(frozen=True, slots=True)
class OptionsDecision:
    """One options strategy run: the actions it takes (with scores) as orders, or why none."""

    strategy_id: str
    actions: list[dict[str, Any]] = field(default_factory=list)
    orders: list[OptionOrder] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # risk refusals, for the log
    skipped: str | None = None
    # Every reason a proposal was not taken, or the strategy proposed none: "no signal: ...",
    # "holding: ...", "venue minimum: ...", "score below 0.3: ...", "position cap: ...",
    # "risk limit: ...", "no chain: ..." (the kind before the first colon).
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, str]:
        """The last decision as /status and the backtest show it: what happened and why."""
        if self.skipped is not None:
            return {"decision": "skipped", "reason": self.skipped}
        if self.actions:
            done = "; ".join(dict.fromkeys(f"{a['action']} {a['contract']}: {a['reason']}" for a in self.actions))
            return {"decision": "trade", "reason": "; ".join([done, *self.reasons])}
        return {"decision": "no trade", "reason": "; ".join(self.reasons) or "nothing proposed"}


def reason_kind(reason: str) -> str:
    """The kind of a reason string ("venue minimum", "risk limit", ...): its text before the first colon."""
    return reason.split(":", 1)[0].strip()


def spot_summary(decision: SpotDecision) -> dict[str, str]:
    """A spot strategy's last decision: buy, sell or hold on its bar, or why it was skipped."""
    if decision.signal is None:
        return {"decision": "skipped", "reason": decision.skipped or "no signal"}
    word = {1: "buy", -1: "sell"}.get(decision.signal.signal, "hold")
    return {"decision": word, "reason": f"{decision.signal.strategy} says {word} at {decision.signal.price:g}"}


def options_params(strategy: str, params: Mapping[str, Any], theta_harvest: Any | None) -> dict[str, Any]:
    """Strategy params with the config's theta-harvest rules as exits (explicit params win).

    The wheel keeps its shorts to expiry (assignment is its point), so it never takes the
    close-before-expiry rule; the default config also gives it take_profit_pct 1000 (a
    short never keeps more than 100% of its premium), so its puts run to expiry and assignment.
    """
    merged: dict[str, Any] = {}
    if theta_harvest is not None and theta_harvest.enabled:
        merged = {"take_profit_pct": theta_harvest.profit_target_pct, "stop_loss_pct": theta_harvest.stop_loss_pct}
        if strategy != "wheel":
            merged["close_dte"] = theta_harvest.min_dte_close
    return merged | dict(params)


@dataclass(frozen=True, slots=True)
class OptionsStrategy:
    """One options strategy as ``evaluate_options`` runs it: what it is and trades, and the
    limits its trades must meet (greeks, the venue's minimum score and position cap)."""

    strategy_id: str
    strategy: str
    venue: VenueSpec
    underlying: str
    timeframe: str
    params: Mapping[str, Any]
    limits: OptionsRiskLimits
    min_score: float
    max_positions: int = MAX_POSITIONS


def options_strategy(strategy_id: str, strategy: str, venue: str, underlying: str, timeframe: str,
                     params: Mapping[str, Any], *, min_score: float, max_positions: int = MAX_POSITIONS,
                     limits: OptionsRiskLimits | None = None, theta_harvest: Any | None = None) -> OptionsStrategy:
    """The one way the signal engine, the CLI and the backtester describe a strategy to
    ``evaluate_options``: the venue by name, params with the theta-harvest exits
    (``options_params``), the default greek limits unless given."""
    return OptionsStrategy(strategy_id, strategy, venue_spec(venue), underlying, timeframe,
                           options_params(strategy, params, theta_harvest), limits or OptionsRiskLimits(),
                           min_score, max_positions)


def _as_position(trade: ProposedTrade, ts: int) -> OptionPosition:
    return OptionPosition(trade.contract, trade.side * trade.quantity, trade.premium, ts, dict(trade.greeks))


def _action(trade: ProposedTrade, parts: Mapping[str, float]) -> dict[str, Any]:
    c = trade.contract
    return {"action": trade.action, "contract": c.name, "venue": c.venue, "side": trade.side,
            "quantity": trade.quantity, "multiplier": c.multiplier, "strike": c.strike, "expiry_ts": c.expiry_ts,
            "premium_usd": trade.premium, "premium_usd_per_contract": trade.premium * c.multiplier,
            "greeks": dict(trade.greeks), "score": trade.score, "score_parts": dict(parts),
            "reason": trade.reason, "group": trade.group, "spot_coins": trade.spot_coins}


def evaluate_options(strategy: OptionsStrategy, market: OptionsMarket, book: BookView, closes: OHLCV,
                     now_ts: int) -> OptionsDecision:
    """Decide, score, risk-check and group one options strategy's trades at its chain's time.

    ``book`` is the strategy's book (the portfolio's ``positions`` reply); the strategy's
    ``max_positions`` caps the open positions the selection leaves, as the portfolio's own cap
    does. Never trades on stale bars or a chain older than one bar.
    """
    chain = market.chain(strategy.underlying, strategy.venue.name)
    iv = market.iv[strategy.underlying]
    reason = stale_reason(closes, strategy.timeframe, now_ts, f"{strategy.underlying} {strategy.timeframe}")
    if reason is None and now_ts - chain.ts >= timeframe_ms(strategy.timeframe):
        reason = f"stale chain: priced at {chain.ts}, market time is {now_ts}"
    if reason is not None:
        return OptionsDecision(strategy.strategy_id, skipped=reason)
    positions = book.positions(strategy.venue.name, strategy.underlying)
    spot_coins = book.spot_quantity
    value = book.portfolio_value
    limits = strategy.limits
    ctx = OptionsContext(
        strategy_id=strategy.strategy_id, underlying=strategy.underlying, venue=strategy.venue, ts_event=chain.ts,
        spot=chain.spot, closes=np.asarray(closes.close, dtype=np.float64), atm_iv=iv.atm_iv,
        iv_history=iv.history, chain=chain, capital=book.capital, cash=book.cash, spot_quantity=spot_coins,
        spot_cost_basis=book.spot_cost_basis, portfolio_value=value, limits=limits)
    proposals, idle = decide_with_reason(strategy.strategy, ctx, positions, strategy.params)
    selected, reasons = select_with_reasons(proposals, positions, chain.spot, max_positions=strategy.max_positions,
                                            min_score=strategy.min_score)
    if idle is not None:
        reasons.insert(0, idle)
    accepted, refused, book_now = [], [], list(positions)
    groups: dict[str, list[ProposedTrade]] = {}
    for trade in selected:
        groups.setdefault(trade.group or f"{trade.action}-{trade.contract.name}", []).append(trade)
    for legs in groups.values():
        # A structure is judged whole: each leg against the book holding the structure's other legs
        # (and its coins), so a delta-neutral straddle is not refused for its call leg alone.
        opened = [_as_position(leg, chain.ts) for leg in legs if leg.action == "open"]
        coins = sum(leg.spot_coins for leg in legs)
        verdicts = [check_options_trade(limits, book_now + [p for p in opened if p.contract != leg.contract], leg,
                                        value, spot=chain.spot, peak_value=book.peak_value,
                                        spot_coins=spot_coins + coins - leg.spot_coins) for leg in legs]
        failed = [f"risk limit: {leg.action} {leg.contract.name}: {why.removeprefix('risk limit: ')}"
                  for leg, (ok, why) in zip(legs, verdicts) if not ok]
        if failed:
            refused += failed
            continue
        accepted += legs
        closed = {leg.contract for leg in legs if leg.action == "close"}
        book_now = [p for p in book_now if p.contract not in closed] + opened
        spot_coins += coins
    parts = [score_trade(t, positions, chain.spot).parts for t in accepted]
    return OptionsDecision(strategy.strategy_id, [_action(t, p) for t, p in zip(accepted, parts)],
                           option_orders(strategy.strategy_id, chain.ts, chain.spot, accepted, parts), refused,
                           reasons=reasons + refused)


class Schedule:
    """Per-strategy due times on a grid of each strategy's interval, in market time."""

    def __init__(self, intervals_s: dict[str, float]) -> None:
        self.interval_ms = {sid: int(seconds * 1000) for sid, seconds in intervals_s.items()}
        self.due_at = {sid: 0 for sid in intervals_s}

    def due(self, now_ts: int) -> list[str]:
        """Strategies due at ``now_ts``; each is rescheduled to its next grid point."""
        ready = [sid for sid, at in self.due_at.items() if now_ts >= at]
        for sid in ready:
            self.due_at[sid] = next_due(now_ts, self.interval_ms[sid])
        return ready
