"""What the portfolio -> gateway stream costs per second at 34 and at 1,000 strategies: the
old full ``portfolio.snapshot`` (every book's view, each second) against the clone pattern's
numbered ``portfolio.delta`` (the marks and the changed books) plus the small
``portfolio.totals``. Pure, in one process: a ``Portfolio`` of N spot books, every book holding
a position, is marked each simulated second (three symbols move) and FILLS_PER_SECOND books
trade; each second's messages are built and msgpack-encoded as the bus sends them. The
gateway's side (``apply_delta``: read the changed records back) is timed too. Medians over
SECONDS seconds; CPU is this process's time.

Run: ``python -m bench.bench_clone`` (or ``python -m bench.run_all --only bench_clone``).
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable

import msgpack

from common.model import SpotOrder
from services.views.status import apply_delta, clone_from_snapshot
from trading.portfolio import Portfolio, StrategyMeta
from trading.risk import RiskLimits

T0 = 1_767_225_600_000
HOUR = 3_600_000
SYMBOLS = {"BTC/USDT": 90_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0}
FILLS_PER_SECOND = 3
SECONDS = 30
SIZES = (34, 1_000)


def _portfolio(n: int) -> Portfolio:
    symbols = list(SYMBOLS)
    metas = [StrategyMeta(f"s{i:04d}", "spot", "spot", 1_000.0, RiskLimits(max_drawdown_pct=90.0), "momentum",
                          (symbols[i % 3],), HOUR) for i in range(n)]
    p = Portfolio(metas, fee_rate=0.001, slippage_rate=0.0005)
    p.reconcile(T0)
    p.mark(SYMBOLS, T0)
    for meta in metas:
        _trade(p, meta.strategy_id, meta.symbols[0], 1, T0)
    p.take_changed()
    return p


def _trade(p: Portfolio, sid: str, symbol: str, signal: int, ts: int) -> None:
    p.record_tick(symbol, p.prices[symbol], ts)
    decision = p.decide_spot(SpotOrder(f"{sid}:{ts}", sid, symbol, signal, p.prices[symbol], ts))
    if decision.fill is not None:
        p.commit([decision.fill])


def _timed(build: Callable[[], Any]) -> tuple[float, int]:
    start = time.process_time()
    size = len(msgpack.packb(build(), use_bin_type=True))
    return (time.process_time() - start) * 1000.0, size


def measure(n: int) -> dict[str, float]:
    p = _portfolio(n)
    sids = sorted(p.books)
    clone = clone_from_snapshot({"stream": "b", "seq": 0, **p.records_message(p.books)})
    old_ms, old_bytes, new_ms, new_bytes, apply_ms = [], [], [], [], []
    for second in range(1, SECONDS + 1):
        ts = T0 + second * 1_000
        p.mark({s: price * (1.0 + 0.001 * ((second % 5) - 2)) for s, price in SYMBOLS.items()}, ts)
        for k in range(FILLS_PER_SECOND):
            sid = sids[(second * FILLS_PER_SECOND + k) % n]
            book = p.books[sid]
            symbol = p.metas[sid].symbols[0]
            _trade(p, sid, symbol, -1 if book.positions else 1, ts)
        ms, size = _timed(p.snapshot)
        old_ms.append(ms)
        old_bytes.append(size)
        start = time.process_time()
        delta = {"stream": "b", "seq": second, **p.records_message(p.take_changed())}
        size = len(msgpack.packb(delta, use_bin_type=True))
        size += len(msgpack.packb({"market_ts": p.market_ts, "journal_seq": p.journal_seq, "totals": p.totals()}))
        new_ms.append((time.process_time() - start) * 1000.0)
        new_bytes.append(size)
        start = time.process_time()
        clone = apply_delta(clone, msgpack.unpackb(msgpack.packb(delta, use_bin_type=True), raw=False))
        apply_ms.append((time.process_time() - start) * 1000.0)
    full = len(msgpack.packb({"stream": "b", "seq": 0, **p.records_message(p.books)}, use_bin_type=True))
    return {"old_bytes": statistics.median(old_bytes), "old_ms": statistics.median(old_ms),
            "new_bytes": statistics.median(new_bytes), "new_ms": statistics.median(new_ms),
            "apply_ms": statistics.median(apply_ms), "book_snapshot_bytes": full}


def run() -> dict[str, Any]:
    return {str(n): measure(n) for n in SIZES}


def report(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows for RESULTS.md; the target: at 1,000 books a second's delta + totals stays within
    twice its size at 34 books (it follows the trading, not the strategy count)."""
    rows = []
    for n, r in result.items():
        rows += [(f"{int(n):,} books: full snapshot each second (bytes, CPU)",
                  f"{r['old_bytes']:,.0f} B, {r['old_ms']:.1f} ms", "", ""),
                 (f"{int(n):,} books: delta + totals each second (bytes, CPU)",
                  f"{r['new_bytes']:,.0f} B, {r['new_ms']:.1f} ms", "", ""),
                 (f"{int(n):,} books: gateway applies a delta / book_snapshot on join or gap",
                  f"{r['apply_ms']:.1f} ms / {r['book_snapshot_bytes']:,} B", "", "")]
    fewest, most = min(result, key=int), max(result, key=int)
    small, large = result[fewest]["new_bytes"], result[most]["new_bytes"]
    rows.append((f"delta bytes/s at {int(most):,} books vs {int(fewest):,} books", f"{large / small:.2f}x", "<= 2x",
                 "PASS" if large <= 2 * small else "FAIL"))
    return rows


def main() -> int:
    for row in report(run()):
        print(" | ".join(row))
    print(f"({FILLS_PER_SECOND} fills a second, every book holding a position, three symbols marked each second; "
          f"medians of {SECONDS} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
