"""The books of every strategy, with the rules that move them: fills, marks and risk.

Pure: the portfolio service wraps it with the state file, the journal and sockets, and the
backtester drives the very same object bar by bar, so both make the same trades. Every
change is two-step (decide, then commit), so the service can journal a fill in between.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from common.ledger import (
    OrderDecision, StrategyBook, apply_fill, book_from_dict, book_to_dict, closes_a_trade,
    decide_spot_order, liquidation_orders, new_book, portfolio_value, record_no_fill,
)
from common.model import Fill, RecordError, SpotOrder
from common.risk import RiskLimits, entry_block_reason, risk_summary, update_on_mark, update_on_trade_closed
from common.status import category_totals
from options.book import (OptionOrder, OptionOrderDecision, apply_option_fill, decide_option_order,
                          mark_option_positions, option_value, settle_expired)
from options.scoring import EXECUTE_THRESHOLD, MAX_POSITIONS

if TYPE_CHECKING:
    from common.config import Config

STATE_VERSION = 1
@dataclass(frozen=True, slots=True)
class StrategyMeta:
    """What the portfolio needs to know of a configured strategy."""

    strategy_id: str
    kind: str  # "spot" | "options"
    category: str  # "spot" | "deribit" | "ibkr"
    capital: float
    limits: RiskLimits
    strategy: str = ""  # the strategy's name; "wheel" books take assignment of their short puts


@dataclass(frozen=True, slots=True)
class Reconciliation:
    created: tuple[str, ...]
    pruned: tuple[str, ...]
    kept: tuple[str, ...]


def strategy_metas(cfg: "Config") -> list[StrategyMeta]:
    """The portfolio's view of each configured strategy: category, capital and risk limits."""
    metas = []
    for sc in cfg.strategies:
        category = "spot" if sc.type == "spot" else sc.venue
        limits = RiskLimits(
            max_drawdown_pct=sc.max_drawdown_pct,
            max_position_pct=sc.risk.max_position_pct,
            max_consecutive_losses=sc.risk.max_consecutive_losses,
            circuit_breaker_ms=int(sc.risk.circuit_breaker_hours * 3_600_000),
            daily_loss_pct=sc.risk.daily_loss_pct,
        )
        metas.append(StrategyMeta(sc.id, sc.type, category, sc.capital, limits, sc.strategy))
    return metas


