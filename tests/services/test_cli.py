"""The seed's command-line tools: check-strategy, check-price, check-options and tap."""
from __future__ import annotations

import json
import threading
import time

import pytest
import zmq

from common.bus import Publisher, Replier
from common.bus_auth import stop_zap
from services.cli import check_options_ibkr_main, check_options_main, check_price_main, check_strategy_main, tap_main
from tests.support.stack import stack_config, stack_security


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A config on free ports with no stack behind it: the tools build the sim feed in-process."""
    cfg = stack_config()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    return path, cfg


def run_json(capsys, main, argv):
    code = main(argv)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_check_strategy_prints_the_signal_of_the_latest_bar(capsys, config):
    path, _ = config
    code, doc = run_json(capsys, check_strategy_main, ["momentum", "BTC/USDT", "1h", "--config", str(path)])
    assert code == 0
    assert doc["strategy"] == "momentum" and doc["symbol"] == "BTC/USDT" and doc["timeframe"] == "1h"
    assert doc["signal"] in (-1, 0, 1) and doc["price"] > 0 and doc["enough_history"] is True
    assert "roc" in " ".join(doc["indicators"]).lower() and doc["source"] == "local sim feed"
    code, pair = run_json(capsys, check_strategy_main,
                          ["pairs_spread", "BTC/USDT", "1d", "ETH/USDT", "--config", str(path)])
    assert code == 0 and pair["signal"] in (-1, 0, 1)


@pytest.mark.parametrize("argv, fragment", [
    (["nosuch", "BTC/USDT", "1h"], "unknown strategy 'nosuch'"),
    (["momentum", "DOGE/USDT", "1h"], "DOGE/USDT"),
    (["momentum", "BTC/USDT", "1h", "--params", "{bad"], "--params: not JSON"),
    (["momentum", "BTC/USDT", "1h", "--params", '{"period": -3}'], "momentum.period"),
])
def test_check_strategy_names_what_is_wrong(capsys, config, argv, fragment):
    path, _ = config
    code, doc = run_json(capsys, check_strategy_main, [*argv, "--config", str(path)])
    assert code == 1 and fragment in doc["error"]


def test_check_price_prints_each_symbol_and_refuses_unknown_ones(capsys, config):
    path, _ = config
    code, doc = run_json(capsys, check_price_main, ["BTC/USDT", "ETH/USDT", "SOL/USDT", "--config", str(path)])
    assert code == 0 and all(doc[s] > 0 for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT"))
    code, doc = run_json(capsys, check_price_main, ["XRP/USDT", "--config", str(path)])
    assert code == 1 and "no price for XRP/USDT" in doc["error"]


def test_check_price_asks_the_running_marketdata_with_the_read_only_key(capsys, config, tmp_path):
    path, cfg = config
    ctx = zmq.Context()
    callers = []
    rep = Replier(ctx, cfg["endpoints"]["marketdata"]["rep"], "marketdata",
                  {"status": lambda _b: {"market_ts": 7},
                   "prices": lambda _b: {"prices": {"BTC/USDT": {"price": 5.0}}}},
                  security=stack_security(cfg, tmp_path, "marketdata"))
    real_answer = rep.answer
    rep.answer = lambda raw, caller=None: (callers.append(caller), real_answer(raw, caller))[1]
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if rep.socket.poll(20):
                rep.serve_pending()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        code, doc = run_json(capsys, check_price_main, ["BTC/USDT", "--config", str(path)])
    finally:
        stop.set()
        thread.join()
        rep.close()
        stop_zap(ctx)
        ctx.term()
    assert code == 0 and doc == {"BTC/USDT": 5.0, "market_ts": 7, "source": "marketdata service"}
    assert set(callers) == {"reader"}


def test_tap_without_keys_names_the_directory_and_the_command(capsys, config, tmp_path):
    path, _ = config
    assert tap_main(["signal.", "--count", "1", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "state" / "keys") in err and "make keys" in err


def test_tap_prints_the_signal_stream_as_json_lines(capsys, config, tmp_path):
    path, cfg = config
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg["endpoints"]["signals"]["pub"], "signals",
                    security=stack_security(cfg, tmp_path, "signals"))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (tap_main(["signal.", "--count", "2", "--config", str(path)]), done.set()))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not done.is_set() and time.monotonic() < deadline:  # the tap joins late: keep publishing
            pub.publish("signal.momentum-btc", "signal", {"strategy_id": "momentum-btc", "signal": 1})
            pub.publish("heartbeat.signals", "heartbeat", {})
            time.sleep(0.05)
        thread.join(5)
    finally:
        pub.close()
        stop_zap(ctx)
        ctx.term()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    assert all(line["topic"] == "signal.momentum-btc" and line["body"]["signal"] == 1 for line in lines)


def test_check_options_says_why_nothing_happened_and_what_fits(capsys, config):
    path, _ = config
    code, doc = run_json(capsys, check_options_main, ["covered_calls", "BTC", "--capital", "1000",
                                                      "--config", str(path)])
    assert code == 0 and doc["actions"] == [] and doc["decision"] == "no trade"
    assert doc["reasons"][0].startswith("venue minimum: 0.1 contract(s) (0.1 BTC) of BTC-")
    assert "> budget min(cash, capital x spot_fraction 0.5) $500.00" in doc["reason"]
    code, micro = run_json(capsys, check_options_ibkr_main, ["covered_calls", "ETH", "--capital", "1000",
                                                              "--config", str(path)])
    assert code == 0 and micro["decision"] == "trade"
    [action] = micro["actions"]
    assert action["contract"].startswith("MET-") and action["side"] == -1  # a buy-write of micro ETH
    assert action["spot_coins"] == pytest.approx(action["quantity"] * 0.1) and action["quantity"] >= 1
    code, bad = run_json(capsys, check_options_main, ["wheel", "BTC", "--coins", "-1", "--config", str(path)])
    assert code == 1 and "--coins: must be a number >= 0" in bad["error"]


def test_tap_says_what_it_waits_for_and_gives_up_after_its_timeout(capsys, config, monkeypatch, tmp_path):
    path, cfg = config
    stack_security(cfg, tmp_path)  # the reader key exists: the tap waits rather than refuse
    monkeypatch.setattr("services.cli.TAP_NOTICE_SECONDS", 0.3)
    started = time.monotonic()
    assert tap_main(["signal.", "--timeout", "1", "--config", str(path)]) == 1
    assert 0.9 <= time.monotonic() - started < 5
    out, err = capsys.readouterr()
    endpoint = cfg["endpoints"]["signals"]["pub"]
    waiting = f"'signal.' on {endpoint} (endpoints.signals.pub in {path})"
    lines = err.splitlines()
    assert out == "" and lines[0] == f"tap: waiting for {waiting}; nothing has arrived yet"
    assert any(line.startswith("tap: nothing has arrived after 0 s from") or line.startswith(
        "tap: nothing has arrived after 1 s from") for line in lines[1:-1])
    assert lines[-1] == (f"tap: nothing arrived in 1 s from {waiting}. Start the stack (`go-trader start`) or check "
                         f"the topic prefix (docs/BUS.md lists them)")


@pytest.mark.parametrize("argv", [["--timeout", "-1"], ["--count", "-2"], ["--timeout", "inf"]])
def test_tap_refuses_a_negative_count_or_timeout(capsys, config, argv):
    path, _ = config
    with pytest.raises(SystemExit) as exit_:
        tap_main([*argv, "--config", str(path)])
    assert exit_.value.code == 2 and "--count and --timeout must be finite and >= 0" in capsys.readouterr().err
