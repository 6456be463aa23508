"""Options backtests on real implied vol: Deribit's BTC DVOL with BTC daily bars of the same
days (shared/data, 2022-11-06 .. 2024-08-31), through ``--iv-csv`` and ``run_options_backtest``.

This file pins the IV plumbing: each bar decides on that day's DVOL close, the report says
so, and vol_mean_reversion, which trades on the DVOL IV rank, opens positions. That all 10
strategies open positions on DVOL at the config's capital is tests/backtest/test_cli_options.py's.
"""
from __future__ import annotations

import pytest

from backtest.cli import main
from backtest.options import OptionsBacktestError, atm_vol_input, run_options_backtest
from common.csv_bars import load_ohlcv_csv
from common.ohlcv import OHLCV
from tests.conftest import SHARED_DATA, require_shared

DVOL = SHARED_DATA / "deribit" / "btc_dvol_1d_2022-11-06_2024-08-31.csv"
BARS = SHARED_DATA / "ohlcv" / "daily" / "BTC_USD-1d_2022-11-06_2024-08-31.csv"
DAY = 86_400_000


@pytest.fixture(scope="module")
def bars() -> OHLCV:
    return load_ohlcv_csv(require_shared(BARS))


@pytest.fixture(scope="module")
def dvol_run(bars):
    return run_options_backtest("BTC", bars, "1d", venues=("deribit", "ibkr"), iv_csv=DVOL)


def test_each_bar_decides_on_that_days_dvol_close(bars):
    vol = atm_vol_input(bars, "1d", DVOL, 30.0)
    assert vol.source == "DVOL implied vol from btc_dvol_1d_2022-11-06_2024-08-31.csv on 665 of 665 bars"
    assert vol.atm_iv[0] == pytest.approx(0.5676) and vol.atm_iv[1] == pytest.approx(0.5948)  # no look-ahead
    assert vol.atm_iv[-1] == pytest.approx(float(DVOL.read_text().splitlines()[-1].split(",")[1]) / 100)


def test_the_options_backtest_over_the_dvol_days_trades_on_dvol(dvol_run):
    assert dvol_run.iv_source.startswith("DVOL implied vol") and dvol_run.close_ts.size == 665
    opened = {sid for sid, run in dvol_run.books.items() if any(f.kind == "option" for f in run.fills)}
    silent = sorted(set(dvol_run.books) - opened)
    assert {"deribit-vol_mean_reversion-btc", "ibkr-vol_mean_reversion-btc"} <= opened, f"no position: {silent}"
    assert len(dvol_run.books) == 10


def test_bars_the_dvol_file_does_not_cover_fall_back_to_realized_vol_and_say_so(bars):
    later = OHLCV(bars.ts + 600 * DAY, bars.open, bars.high, bars.low, bars.close, bars.volume)
    vol = atm_vol_input(later, "1d", DVOL, 30.0)  # 65 days overlap, then DVOL's last day serves 3 more
    assert vol.source == ("DVOL implied vol from btc_dvol_1d_2022-11-06_2024-08-31.csv on 68 of 665 bars, "
                          "realized vol (30-day close-to-close) on the other 597")
    assert atm_vol_input(bars, "1d", None, 30.0).source == "realized vol (30-day close-to-close)"
    far = OHLCV(bars.ts + 2000 * DAY, bars.open, bars.high, bars.low, bars.close, bars.volume)
    with pytest.raises(OptionsBacktestError, match="no day of it .* covers the bars"):
        atm_vol_input(far, "1d", DVOL, 30.0)


def test_cli_names_the_vol_it_used_and_refuses_other_columns(tmp_path, capsys):
    require_shared(BARS)
    short = tmp_path / "BTC_USD-1d.csv"
    short.write_text("\n".join(BARS.read_text().splitlines()[:61]) + "\n")  # 60 days keep the CLI test quick
    argv = ["options", "--underlying", "BTC", "--venue", "deribit", "--csv", str(short), "--timeframe", "1d"]
    assert main(argv + ["--iv-csv", str(DVOL)]) == 0
    assert "ATM vol: DVOL implied vol from btc_dvol_1d_2022-11-06_2024-08-31.csv on 60 of 60 bars" \
        in capsys.readouterr().out
    wrong = tmp_path / "iv.csv"
    wrong.write_text("timestamp_ms,iv\n1667692800000,0.56\n")
    assert main(argv + ["--iv-csv", str(wrong)]) == 2
    assert "expected a header with the columns timestamp_ms,dvol_close (DVOL in percent)" in capsys.readouterr().err
