"""`backtest options` and the bar files: the config's strategies trade on real bars, the
timeframe and symbol come from the file, and every strategy that does not trade says why."""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from backtest.cli import build_parser, main, options_jobs
from backtest.options import run_options_backtest
from common.csv_bars import load_ohlcv_csv
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "default.json"
DVOL = SHARED_DATA / "deribit" / "btc_dvol_1d_2022-11-06_2024-08-31.csv"
SEED_COMMAND = "options --underlying BTC --since 2023-01-01 --capital 1000 --max-positions 4"


def opened_per_strategy(out: str) -> dict[str, int]:
    return {sid: int(n) for sid, n in re.findall(r"^(\S+): opened (\d+) option leg", out, re.MULTILINE)}


@pytest.mark.parametrize("iv", ["realized", "dvol"])
def test_every_options_strategy_opens_on_real_btc_daily_bars_at_the_default_capital(btc_daily_csv, iv):
    """On Deribit's DVOL (--iv-csv) as on realized vol, all 10 strategies open a position."""
    args = build_parser().parse_args(["options", "--csv", str(btc_daily_csv), "--config", str(CONFIG)])
    jobs = options_jobs(args, "BTC")
    assert len(jobs.strategies) == 10 and set(jobs.capital.values()) == {50_000.0}
    result = run_options_backtest("BTC", load_ohlcv_csv(btc_daily_csv), "1d", strategies=jobs.strategies,
                                  capital_by_id=jobs.capital, limits_by_id=jobs.limits,
                                  risk_limits_by_id=jobs.risk_limits, max_positions=jobs.max_positions,
                                  min_score=jobs.min_score, fee_pct=jobs.fee_pct,
                                  iv_csv=DVOL if iv == "dvol" else None)
    assert result.iv_source.startswith("DVOL implied vol" if iv == "dvol" else "realized vol")
    idle = {sid: result.books[sid].why_not()[:3] for sid, m in result.metrics.items() if m["opened"] == 0}
    assert not idle, f"options strategies that never opened a position: {idle}"
    for sid in ("deribit-puts-btc", "deribit-calls-btc", "ibkr-puts-btc", "ibkr-calls-btc"):
        run = result.books[sid]
        spot_legs = [f for f in run.fills if f.extra.get("action") == "spot_leg"]
        assert spot_legs and all(f.instrument == "BTC/USDT" and f.side == "buy" for f in spot_legs), sid
        first_option = next(f for f in run.fills if f.kind == "option")
        assert first_option.order_id == spot_legs[0].order_id  # coins and option in one order
        assert first_option.quantity * first_option.extra["multiplier"] == pytest.approx(spot_legs[0].quantity)
    refusals = [m["why_not"] for m in result.metrics.values()]
    assert not any("net delta would be" in line and "momentum" in sid
                   for sid, lines in zip(result.metrics, refusals) for line in lines)


def test_the_seed_command_runs_as_written_on_download_data_files_and_explains_itself(
        btc_daily_csv, tmp_path, monkeypatch, capsys):
    (tmp_path / "data" / "binanceus").mkdir(parents=True)
    shutil.copy(btc_daily_csv, tmp_path / "data" / "binanceus" / "BTC_USDT-1d.csv")  # download-data's naming
    (tmp_path / "config").mkdir()
    shutil.copy(CONFIG, tmp_path / "config" / "default.json")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(SEED_COMMAND)) == 0
    out = capsys.readouterr().out
    assert "bars: data/binanceus/BTC_USDT-1d.csv (BTC/USDT, 1d from the bar spacing" in out
    opened = opened_per_strategy(out)
    assert len(opened) == 10 and any(opened.values())  # what fits $1,000 trades
    for sid, n in opened.items():
        block = out.split(f"{sid}: opened", 1)[1].split("\n", 1)[1]
        assert block.startswith("  "), f"{sid} gives no reason"
        if n == 0:
            assert "cannot trade at $1,000: venue minimum:" in block.split("\n", 1)[0], sid
    assert opened["deribit-wheel-btc"] == 0  # a 0.1 BTC cash-secured put needs thousands


def test_no_bars_downloaded_names_where_it_looked_and_how_to_fetch(tmp_path, monkeypatch, capsys):
    (tmp_path / "config").mkdir()
    shutil.copy(CONFIG, tmp_path / "config" / "default.json")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(SEED_COMMAND)) == 2
    err = capsys.readouterr().err
    assert "no bars for BTC" in err and "download-data --exchange binanceus --symbols BTC/USDT" in err