class Portfolio:
    """All strategy books plus the last known prices; ``next_seq`` numbers the journal."""

    def __init__(self, metas: Iterable[StrategyMeta], *, fee_rate: float, slippage_rate: float,
                 max_option_positions: int = MAX_POSITIONS, min_option_score: float = EXECUTE_THRESHOLD,
                 underlying_quote: str = "USDT") -> None:
        self.metas = {m.strategy_id: m for m in metas}
        self.fee_rate = fee_rate
        self.slippage_rate = slippage_rate
        self.max_option_positions = max_option_positions
        self.min_option_score = min_option_score
        self.underlying_quote = underlying_quote
        self.books: dict[str, StrategyBook] = {}
        self.prices: dict[str, float] = {}
        self.market_ts = 0
        self.journal_seq = 0

    # --- state ---------------------------------------------------------------------------
    def reconcile(self, ts: int) -> Reconciliation:
        """Create books for strategies new in config, drop those no longer in it, keep the rest."""
        pruned = tuple(sorted(set(self.books) - set(self.metas)))
        for sid in pruned:
            del self.books[sid]
        created = []
        for sid, meta in self.metas.items():
            if sid not in self.books:
                self.books[sid] = new_book(sid, meta.kind, meta.capital, ts)
                created.append(sid)
        kept = tuple(sorted(set(self.books) - set(created)))
        return Reconciliation(tuple(created), pruned, kept)

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "journal_seq": self.journal_seq,
            "market_ts": self.market_ts,
            "prices": dict(self.prices),
            "strategies": {sid: book_to_dict(book) for sid, book in self.books.items()},
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Adopt a parsed state.json; RecordError names the bad key path."""
        strategies = state.get("strategies")
        if not isinstance(strategies, dict):
            raise RecordError("state.strategies: expected an object of strategy books")
        seq = state.get("journal_seq", 0)
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise RecordError(f"state.journal_seq: expected an integer >= 0, got {seq!r}")
        self.books = {sid: book_from_dict(b, f"strategies.{sid}") for sid, b in strategies.items()}
        self.journal_seq = seq
        market_ts = state.get("market_ts", 0)
        self.market_ts = market_ts if isinstance(market_ts, int) else 0
        prices = state.get("prices", {})
        if isinstance(prices, dict):
            self.prices = {s: float(p) for s, p in prices.items()
                           if isinstance(p, (int, float)) and math.isfinite(p) and p > 0}

    # --- orders and fills ----------------------------------------------------------------
    def decide_spot(self, order: SpotOrder) -> OrderDecision:
        book = self.books.get(order.strategy_id)
        if book is None:
            raise KeyError(order.strategy_id)
        meta = self.metas[order.strategy_id]
        return decide_spot_order(
            book, order, fee_rate=self.fee_rate, slippage_rate=self.slippage_rate,
            max_position_pct=meta.limits.max_position_pct, risk_limits=meta.limits,
            seq=self.journal_seq + 1,
        )

    def decide_options(self, order: OptionOrder) -> OptionOrderDecision:
        """All legs of an option order or none, numbered after the journal."""
        book = self.books.get(order.strategy_id)
        if book is None:
            raise KeyError(order.strategy_id)
        opens = any(leg.action == "open" for leg in order.legs)
        return decide_option_order(
            book, order, fee_rate=self.fee_rate, seq0=self.journal_seq + 1,
            max_positions=self.max_option_positions, min_score=self.min_option_score,
            entry_block=entry_block_reason(book.risk, order.ts_event) if opens else None,
            quote=self.underlying_quote,
        )

    def commit(self, fills: Iterable[Fill]) -> list[str]:
        """Book journaled fills; returns risk events (circuit breaker trips) for the log."""
        events: list[str] = []
        for fill in fills:
            book = self.books.get(fill.strategy_id)
            if fill.seq > self.journal_seq:
                self.journal_seq = fill.seq
            if book is None:  # a fill of a strategy pruned from config: history only
                continue
            apply_fill(book, fill)
            if fill.kind in ("option", "settlement"):
                apply_option_fill(book, fill)
            if closes_a_trade(fill):
                meta = self.metas.get(fill.strategy_id)
                if meta is not None:
                    events += update_on_trade_closed(book.risk, meta.limits, fill.realized_pnl, fill.ts_event)
        return events

    def record_no_fill(self, strategy_id: str, order_id: str) -> None:
        record_no_fill(self.books[strategy_id], order_id)

    # --- marks and risk --------------------------------------------------------------------
    def value_of(self, sid: str) -> float:
        """Book value at the last known prices; a position never priced yet counts at cost."""
        book = self.books[sid]
        marks = {s: p.avg_price for s, p in book.positions.items() if s not in self.prices}
        return portfolio_value(book, {**self.prices, **marks} if marks else self.prices, option_value(book))

    def spot_by_underlying(self) -> dict[str, float]:
        """Last price of each coin quoted in the options quote currency: 'BTC/USDT' -> BTC."""
        suffix = f"/{self.underlying_quote}"
        return {s[: -len(suffix)]: p for s, p in self.prices.items() if s.endswith(suffix)}

    def open_option_contracts(self) -> list[dict[str, Any]]:
        """Each contract some book holds, once, as the pricer's ``mark`` request wants it."""
        contracts = {}
        for book in self.books.values():
            for name, position in book.option_positions.items():
                contracts[name] = position["contract"]
        return list(contracts.values())

    def mark_options(self, marks: Mapping[str, Mapping[str, Any]], ts: int) -> None:
        """Write the pricer's marks (name -> {mark_usd, greeks, source}) into every book."""
        for book in self.books.values():
            if book.option_positions:
                mark_option_positions(book, marks, ts)

    def settlements(self, ts: int, first_seq: int) -> list[Fill]:
        """Settlement (and assignment) fills of every option expired by ``ts``, not yet booked."""
        holders = [(sid, book) for sid, book in self.books.items() if book.option_positions]
        if not holders:
            return []
        spot = self.spot_by_underlying()
        fills: list[Fill] = []
        for sid, book in holders:
            meta = self.metas.get(sid)
            fills += settle_expired(book, spot, ts, first_seq=first_seq + len(fills),
                                    assign_puts=meta is not None and meta.strategy == "wheel",
                                    quote=self.underlying_quote)
        return fills

    def mark(self, prices: Mapping[str, float], ts: int) -> tuple[list[str], list[Fill]]:
        """Mark every book at ``prices``; returns risk events, and the fills to journal then
        commit: settlements of options expired by ``ts`` (at these prices) and the
        liquidations a newly tripped kill switch needs."""
        for symbol, price in prices.items():
            if math.isfinite(price) and price > 0:
                self.prices[symbol] = price
        self.market_ts = max(self.market_ts, ts)
        events: list[str] = []
        liquidations = self.settlements(ts, self.journal_seq + 1)
        next_seq = self.journal_seq + 1 + len(liquidations)
        for sid, book in self.books.items():
            meta = self.metas.get(sid)
            if meta is None:
                continue
            value = self.value_of(sid)
            for event in update_on_mark(book.risk, meta.limits, value, ts):
                events.append(f"{sid}: {event}")
            if book.risk.kill_switch and book.positions:
                fills = liquidation_orders(book, self.prices, ts, fee_rate=self.fee_rate,
                                           slippage_rate=self.slippage_rate, first_seq=next_seq)
                liquidations += fills
                next_seq += len(fills)
        return events, liquidations

    # --- views -----------------------------------------------------------------------------
    def positions_view(self, sid: str, symbol: str) -> dict[str, Any]:
        """What an options strategy decides on (the ``positions`` reply): cash, capital, value,
        peak, option positions, and the coins of ``symbol`` it holds (a wheel's assignment)."""
        book = self.books.get(sid)
        if book is None:
            raise KeyError(sid)
        holding = book.positions.get(symbol)
        return {
            "strategy_id": sid, "ts": self.market_ts, "cash": book.cash,
            "capital": book.initial_capital, "portfolio_value": self.value_of(sid),
            "peak_value": book.risk.peak_value, "option_positions": list(book.option_positions.values()),
            "spot_quantity": holding.quantity if holding else 0.0,
            "spot_cost_basis": holding.avg_price if holding else 0.0,
        }

    def strategy_view(self, sid: str) -> dict[str, Any]:
        book = self.books[sid]
        meta = self.metas.get(sid)
        value = self.value_of(sid)
        positions = {}
        for symbol, p in book.positions.items():
            price = self.prices.get(symbol)
            positions[symbol] = {
                "quantity": p.quantity, "avg_price": p.avg_price, "current_price": price,
                "value": p.quantity * price if price else None,
                "unrealized_pnl": p.quantity * (price - p.avg_price) if price else None,
                "opened_ts": p.opened_ts,
            }
        pnl = value - book.initial_capital
        return {
            "id": sid,
            "type": book.kind,
            "category": meta.category if meta else ("spot" if book.kind == "spot" else "options"),
            "cash": book.cash,
            "initial_capital": book.initial_capital,
            "positions": positions,
            "option_positions": book.option_positions,
            "option_value": option_value(book),
            "trade_count": book.trade_count,
            "portfolio_value": value,
            "pnl": pnl,
            "pnl_pct": pnl / book.initial_capital * 100.0,
            "risk_state": risk_summary(book.risk, self.market_ts),
            "recent_trades": book.recent_trades[-10:],
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything /status shows, computed once here so readers never recompute it."""
        strategies = {sid: self.strategy_view(sid) for sid in self.books}
        return {
            "market_ts": self.market_ts,
            "journal_seq": self.journal_seq,
            "prices": dict(self.prices),
            "strategies": strategies,
            "totals": category_totals(strategies.values()),
        }

    def equity_point(self) -> dict[str, float]:
        return {sid: self.value_of(sid) for sid in self.books}

