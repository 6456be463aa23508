"""Every CLI with the stack down (nothing listening on the configured endpoints) and with a live
config whose exchange is a closed loopback port (no network): each names what it tried, what
failed and what to do next, on stderr, with a non-zero exit unless it could answer anyway."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.ports import free_port
from services import download_data
from services.cli import check_options_ibkr_main, check_options_main, check_price_main, check_strategy_main, tap_main
from services.go_trader import main as go_trader_main
from tests.support.stack import REPO, stack_config, stack_security

pytestmark = pytest.mark.timeout(120)

CLIS = [
    ("check-strategy", check_strategy_main, ["momentum", "BTC/USDT", "1h"]),
    ("check-price", check_price_main, ["BTC/USDT"]),
    ("check-options", check_options_main, ["vol_mean_reversion", "BTC"]),
    ("check-options-ibkr", check_options_ibkr_main, ["wheel", "ETH"]),
]


@pytest.fixture
def sim(tmp_path) -> tuple[Path, dict]:
    doc = stack_config()
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(doc))
    return path, doc


@pytest.fixture
def live(tmp_path) -> tuple[Path, dict, str]:
    """config/live.json on free ports, its exchange and Deribit at a loopback port nobody listens on."""
    doc = stack_config(json.loads((REPO / "config" / "live.json").read_text()), speed=1)
    closed = f"http://127.0.0.1:{free_port()}"
    doc["feed"]["live"].update(binance_url=closed, deribit_url=f"{closed}/api/v2")
    path = tmp_path / "live.json"
    path.write_text(json.dumps(doc))
    return path, doc, closed


def run(monkeypatch, prog: str, main, argv: list[str]) -> int:
    monkeypatch.setattr(sys, "argv", [prog, *argv])  # as the console script sets it
    return main(argv)


@pytest.mark.parametrize("prog, main, argv", CLIS)
def test_with_the_stack_down_the_check_tools_say_so_and_answer_from_a_local_sim_feed(monkeypatch, capsys, sim,
                                                                                   prog, main, argv):
    path, doc = sim
    assert run(monkeypatch, prog, main, [*argv, "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["source"].startswith("local sim feed")
    assert err == (f"{prog}: marketdata at {doc['endpoints']['marketdata']['rep']} (endpoints.marketdata.rep in "
                   f"{path}) did not answer; using a local sim feed instead\n")


@pytest.mark.parametrize("prog, main, argv", CLIS)
def test_with_no_network_the_check_tools_name_the_endpoint_the_exchange_and_what_to_do(monkeypatch, capsys, live,
                                                                                     prog, main, argv):
    path, doc, closed = live
    assert run(monkeypatch, prog, main, [*argv, "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert line.startswith(f"{prog}: marketdata at {doc['endpoints']['marketdata']['rep']} (endpoints.marketdata.rep "
                           f"in {path}) did not answer, and a local live feed got no data from binanceus ({closed}): ")
    assert f"GET {closed}/" in line and line.endswith(
        f"Check the network (or feed.live in {path}), or start the stack (`go-trader start`)")
    assert json.loads(out)["error"] == line[len(prog) + 2:]


def test_check_price_names_the_feed_and_its_symbols_for_an_unknown_symbol(monkeypatch, capsys, sim):
    path, _ = sim
    assert run(monkeypatch, "check-price", check_price_main, ["XRP/USDT", "--config", str(path)]) == 1
    error = "no price for XRP/USDT from the local sim feed; it has BTC/USDT, ETH/USDT, SOL/USDT (feed.symbols)"
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": error} and err.splitlines()[-1] == f"check-price: {error}"


@pytest.mark.parametrize("which", ["sim", "live"])
def test_tap_with_the_stack_down_names_the_endpoint_and_gives_up_after_its_timeout(monkeypatch, capsys, sim, live,
                                                                                 which):
    path, doc = sim if which == "sim" else live[:2]
    stack_security(doc, path.parent)  # keys made: what is down is the stack, not the key directory
    monkeypatch.chdir(path.parent)
    assert run(monkeypatch, "tap", tap_main, ["--timeout", "0.5", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    endpoint = doc["endpoints"]["signals"]["pub"]
    assert out == "" and err.splitlines()[-1].startswith(
        f"tap: nothing arrived in 0.5 s from 'signal.' on {endpoint} (endpoints.signals.pub in {path}). "
        f"Start the stack (`go-trader start`)")


@pytest.mark.parametrize("command", [["status"], ["restart", "signals"]])
def test_go_trader_with_the_stack_down_names_the_pidfile_and_how_to_start(capsys, sim, tmp_path, command):
    path, _ = sim
    conf = tmp_path / "supervisord.conf"
    conf.write_text((REPO / "supervisord.conf").read_text())
    assert go_trader_main([*command, "--config", str(path), "--conf", str(conf)]) == 2
    assert capsys.readouterr().err == (
        f"go-trader: {command[0]}: the stack is not running "
        f"(no live supervisord in {tmp_path / 'run' / 'supervisord.pid'}); "
        f"start it with `go-trader start` (or `go-trader --config FILE` in the foreground)\n")


def test_go_trader_reset_risk_with_the_stack_down_names_the_portfolio_endpoint(capsys, live, monkeypatch):
    path, doc, _ = live
    stack_security(doc, path.parent)
    monkeypatch.chdir(path.parent)
    assert go_trader_main(["reset-risk", "momentum-btc", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(
        f"go-trader: reset-risk: the portfolio at {doc['endpoints']['portfolio']['rep']} (endpoints.portfolio.rep in "
        f"{path}) did not answer; start the stack")


def test_download_data_with_no_network_names_the_exchange_and_what_to_do(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(download_data, "MAX_ATTEMPTS", 1)  # no backoff waits in a test
    closed = f"http://127.0.0.1:{free_port()}"
    code = download_data.main(["--symbols", "BTC/USDT", "--since", "2024-01-01", "--until", "2024-01-02",
                               "--out", str(tmp_path), "--api-url", closed, "--no-progress"])
    [line] = capsys.readouterr().err.splitlines()
    assert code == 1 and line.startswith(f"download-data: binanceus ({closed}) did not answer: ")
    assert f"GET {closed}/" in line and line.endswith(
        "Check the network (or --api-url), then run the same command again to resume")
