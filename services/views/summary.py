"""The cycle summary of the seed: per category (Spot, Deribit, IBKR) and in total, starting
balance -> current balance, a line per strategy, then the trades of the cycle.

One formatter serves the signal engine's log, ``make once`` and Discord (``markdown=True``
bolds the headers as the seed's Discord messages do).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

CATEGORY_TITLES = {"spot": "Spot", "deribit": "Deribit", "ibkr": "IBKR"}


def _shown(x: float, digits: int) -> float:
    """``x`` as it will print: -0.004 shows as 0.00, never as -0.00."""
    return round(x, digits) + 0.0


def money(x: float) -> str:
    x = _shown(x, 2)
    return f"-${abs(x):,.2f}" if x < 0 else f"${x:,.2f}"


def signed_money(x: float) -> str:
    x = _shown(x, 2)
    return f"-${abs(x):,.2f}" if x < 0 else f"+${x:,.2f}"


def signed_pct(x: float, digits: int = 2, money_pnl: float | None = None) -> str:
    """``x`` percent with its sign; beside a money P&L the sign follows the money, so a loss too
    small to move the percent shows as -0.00%, never +0.00%."""
    shown = _shown(x, digits)
    negative = shown < 0 or (shown == 0 and money_pnl is not None and _shown(money_pnl, 2) < 0)
    return f"{'-' if negative else '+'}{abs(shown):.{digits}f}%"


def balance_header(bucket: Mapping[str, float], markdown: bool) -> str:
    text = f"{money(bucket['initial'])} → {money(bucket['value'])}"
    if markdown:
        text = f"**{text}**"
    return f"{text} ({signed_money(bucket['pnl'])} / {signed_pct(bucket['pnl_pct'], money_pnl=bucket['pnl'])})"


def trade_line(fill: Mapping[str, Any]) -> str:
    return (f"{fill['strategy_id']}: {fill['side'].upper()} {fill['quantity']:.6g} {fill['instrument']} "
            f"@ {money(fill['price'])} (fee {money(fill['fee'])})")


def format_summary(snapshot: Mapping[str, Any], trades: Iterable[Mapping[str, Any]] = (),
                   markdown: bool = False, title: str | None = None,
                   categories: Iterable[str] | None = None) -> str:
    """The seed's summary text for a portfolio snapshot (see trading.portfolio.Portfolio.snapshot):
    every category, or only ``categories``, then the total of all."""
    lines: list[str] = [title] if title else []
    totals = snapshot["totals"]
    views = sorted(snapshot["strategies"].values(), key=lambda v: v["id"])
    shown = set(CATEGORY_TITLES if categories is None else categories)
    for category, name in CATEGORY_TITLES.items():
        members = [v for v in views if v["category"] == category and category in shown]
        if not members:
            continue
        lines.append(f"{name}: {balance_header(totals[category], markdown)}")
        for view in members:
            pct = view["pnl_pct"]
            lines.append(f"• {view['id']} ({'n/a' if pct is None else signed_pct(pct, 1)})")
    lines.append(f"Total: {balance_header(totals['total'], markdown)}")
    trades = list(trades)
    if trades:
        lines.append(f"Trades ({len(trades)}):")
        lines += [f"• {trade_line(t)}" for t in trades]
    return "\n".join(lines)


def cycle_log_fields(totals: Mapping[str, Mapping[str, float]] | None, trades: int) -> dict[str, Any]:
    """The per-cycle summary as log fields: each category's value and P&L in USD (cents), the
    total, and the trades booked since the last line; without a portfolio snapshot, trades only."""
    fields: dict[str, Any] = {}
    for category in (*CATEGORY_TITLES, "total"):
        bucket = (totals or {}).get(category)
        if isinstance(bucket, Mapping) and "value" in bucket and "pnl" in bucket:
            fields[f"{category}_value"] = round(float(bucket["value"]), 2)
            fields[f"{category}_pnl"] = round(float(bucket["pnl"]), 2)
    fields["trades"] = trades
    return fields
