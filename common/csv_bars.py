"""OHLCV CSV files: the replay input and the download tool's output.

Format: a header ``timestamp_ms,open,high,low,close,volume`` (the first column may also be
called ``timestamp`` or ``date``), then one bar per line, oldest first. Times are bar open
times as integer ms, integer seconds (values below 1e11, multiplied by 1000) or ISO-8601
strings (UTC when no offset is given). A bad line stops the load with the file and line number.

pandas is imported inside the loader: a sim-mode service never pays its ~70 MB.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from common.bars import find_bar_problems
from common.ohlcv import OHLCV, BadBarError
from common.timeframes import TIMEFRAME_MS

HEADER = "timestamp_ms,open,high,low,close,volume"
TIME_COLUMNS = ("timestamp_ms", "timestamp", "date")
VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
SECONDS_BELOW = 100_000_000_000  # 1e11: as seconds that is year 5138, as ms it is 1973


# BTC_USDT-1h.csv (download-data, freqtrade), BTC_USD-1d_2022-11-06_2024-08-31.csv (a dated cut).
_FILE_NAME = re.compile(r"^([A-Z0-9]+)_([A-Z0-9]+)-(\d+[mhdw])(?:[_.-].*)?\.csv$", re.IGNORECASE)


def name_parts(path: str | Path) -> tuple[str, str] | None:
    """(symbol, timeframe) a bar file's name states ('BTC_USDT-1h.csv' -> ('BTC/USDT', '1h')), or None."""
    match = _FILE_NAME.match(Path(path).name)
    if match is None:
        return None
    base, quote, timeframe = match.groups()
    return f"{base.upper()}/{quote.upper()}", timeframe


def spacing_timeframe(ohlcv: OHLCV, where: str) -> str:
    """The timeframe of the bars' spacing: the most common gap between consecutive opens
    (robust to missing bars), which must be a known timeframe."""
    if len(ohlcv) < 2:
        raise BadBarError(f"{where}: {len(ohlcv)} bar(s); need 2 to tell the timeframe from the spacing")
    gaps, counts = np.unique(np.diff(ohlcv.ts), return_counts=True)
    gap = int(gaps[np.argmax(counts)])
    for name, ms in TIMEFRAME_MS.items():
        if ms == gap:
            return name
    raise BadBarError(f"{where}: bars are {gap} ms apart, which is no known timeframe "
                      f"({', '.join(TIMEFRAME_MS)})")


def _line(index: int) -> int:
    """File line of data row ``index`` (line 1 is the header)."""
    return index + 2


def _read_header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8", newline="") as f:
        first = f.readline()
    names = [n.strip().lower() for n in first.strip().lstrip("\ufeff").split(",")]
    if len(names) != 6 or names[0] not in TIME_COLUMNS or tuple(names[1:]) != VALUE_COLUMNS:
        raise BadBarError(
            f"{path} line 1: header must be {HEADER} (first column {' or '.join(TIME_COLUMNS)}), got {first.strip()!r}"
        )
    return names


def _numeric(pd: ModuleType, raw: Any, name: str, path: Path) -> np.ndarray:
    """Column (a pandas Series) as float64; a value that is present but not a number names its line."""
    column: np.ndarray
    if raw.dtype.kind in "iuf":
        column = raw.to_numpy(dtype=np.float64)
        return column
    values = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy() & raw.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise BadBarError(f"{path} line {_line(i)}: {name} {raw.iloc[i]!r} is not a number")
    column = values.to_numpy(dtype=np.float64)
    return column


