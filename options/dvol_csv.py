"""DVOL CSV files: the pricer's cache beside the state file, ``download-data --dvol`` output
and the ``backtest options --iv-csv`` input.

Format: a header naming the columns, then one UTC day per line, oldest first. Reading needs
the columns ``timestamp_ms`` (int ms, the day's open) and ``dvol_close`` (percent, 56.76);
any other column (``dvol_open``, ``dvol_high``, ``dvol_low``) is ignored. That reads what
download-data writes (``DOWNLOAD_COLUMNS``), the cache (``CACHE_COLUMNS``) and DVOL as
shared/data holds it. Anything else is refused with a message naming the expected columns.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from options.iv_history import IvHistoryError, check_daily_series

TIME_COLUMN, CLOSE_COLUMN = "timestamp_ms", "dvol_close"
CACHE_COLUMNS = (TIME_COLUMN, CLOSE_COLUMN)
DOWNLOAD_COLUMNS = (TIME_COLUMN, "dvol_open", "dvol_high", "dvol_low", CLOSE_COLUMN)


class DvolCsvError(ValueError):
    """A file that is not a DVOL CSV; the message names the file, the line and the columns expected."""


def read_dvol_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(ts int ms, close as a decimal vol)`` of every row, checked (see the module doc)."""
    path = Path(path)
    expected = f"a header with the columns {TIME_COLUMN},{CLOSE_COLUMN} (DVOL in percent)"
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = [name.strip().lstrip("\ufeff") for name in next(reader, [])]
        if TIME_COLUMN not in header or CLOSE_COLUMN not in header:
            raise DvolCsvError(f"{path} line 1: expected {expected}; got {','.join(header) or 'an empty file'!r}")
        t_col, c_col = header.index(TIME_COLUMN), header.index(CLOSE_COLUMN)
        ts: list[int] = []
        close: list[float] = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                ts.append(int(row[t_col]))
                close.append(float(row[c_col]) / 100.0)
            except (ValueError, IndexError):
                raise DvolCsvError(f"{path} line {line}: expected an integer {TIME_COLUMN} and a number "
                                   f"{CLOSE_COLUMN}, got {','.join(row)!r}") from None
    if not ts:
        raise DvolCsvError(f"{path}: no rows after the header ({expected})")
    try:
        return check_daily_series(ts, close, str(path))
    except IvHistoryError as exc:
        raise DvolCsvError(str(exc)) from None


def format_rows(rows: np.ndarray) -> str:
    """CSV lines of rows ``[ts, values...]`` (values in percent as Deribit sends them)."""
    return "".join(",".join([str(int(r[0]))] + [f"{float(x):.10g}" for x in r[1:]]) + "\n" for r in rows)


def append_dvol_csv(path: Path, rows: np.ndarray, columns: Sequence[str]) -> None:
    """Append rows (the header first when the file is new); flushed to disk before returning."""
    if len(rows) == 0:
        return
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", encoding="utf-8") as f:
        f.write((",".join(columns) + "\n" if new else "") + format_rows(rows))
        f.flush()
        os.fsync(f.fileno())


def write_dvol_csv_atomic(path: Path, ts: np.ndarray, close: np.ndarray) -> None:
    """Replace ``path`` with the cache columns (close as a decimal in, percent out) through a
    temp file, fsync and rename: a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    rows = np.column_stack([np.asarray(ts, dtype=np.float64), np.asarray(close) * 100.0])
    with tmp.open("w", encoding="utf-8") as f:
        f.write(",".join(CACHE_COLUMNS) + "\n" + format_rows(rows))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def last_timestamp(path: Path) -> int | None:
    """The last row's ``timestamp_ms`` of an existing DVOL CSV (resume point), else None."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    ts, _ = read_dvol_csv(path)
    return int(ts[-1])
