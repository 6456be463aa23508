from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.csv_bars import HEADER, load_ohlcv_csv, name_parts, spacing_timeframe, write_ohlcv_csv
from common.ohlcv import OHLCV, BadBarError
from tests.conftest import require_shared

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
HOUR = 3_600_000


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_ROWS = [
    [T0, 10.0, 11.0, 9.0, 10.5, 1.25],
    [T0 + HOUR, 10.5, 12.0, 10.0, 11.75, 2.5],
    [T0 + 2 * HOUR, 11.75, 11.75, 8.5, 9.0, 0.0],
]


def good_text(header: str = HEADER, ts=None) -> str:
    ts = ts or [str(r[0]) for r in GOOD_ROWS]
    lines = [header] + [",".join([t] + [repr(v) for v in r[1:]]) for t, r in zip(ts, GOOD_ROWS)]
    return "\n".join(lines) + "\n"


def test_loads_the_replay_format_exactly(tmp_path):
    bars = load_ohlcv_csv(write(tmp_path, good_text()))
    assert bars.ts.dtype == np.int64
    assert bars.rows() == GOOD_ROWS


@pytest.mark.parametrize("header", ["timestamp,open,high,low,close,volume", "date,open,high,low,close,volume",
                                    "Timestamp_ms, Open, High, Low, Close, Volume"])
def test_accepts_other_time_column_names(tmp_path, header):
    assert load_ohlcv_csv(write(tmp_path, good_text(header))).rows() == GOOD_ROWS