def _timestamps_ms(pd: ModuleType, raw: Any, path: Path) -> np.ndarray:
    """The time column (a pandas Series) as int64 ms, from ms, seconds or ISO-8601 text."""
    ts: np.ndarray
    missing = np.flatnonzero(raw.isna().to_numpy())
    if missing.size:
        raise BadBarError(f"{path} line {_line(int(missing[0]))}: timestamp is empty")
    numbers = pd.to_numeric(raw, errors="coerce")
    is_number = numbers.notna().to_numpy()
    if is_number.all():
        values = numbers.to_numpy(dtype=np.float64)
        ms = np.where(values < SECONDS_BELOW, values * 1000.0, values)
        ts = np.rint(ms).astype(np.int64)
    elif not is_number.any():
        parsed = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            i = int(bad[0])
            raise BadBarError(f"{path} line {_line(i)}: timestamp {raw.iloc[i]!r} is not ISO-8601")
        ts = parsed.dt.as_unit("ms").astype("int64").to_numpy()
    else:
        i = int(np.flatnonzero(~is_number)[0])
        raise BadBarError(f"{path} line {_line(i)}: timestamp {raw.iloc[i]!r} is not a number like the others")
    bad = np.flatnonzero(ts <= 0)
    if bad.size:
        i = int(bad[0])
        raise BadBarError(f"{path} line {_line(i)}: timestamp must be > 0, got {raw.iloc[i]!r}")
    return ts


def load_ohlcv_csv(path: str | Path) -> OHLCV:
    """Read and validate a whole file; any bad line raises BadBarError naming file and line."""
    import pandas as pd

    path = Path(path)
    names = _read_header(path)
    try:
        df = pd.read_csv(
            path, header=0, names=names, dtype={names[0]: str}, engine="c",
            skip_blank_lines=False,
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BadBarError(f"{path}: {exc}") from None
    empty_rows = df.isna().all(axis=1).to_numpy()
    n = len(df)
    while n and empty_rows[n - 1]:  # trailing blank lines are harmless
        n -= 1
    df = df.iloc[:n]
    ohlcv = OHLCV(
        _timestamps_ms(pd, df[names[0]], path),
        *(_numeric(pd, df[name], name, path) for name in VALUE_COLUMNS),
    )
    problems = find_bar_problems(ohlcv)
    if problems:
        i, reason = problems[0]
        raise BadBarError(f"{path} line {_line(i)}: {reason}")
    return ohlcv


def _format_rows(ohlcv: OHLCV) -> str:
    return "".join(f"{t},{o!r},{h!r},{lo!r},{c!r},{v!r}\n" for t, o, h, lo, c, v in ohlcv.rows())


def _file_tail(path: Path) -> tuple[int | None, bool]:
    """(ts of the last bar or None when only a header, whether the file ends with a newline)."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - 4096, 0))
        tail = f.read().decode("utf-8", errors="replace")
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not lines or lines[-1].startswith(TIME_COLUMNS):
        return None, tail.endswith("\n")
    try:
        return int(lines[-1].split(",", 1)[0]), tail.endswith("\n")
    except ValueError:
        raise BadBarError(
            f"{path}: cannot append, the last line does not start with an integer ms timestamp: {lines[-1]!r}"
        ) from None


def write_ohlcv_csv(path: str | Path, ohlcv: OHLCV, append: bool = False) -> None:
    """Write bars in the replay format. A full write replaces the file atomically (temp file,
    fsync, rename), so a reader never sees half a file; an append refuses bars that are not
    after the file's last bar, so repeated downloads cannot duplicate rows."""
    path = Path(path)
    ohlcv.validate(where=str(path))
    if append and path.exists() and path.stat().st_size > 0:
        if _read_header(path)[0] != "timestamp_ms":
            raise BadBarError(f"{path}: can only append to a file with header {HEADER}")
        last, ends_with_newline = _file_tail(path)
        if len(ohlcv) and last is not None and int(ohlcv.ts[0]) <= last:
            raise BadBarError(
                f"{path}: first bar to append ts={int(ohlcv.ts[0])} is not after the file's last ts={last}"
            )
        with path.open("a", encoding="utf-8", newline="") as f:
            f.write(("" if ends_with_newline else "\n") + _format_rows(ohlcv))
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            f.write(HEADER + "\n" + _format_rows(ohlcv))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
