"""The backtest command: each subcommand runs end to end on real bars and says what is wrong."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from backtest.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_spot_strategy_on_a_csv_writes_a_report(btc_csv, tmp_path, capsys):
    code = main(["spot", "--strategy", "sma_crossover", "--params", '{"fast": 10, "slow": 30}', "--csv", str(btc_csv),
                 "--since", "2022-06-01", "--fee-pct", "0.2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "sma_crossover" in out and "bars/s" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["start_ts"] == 1654041600000  # 2022-06-01 00:00 UTC
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_spot_config_entry_uses_its_params_and_limits(btc_csv, capsys):
    assert main(["spot", "--config", str(REPO / "config" / "default.json"), "--id", "momentum-btc",
                 "--csv", str(btc_csv), "--since", "2022-01-01"]) == 0
    assert "momentum-btc" in capsys.readouterr().out


def test_spot_every_config_entry_from_a_data_dir(btc_csv, capsys):
    assert main(["spot", "--config", str(REPO / "config" / "default.json"), "--all", "--data-dir",
                 str(btc_csv.parent), "--since", "2021-10-01"]) == 0
    out = capsys.readouterr().out
    assert "14 backtest(s)" in out and "pairs-eth-sol" in out


def test_spot_on_the_simulator(capsys):
    assert main(["spot", "--strategy", "rsi", "--sim", "--days", "30", "--seed", "3"]) == 0
    assert "rsi" in capsys.readouterr().out


def test_options_and_walkforward(btc_csv, tmp_path, capsys):
    assert main(["options", "--underlying", "BTC", "--since", "2021-01-01", "--until", "2021-03-01", "--capital",
                 "100000", "--max-positions", "4", "--venue", "deribit", "--csv", str(btc_csv),
                 "--out", str(tmp_path / "opt")]) == 0
    assert (tmp_path / "opt" / "deribit-wheel-btc" / "report.html").exists()
    assert main(["walkforward", "--strategy", "sma_crossover", "--csv", str(btc_csv), "--since", "2022-01-01",
                 "--train-bars", "2000", "--test-bars", "1000", "--grid", '{"fast": [10, 20], "slow": [50]}',
                 "--workers", "1", "--out", str(tmp_path / "wf")]) == 0
    report = json.loads((tmp_path / "wf" / "walkforward.json").read_text())
    assert report["summary"]["candidates"] == 2 and report["summary"]["windows"] >= 3
    assert "oos_compounded_return_pct" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["spot", "--strategy", "sma_crossover"], "exactly one bar source"),
    (["spot", "--strategy", "sma_crossover", "--sim", "--params", "{fast: 1}"], "--params: not valid JSON"),
    (["spot", "--strategy", "sma_crossover", "--sim", "--params", '{"fast": 60}'], "fast must be < slow"),
    (["spot", "--strategy", "nope", "--sim"], "unknown strategy"),
    (["spot", "--csv", "/no/such.csv", "--strategy", "rsi"], "CSV file not found"),
    (["spot", "--config", "config/default.json", "--sim"], "--id ID or --all"),
    (["spot", "--strategy", "rsi", "--sim", "--since", "yesterday"], "--since"),
    (["walkforward", "--strategy", "rsi", "--sim", "--days", "10", "--train-bars", "200", "--test-bars", "100",
      "--cluster", "spark://h:1"], "--cluster"),
])
def test_bad_command_lines_exit_2_with_the_reason(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_cluster_that_does_not_answer_exits_2_naming_it(capsys, monkeypatch):
    import ray

    def refuse(**_kwargs):
        raise ConnectionError("ray client connection timeout")
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.chdir(REPO)
    assert main(["walkforward", "--strategy", "rsi", "--sim", "--days", "20", "--train-bars", "200",
                 "--test-bars", "100", "--cluster", "ray://127.0.0.1:9"]) == 2
    assert "--cluster ray://127.0.0.1:9: no ray client server answered there" in capsys.readouterr().err