def test_seconds_are_read_as_milliseconds(tmp_path):
    ts = [str(r[0] // 1000) for r in GOOD_ROWS]
    assert load_ohlcv_csv(write(tmp_path, good_text(ts=ts))).rows() == GOOD_ROWS


def test_iso_8601_times_are_utc(tmp_path):
    ts = ["2025-01-01T00:00:00Z", "2025-01-01 01:00:00", "2025-01-01T03:00:00+01:00"]
    assert load_ohlcv_csv(write(tmp_path, good_text("date,open,high,low,close,volume", ts))).rows() == GOOD_ROWS


def test_trailing_blank_lines_are_ignored(tmp_path):
    assert load_ohlcv_csv(write(tmp_path, good_text() + "\n\n")).rows() == GOOD_ROWS


def test_empty_file_with_header_gives_no_bars(tmp_path):
    assert len(load_ohlcv_csv(write(tmp_path, HEADER + "\n"))) == 0


def replace_line(text: str, line: int, new: str) -> str:
    lines = text.split("\n")
    lines[line - 1] = new
    return "\n".join(lines)


@pytest.mark.parametrize(
    "line, content, message",
    [
        (3, f"{T0 + HOUR},nan,12,10,11,2", "line 3: open is not a finite number"),
        (3, f"{T0 + HOUR},10.5,12,10,,2", "line 3: close is not a finite number"),
        (2, f"{T0},10,11,9,10.5,-1", "line 2: volume must be >= 0"),
        (4, f"{T0 + 2 * HOUR},0,11,9,10,1", "line 4: open must be > 0"),
        (3, f"{T0 + HOUR},10.5,9,10,9.5,2", "line 3: high 9.0 < low 10.0"),
        (3, f"{T0 + HOUR},10.5,11,10,11.5,2", "line 3: high/low do not contain open/close"),
        (4, f"{T0 + HOUR},11.75,11.75,8.5,9.0,0.0", "line 4: duplicate ts 1735693200000"),
        (4, f"{T0 - HOUR},11.75,11.75,8.5,9.0,0.0", "line 4: out of order: ts 1735686000000 is before"),
        (3, f"{T0 + HOUR},10.5,abc,10,11,2", "line 3: high 'abc' is not a number"),
        (3, "yesterday,10.5,12,10,11,2", "line 3: timestamp 'yesterday' is not a number like the others"),
        (2, ",10,11,9,10.5,1", "line 2: timestamp is empty"),
        (3, "", "line 3: timestamp is empty"),
        (1, "time,open,high,low,close,volume", "line 1: header must be timestamp_ms,open,high,low,close,volume"),
        (1, "timestamp_ms,open,high,low,close", "line 1: header must be"),
    ],
)
def test_bad_line_is_named_with_file_and_line_number(tmp_path, line, content, message):
    path = write(tmp_path, replace_line(good_text(), line, content))
    with pytest.raises(BadBarError) as err:
        load_ohlcv_csv(path)
    assert str(err.value).startswith(f"{path} line ")
    assert message in str(err.value)


def test_bad_iso_time_is_named(tmp_path):
    ts = ["2025-01-01T00:00:00Z", "2025-13-45T01:00:00Z", "2025-01-01T02:00:00Z"]
    path = write(tmp_path, good_text("date,open,high,low,close,volume", ts))
    with pytest.raises(BadBarError, match=r"bars\.csv line 3: timestamp '2025-13-45T01:00:00Z' is not ISO-8601"):
        load_ohlcv_csv(path)


def test_row_with_too_many_fields_names_the_file(tmp_path):
    path = write(tmp_path, replace_line(good_text(), 3, f"{T0 + HOUR},1,2,1,1,1,99"))
    with pytest.raises(BadBarError, match=r"bars\.csv: .*line 3"):
        load_ohlcv_csv(path)


def test_write_then_read_is_exact_and_leaves_no_temp_file(tmp_path):
    rng = np.random.default_rng(1)
    n = 50
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = T0 + np.arange(n, dtype=np.int64) * HOUR
    bars = OHLCV(ts, close, close * 1.01, close * 0.99, close, rng.uniform(0, 5, n))
    path = tmp_path / "out.csv"
    write_ohlcv_csv(path, bars)
    assert path.read_text().splitlines()[0] == HEADER
    assert load_ohlcv_csv(path).rows() == bars.rows()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    write_ohlcv_csv(path, bars.slice(0, 3))  # a full write replaces
    assert len(load_ohlcv_csv(path)) == 3


def test_append_adds_rows_and_refuses_overlap(tmp_path):
    path = tmp_path / "out.csv"
    bars = OHLCV.from_rows(GOOD_ROWS)
    write_ohlcv_csv(path, bars.slice(0, 1), append=True)  # a new file gets the header
    write_ohlcv_csv(path, bars.slice(1, 3), append=True)
    assert load_ohlcv_csv(path).rows() == GOOD_ROWS
    with pytest.raises(BadBarError,
                       match=r"first bar to append ts=1735693200000 is not after the file's last ts=1735696800000"):
        write_ohlcv_csv(path, bars.slice(1, 2), append=True)


def test_append_to_a_file_without_final_newline(tmp_path):
    path = write(tmp_path, good_text().rstrip("\n"))
    more = OHLCV.from_rows([[T0 + 3 * HOUR, 9.0, 9.5, 8.0, 9.25, 1.0]])
    write_ohlcv_csv(path, more, append=True)
    assert load_ohlcv_csv(path).rows() == GOOD_ROWS + more.rows()


def test_write_refuses_bad_bars(tmp_path):
    bad = OHLCV.from_rows([[T0, 10, 9, 11, 10, 1]])
    with pytest.raises(BadBarError, match="high/low do not contain open/close"):
        write_ohlcv_csv(tmp_path / "x.csv", bad)


def test_real_binance_file_loads_whole(shared_data):
    bars = load_ohlcv_csv(require_shared(shared_data / "ohlcv" / "binance" / "BTC_USDT-1h.csv"))
    assert len(bars) == 45_024
    assert bars.rows()[0] == [1502942400000, 4261.48, 4313.62, 4261.32, 4308.83, 47.181009]


@pytest.mark.parametrize("name, parts", [
    ("BTC_USDT-1h.csv", ("BTC/USDT", "1h")),  # download-data / freqtrade
    ("BTC_USD-1d_2022-11-06_2024-08-31.csv", ("BTC/USD", "1d")),  # a dated cut
    ("eth_usdt-4h.csv", ("ETH/USDT", "4h")),
    ("prices.csv", None),
    ("BTC_USDT.csv", None),
])
def test_a_bar_files_name_states_its_symbol_and_timeframe(name, parts):
    assert name_parts(f"/some/dir/{name}") == parts


def test_the_timeframe_is_the_most_common_bar_spacing_despite_gaps():
    hour = 3_600_000
    ts = [0, hour, 2 * hour, 5 * hour, 6 * hour]  # a 3-hour gap
    bars = OHLCV.from_rows([[t, 1.0, 1.0, 1.0, 1.0, 1.0] for t in ts])
    assert spacing_timeframe(bars, "x.csv") == "1h"
    odd = OHLCV.from_rows([[t * 7_000, 1.0, 1.0, 1.0, 1.0, 1.0] for t in range(3)])
    with pytest.raises(BadBarError, match="x.csv: bars are 7000 ms apart, which is no known timeframe"):
        spacing_timeframe(odd, "x.csv")
    with pytest.raises(BadBarError, match="need 2"):
        spacing_timeframe(bars.slice(0, 1), "x.csv")
