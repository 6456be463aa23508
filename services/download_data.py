"""download-data: fetch closed OHLCV bars from a CCXT exchange into the replay CSV format,
and Deribit's DVOL implied-vol index into the CSV ``backtest options --iv-csv`` reads.

    download-data --exchange binanceus --symbols BTC/USDT,ETH/USDT,SOL/USDT --timeframe 1h --since 2023-01-01
    download-data --dvol BTC,ETH --since 2023-01-01

DVOL goes to ``<out>/dvol_<coin>_1d.csv`` (default ``data/deribit``), columns
``timestamp_ms,dvol_open,dvol_high,dvol_low,dvol_close`` (percent, one closed UTC day a line,
from ``public/get_volatility_index_data``, resolution 1D), resumable the same way.

Writes ``<out>/<BASE>_<QUOTE>-<tf>.csv`` (default ``data/<exchange>``), the format
common/csv_bars.py reads, so the replay feed and the backtester take the files as they are.
Resumable: a file that exists is continued after its last bar, and every page is appended as
soon as it arrives, so an interrupted run loses at most one page. Only closed bars are
written. Temporary venue errors are retried with backoff; bad rows are dropped and counted.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

from common.bars import sanitize_bars
from common.csv_bars import HEADER, _file_tail, write_ohlcv_csv
from common.ohlcv import OHLCV
from common.timeframes import DAY_MS, timeframe_ms
from common.wall import wall_ms
from config.schema import utc_iso_to_ms
from options.dvol_csv import DOWNLOAD_COLUMNS, DvolCsvError, append_dvol_csv, last_timestamp
from services.feeds.exchange_client import (
    PAGE_LIMIT,
    CcxtSpotClient,
    ExchangeRejected,
    ExchangeUnavailable,
    SpotClient,
    backoff_seconds,
    closed_rows,
)

MAX_ATTEMPTS = 6
DVOL_CHUNK_DAYS = 500  # days asked per get_volatility_index_data request (Deribit pages 1000 at most)
DEFAULT_DERIBIT_URL = "https://www.deribit.com/api/v2"


def csv_path(out_dir: Path, symbol: str, timeframe: str) -> Path:
    return out_dir / f"{symbol.replace('/', '_')}-{timeframe}.csv"


def resume_from(path: Path, since_ms: int, tf_ms: int) -> int:
    """Open time of the first bar to fetch: after the file's last bar, or ``since`` aligned."""
    start = since_ms - since_ms % tf_ms
    if path.exists() and path.stat().st_size > 0:
        last, _ = _file_tail(path)
        if last is not None:
            return max(start, last + tf_ms)
    return start


def with_retries(what: str, call: Callable[[], Any], sleep: Callable[[float], None] | None = None) -> Any:
    """``call()``, retried on temporary errors with exponential backoff (Retry-After honoured)."""
    attempt = 1
    while True:
        try:
            return call()
        except ExchangeUnavailable as exc:
            if attempt >= MAX_ATTEMPTS:
                raise
            wait = backoff_seconds(attempt, base=1.0, cap=30.0, retry_after=exc.retry_after)
            print(f"{what}: {exc}; retry {attempt}/{MAX_ATTEMPTS - 1} in {wait:g}s", file=sys.stderr)
            (sleep or time.sleep)(wait)  # looked up now: a test may stand in for time.sleep
            attempt += 1


def fetch_page(client: SpotClient, symbol: str, timeframe: str, since: int,
               sleep: Callable[[float], None] | None = None) -> OHLCV:
    """One page, retried on temporary errors with exponential backoff (Retry-After honoured)."""
    return with_retries(symbol, lambda: client.fetch_ohlcv(symbol, timeframe, since, PAGE_LIMIT), sleep)