def test_config_params_and_capital_reach_the_strategies(btc_daily_csv, tmp_path, capsys):
    cfg = json.loads(CONFIG.read_text())
    for entry in cfg["strategies"]:
        if entry["id"] == "deribit-wheel-btc":
            entry["params"] = {"take_profit_pct": 1000, "min_premium_pct": 99}
            entry["capital"] = 60_000
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    args = build_parser().parse_args(["options", "--csv", str(btc_daily_csv), "--config", str(path)])
    jobs = options_jobs(args, "BTC")
    params = {sid: p for sid, _, _, p in jobs.strategies}
    assert params["deribit-wheel-btc"]["min_premium_pct"] == 99 and jobs.capital["deribit-wheel-btc"] == 60_000
    assert params["deribit-momentum-btc"]["alloc_fraction"] == 0.1  # the default config's
    assert params["deribit-calls-btc"]["close_dte"] == 3  # theta_harvest, as the services merge it
    overridden = options_jobs(build_parser().parse_args(["options", "--capital", "7000", "--config", str(path)]), "BTC")
    assert set(overridden.capital.values()) == {7000.0}
    assert jobs.risk_free_rate == 0.0
    cfg["options"] = {"risk_free_rate": 0.02, "venues": {"deribit": {"risk_free_rate": 0.04, "min_score": 0.2}}}
    path.write_text(json.dumps(cfg))
    deribit = options_jobs(build_parser().parse_args(["options", "--venue", "deribit", "--config", str(path)]), "BTC")
    assert (deribit.risk_free_rate, deribit.min_score) == (0.04, 0.2)
    cfg.pop("options")
    path.write_text(json.dumps(cfg))
    assert main(["options", "--csv", str(btc_daily_csv), "--config", str(path), "--venue", "deribit",
                 "--since", "2024-06-01"]) == 0
    out = capsys.readouterr().out
    assert opened_per_strategy(out)["deribit-wheel-btc"] == 0
    assert "< min_premium_pct 99%" in out.split("deribit-wheel-btc: opened", 1)[1]
    assert "at capital $60,000" in out


def test_a_timeframe_that_contradicts_the_bar_spacing_is_refused_naming_both(btc_daily_csv, btc_csv, tmp_path,
                                                                              capsys):
    assert main(["options", "--csv", str(btc_daily_csv), "--timeframe", "1h", "--config", str(CONFIG)]) == 2
    err = capsys.readouterr().err
    assert "--timeframe 1h contradicts" in err and "its bars are 1d apart" in err
    assert main(["spot", "--strategy", "rsi", "--csv", str(btc_csv), "--timeframe", "1d"]) == 2
    err = capsys.readouterr().err
    assert "--timeframe 1d contradicts" in err and "its bars are 1h apart" in err
    daily_named_usdt = tmp_path / "BTC_USDT-1d.csv"
    shutil.copy(btc_daily_csv, daily_named_usdt)
    assert main(["spot", "--config", str(CONFIG), "--id", "momentum-btc", "--csv", str(daily_named_usdt)]) == 2
    assert "config timeframe of momentum-btc 1h contradicts" in capsys.readouterr().err
    misnamed = tmp_path / "BTC_USDT-1h.csv"
    shutil.copy(btc_daily_csv, misnamed)
    assert main(["spot", "--strategy", "rsi", "--csv", str(misnamed)]) == 2
    assert "the file name says 1h bars but they are 1d apart" in capsys.readouterr().err


def test_the_timeframe_is_the_files_own_when_not_given(btc_daily_csv, capsys):
    assert main(["spot", "--strategy", "sma_crossover", "--csv", str(btc_daily_csv), "--symbol", "BTC/USD"]) == 0
    assert "sma_crossover" in capsys.readouterr().out


def test_the_symbol_comes_from_the_file_name_or_symbol_is_required(btc_daily_csv, tmp_path, capsys):
    anonymous = tmp_path / "prices.csv"
    shutil.copy(btc_daily_csv, anonymous)
    assert main(["spot", "--strategy", "rsi", "--csv", str(anonymous)]) == 2
    assert "the file name does not say the symbol" in capsys.readouterr().err
    assert main(["spot", "--strategy", "rsi", "--csv", str(anonymous), "--symbol", "BTC/USD"]) == 0
    capsys.readouterr()
    assert main(["spot", "--strategy", "rsi", "--csv", str(btc_daily_csv), "--symbol", "ETH/USDT"]) == 2
    assert "--symbol ETH/USDT contradicts" in capsys.readouterr().err
    assert main(["options", "--underlying", "ETH", "--csv", str(btc_daily_csv), "--config", str(CONFIG)]) == 2
    assert "--underlying ETH contradicts" in capsys.readouterr().err
