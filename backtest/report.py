"""Backtest reports a person opens: metrics JSON, trade and fill CSVs, a PNG and one
self-contained HTML page (the chart inline as base64 PNG, no script, no CDN).

The chart has three panels: price with buy/sell markers, equity, drawdown. The page adds the
headline metrics, a monthly-returns table (year x month, coloured by sign) and the trade list.
matplotlib is imported inside ``render_chart`` with the Agg backend, so nothing here needs a
display and importing the module stays cheap.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from backtest.metrics import drawdown_curve, monthly_returns, round_trips
from common.model import Fill
from common.timeframes import timeframe_ms
from trading.risk import iso_utc

MAX_PLOT_POINTS = 4000
MAX_HTML_TRADES = 500
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class ReportData:
    """What a report shows; spot and options backtests both reduce to this."""

    title: str
    close_ts: np.ndarray  # bar close times, ms
    price: np.ndarray  # the traded symbol's (or the underlying's) close
    equity: np.ndarray
    capital: float
    metrics: dict[str, Any]
    fills: Sequence[Fill]
    trades: list[dict[str, Any]] = field(default_factory=list)
    price_label: str = "price"


def spot_report_data(result: Any) -> ReportData:
    """A spot ``BacktestResult`` as report data."""
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    return ReportData(
        title=f"{result.strategy_id}: {result.strategy}({params}) on {result.symbol} {result.timeframe}",
        close_ts=result.data.ts + timeframe_ms(result.timeframe),
        price=result.data.close, equity=result.equity, capital=result.capital, metrics=result.metrics,
        fills=result.fills, trades=round_trips(result.fills), price_label=result.symbol,
    )


def _plot_rows(n: int) -> np.ndarray:
    return np.arange(n) if n <= MAX_PLOT_POINTS else np.unique(np.linspace(0, n - 1, MAX_PLOT_POINTS).astype(np.int64))


def render_chart(data: ReportData) -> bytes:
    """The three-panel chart as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    rows = _plot_rows(data.equity.size)
    when = data.close_ts[rows].astype("datetime64[ms]")
    fig, (ax_price, ax_equity, ax_dd) = plt.subplots(3, 1, figsize=(12, 9), sharex=True,
                                                    gridspec_kw={"height_ratios": [3, 2, 1]})
    try:
        ax_price.plot(when, data.price[rows], color="#3b4a6b", linewidth=0.8, label=data.price_label)
        fill_ts = np.array([f.ts_event for f in data.fills], dtype=np.int64)
        if fill_ts.size:
            at = np.clip(np.searchsorted(data.close_ts, fill_ts), 0, data.close_ts.size - 1)
            marker_price = data.price[at]
            buys = np.array([f.side == "buy" for f in data.fills])
            for mask, colour, shape, label in ((buys, "#1a9850", "^", "buy"), (~buys, "#d73027", "v", "sell")):
                if mask.any():
                    ax_price.scatter(fill_ts[mask].astype("datetime64[ms]"), marker_price[mask], marker=shape,
                                     color=colour, s=28, zorder=3, label=label)
        ax_price.set_ylabel(data.price_label)
        ax_price.legend(loc="upper left")
        ax_price.set_title(data.title)
        ax_equity.plot(when, data.equity[rows], color="#2166ac", linewidth=1.0)
        ax_equity.axhline(data.capital, color="#999999", linewidth=0.8, linestyle="--")
        ax_equity.set_ylabel("equity (USD)")
        drawdown = -drawdown_curve(data.equity, data.capital)[rows] * 100.0
        ax_dd.fill_between(when, drawdown, 0.0, color="#f46d43", alpha=0.6)
        ax_dd.set_ylabel("drawdown %")
        ax_dd.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax_dd.xaxis.get_major_locator()))
        for ax in (ax_price, ax_equity, ax_dd):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _shown(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{value:,.2f}"
    if isinstance(value, list):  # e.g. an options strategy's reasons, one per line
        return "<br>".join(html.escape(str(v)) for v in value) or "–"
    return html.escape(str(value))


def _monthly_table(data: ReportData) -> str:
    table: dict[int, dict[int, float]] = {}
    for year, month, pct in monthly_returns(data.equity, data.close_ts, data.capital):
        table.setdefault(year, {})[month] = pct
    head = "".join(f"<th>{m}</th>" for m in MONTHS)
    body = []
    for year in sorted(table):
        cells = []
        for month in range(1, 13):
            pct = table[year].get(month)
            if pct is None:
                cells.append("<td></td>")
                continue
            strength = min(abs(pct) / 20.0, 1.0)
            colour = f"rgba(26,152,80,{0.15 + 0.6 * strength:.2f})" if pct >= 0 else \
                f"rgba(215,48,39,{0.15 + 0.6 * strength:.2f})"
            cells.append(f'<td style="background:{colour}">{pct:+.1f}%</td>')
        body.append(f"<tr><th>{year}</th>{''.join(cells)}</tr>")
    return f"<table class='months'><tr><th>year</th>{head}</tr>{''.join(body)}</table>"


def _trades_table(trades: list[dict[str, Any]]) -> str:
    if not trades:
        return "<p>No trades.</p>"
    columns = list(trades[0])
    shown = trades[:MAX_HTML_TRADES]
    rows = []
    for trade in shown:
        cells = []
        for c in columns:
            value = trade[c]
            if c.endswith("_ts") and isinstance(value, int):
                value = iso_utc(value)
            cells.append(f"<td>{_shown(value)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = f"<p>First {MAX_HTML_TRADES} of {len(trades)} trades; all are in trades.csv.</p>" \
        if len(trades) > MAX_HTML_TRADES else ""
    return f"<table><tr>{''.join(f'<th>{html.escape(c)}</th>' for c in columns)}</tr>{''.join(rows)}</table>{more}"


def render_html(data: ReportData, png: bytes) -> str:
    metrics = "".join(f"<tr><th>{html.escape(k)}</th><td>{_shown(iso_utc(v) if k.endswith('_ts') else v)}</td></tr>"
                      for k, v in data.metrics.items())
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(data.title)}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
th {{ background: #f2f2f2; }}
.months td {{ min-width: 52px; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(data.title)}</h1>
<img alt="price with trades, equity and drawdown" src="data:image/png;base64,{image}">
<h2>Metrics</h2><table>{metrics}</table>
<h2>Monthly returns</h2>{_monthly_table(data)}
<h2>Trades</h2>{_trades_table(data.trades)}
</body></html>
"""


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_report(data: ReportData, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json, trades.csv, fills.csv, equity.csv, report.png and report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("metrics.json", "trades.csv", "fills.csv", "equity.csv",
                                           "report.png", "report.html")}
    paths["metrics.json"].write_text(
        json.dumps({k: _json_safe(v) for k, v in data.metrics.items()}, indent=2) + "\n", encoding="utf-8")
    trade_columns = list(data.trades[0]) if data.trades else ["entry_ts", "exit_ts", "pnl"]
    write_csv(paths["trades.csv"], data.trades, trade_columns)
    fill_rows = [f.to_dict() for f in data.fills]
    fill_columns = [c for c in (fill_rows[0] if fill_rows else Fill.__dataclass_fields__) if c != "extra"]
    write_csv(paths["fills.csv"], fill_rows, fill_columns)
    with paths["equity.csv"].open("w", encoding="utf-8", newline="") as f:
        f.write("ts_close_ms,equity\n")
        f.writelines(f"{int(t)},{float(e)!r}\n" for t, e in zip(data.close_ts, data.equity))
    png = render_chart(data)
    paths["report.png"].write_bytes(png)
    paths["report.html"].write_text(render_html(data, png), encoding="utf-8")
    return paths