def download_symbol(client: SpotClient, symbol: str, timeframe: str, since_ms: int, until_ms: int, path: Path,
                    progress: bool = True, sleep: Callable[[float], None] | None = None) -> tuple[int, int]:
    """Append every closed bar in [resume point, until_ms) to ``path``; (written, dropped)."""
    from tqdm import tqdm

    tf_ms = timeframe_ms(timeframe)
    cursor = resume_from(path, since_ms, tf_ms)
    if not path.exists() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + "\n", encoding="utf-8")
    total = max((until_ms - cursor) // tf_ms, 0)
    written = dropped = 0
    with tqdm(total=total, desc=f"{symbol} {timeframe}", unit="bar", disable=not progress, file=sys.stderr) as bar:
        while cursor + tf_ms <= until_ms:
            page = fetch_page(client, symbol, timeframe, cursor, sleep)
            rows = closed_rows(page, cursor, until_ms, tf_ms)
            clean, problems = sanitize_bars(rows)
            dropped += len(problems)
            for problem in problems[:3]:
                print(f"{symbol}: {problem}", file=sys.stderr)
            if len(clean):
                write_ohlcv_csv(path, clean, append=True)
                written += len(clean)
            if not len(page) or int(page.ts[-1]) < cursor:
                break  # nothing newer on the exchange
            step = (int(page.ts[-1]) + tf_ms - cursor) // tf_ms
            cursor = int(page.ts[-1]) + tf_ms
            bar.update(min(step, total - bar.n))
    return written, dropped


def dvol_path(out_dir: Path, coin: str) -> Path:
    return out_dir / f"dvol_{coin.lower()}_1d.csv"


def download_dvol(client: Any, coin: str, since_ms: int, until_ms: int, path: Path, progress: bool = True,
                  sleep: Callable[[float], None] | None = None) -> int:
    """Append every DVOL day closed in [resume point, until_ms) to ``path``; the days written.
    Each chunk is appended as soon as it arrives, so an interrupted run loses at most one."""
    from tqdm import tqdm

    last = last_timestamp(path)
    cursor = since_ms - since_ms % DAY_MS if last is None else max(since_ms - since_ms % DAY_MS, last + DAY_MS)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    total = max((until_ms - cursor) // DAY_MS, 0)
    with tqdm(total=total, desc=f"DVOL {coin}", unit="day", disable=not progress, file=sys.stderr) as bar:
        while cursor + DAY_MS <= until_ms:
            end = min(cursor + DVOL_CHUNK_DAYS * DAY_MS, until_ms)
            rows = with_retries(f"DVOL {coin}", lambda: client.fetch_dvol(coin, cursor, end), sleep)
            keep = (rows[:, 0] >= cursor) & (rows[:, 0] + DAY_MS <= until_ms)
            append_dvol_csv(path, rows[keep], DOWNLOAD_COLUMNS)
            written += int(keep.sum())
            step = (end - cursor) // DAY_MS
            cursor = end
            bar.update(min(step, total - bar.n))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="download-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchange", default="binanceus", help="CCXT exchange id (default binanceus)")
    parser.add_argument("--symbols", help="comma-separated, like BTC/USDT,ETH/USDT")
    parser.add_argument("--dvol", help="Deribit DVOL daily history of these coins instead, like BTC,ETH")
    parser.add_argument("--deribit-url", default=DEFAULT_DERIBIT_URL, help="Deribit API base (tests, proxies)")
    parser.add_argument("--timeframe", default="1h", help="bar timeframe (default 1h)")
    parser.add_argument("--since", required=True, help="first day or instant, ISO 8601 UTC (2023-01-01)")
    parser.add_argument("--until", help="stop before this instant, ISO 8601 UTC (default: now)")
    parser.add_argument("--out", help="output folder (default data/<exchange>, data/deribit with --dvol)")
    parser.add_argument("--api-url", help="replace the exchange's API host (tests, proxies)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        timeframe_ms(args.timeframe)
        since = utc_iso_to_ms(_as_instant(args.since))
        until = utc_iso_to_ms(_as_instant(args.until)) if args.until else int(wall_ms())
    except ValueError as exc:
        print(f"download-data: {exc}", file=sys.stderr)
        return 2
    if since >= until:
        print("download-data: --since must be before --until", file=sys.stderr)
        return 2
    if args.dvol is not None:
        return main_dvol(args, since, until)
    symbols = [s.strip() for s in (args.symbols or "").split(",") if s.strip()]
    if not symbols:
        print("download-data: give --symbols (OHLCV) or --dvol (Deribit DVOL)", file=sys.stderr)
        return 2
    out = Path(args.out or Path("data") / args.exchange)
    try:
        client = CcxtSpotClient(args.exchange, args.api_url)
        for symbol in symbols:
            path = csv_path(out, symbol, args.timeframe)
            written, dropped = download_symbol(client, symbol, args.timeframe, since, until, path,
                                               progress=not args.no_progress)
            print(f"{symbol}: {written} bars appended to {path}" + (f", {dropped} bad rows dropped" if dropped else ""))
    except ExchangeUnavailable as exc:
        print(f"download-data: {args.exchange} ({args.api_url or 'its public API'}) did not answer: {exc}. Check the "
              f"network (or --api-url), then run the same command again to resume", file=sys.stderr)
        return 1
    except ExchangeRejected as exc:
        print(f"download-data: {exc}; run the same command again to resume", file=sys.stderr)
        return 1
    return 0


def main_dvol(args: argparse.Namespace, since: int, until: int) -> int:
    from services.feeds.deribit import INDEX_NAMES, DeribitClient, DeribitRequestError

    coins = [c.strip().upper() for c in args.dvol.split(",") if c.strip()]
    unknown = [c for c in coins if c not in INDEX_NAMES]
    if not coins or unknown:
        print(f"download-data --dvol: expected coins among {','.join(INDEX_NAMES)}, got {args.dvol!r}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("data") / "deribit")
    client = DeribitClient(args.deribit_url)
    try:
        for coin in coins:
            path = dvol_path(out, coin)
            written = download_dvol(client, coin, since, until, path, progress=not args.no_progress)
            print(f"DVOL {coin}: {written} days appended to {path}")
    except (ExchangeUnavailable, DeribitRequestError, DvolCsvError) as exc:
        print(f"download-data: {exc}; run the same command again to resume", file=sys.stderr)
        return 1
    return 0


def _as_instant(text: str) -> str:
    """'2023-01-01' -> '2023-01-01T00:00:00Z'; full instants pass through."""
    return f"{text}T00:00:00Z" if len(text) == 10 else text


if __name__ == "__main__":
    sys.exit(main())
