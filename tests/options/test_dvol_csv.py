"""DVOL CSV files: shared/data's real DVOL, download-data's columns, the cache, and refusals."""
from __future__ import annotations

import numpy as np
import pytest

from options.dvol_csv import (
    CACHE_COLUMNS,
    DOWNLOAD_COLUMNS,
    DvolCsvError,
    append_dvol_csv,
    last_timestamp,
    read_dvol_csv,
    write_dvol_csv_atomic,
)

FIRST_DAY = 1_667_692_800_000


def test_reads_the_real_dvol_as_decimal_vols(shared_data):
    ts, close = read_dvol_csv(shared_data / "deribit/btc_dvol_1d_2022-11-06_2024-08-31.csv")
    assert ts.size == 665 and ts[0] == FIRST_DAY and close[0] == pytest.approx(0.5676)
    assert 0.3238 <= close.min() and close.max() <= 1.1472  # the README's range, in percent


def test_download_and_cache_files_read_back(tmp_path):
    rows = np.array([[FIRST_DAY, 50.0, 60.0, 45.0, 56.76], [FIRST_DAY + 86_400_000, 56.76, 60.0, 55.0, 59.48]])
    path = tmp_path / "dvol_btc_1d.csv"
    append_dvol_csv(path, rows[:1], DOWNLOAD_COLUMNS)
    append_dvol_csv(path, rows[1:], DOWNLOAD_COLUMNS)
    assert path.read_text().splitlines()[0] == ",".join(DOWNLOAD_COLUMNS)
    ts, close = read_dvol_csv(path)
    assert ts.tolist() == rows[:, 0].tolist() and close.tolist() == pytest.approx([0.5676, 0.5948])
    assert last_timestamp(path) == FIRST_DAY + 86_400_000
    cache = tmp_path / "cache.csv"
    write_dvol_csv_atomic(cache, ts, close)
    assert cache.read_text().splitlines() == [",".join(CACHE_COLUMNS), f"{FIRST_DAY},56.76",
                                              f"{FIRST_DAY + 86_400_000},59.48"]
    assert not (tmp_path / "cache.csv.tmp").exists()


@pytest.mark.parametrize("text, message", [
    ("timestamp_ms,iv\n1667692800000,0.5\n", "line 1: expected a header with the columns timestamp_ms,dvol_close"),
    ("", "an empty file"),
    ("timestamp_ms,dvol_close\n", "no rows after the header"),
    ("timestamp_ms,dvol_close\n1667692800000,abc\n", "line 2: expected an integer timestamp_ms and a number"),
    ("timestamp_ms,dvol_close\n1667692800000,NaN\n", "vol must be a finite number > 0"),
    ("timestamp_ms,dvol_close\n1667692800000,50\n1667692800000,51\n", "timestamps must increase"),
])
def test_anything_else_is_refused_naming_the_expected_columns(tmp_path, text, message):
    path = tmp_path / "x.csv"
    path.write_text(text)
    with pytest.raises(DvolCsvError, match=message):
        read_dvol_csv(path)
