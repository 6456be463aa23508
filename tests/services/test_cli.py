"""The seed's command-line tools: check-strategy, check-price and tap."""
from __future__ import annotations

import json
import threading
import time

import pytest
import zmq

from common.bus import Publisher, Replier
from common.bus_auth import stop_zap
from services.cli import check_price_main, check_strategy_main, tap_main
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
    code, pair = run_json(capsys, check_strategy_main, ["pairs_spread", "BTC/USDT", "1d", "ETH/USDT", "--config", str(path)])
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
                  {"status": lambda _b: {"market_ts": 7}, "prices": lambda _b: {"prices": {"BTC/USDT": {"price": 5.0}}}},
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
    pub = Publisher(ctx, cfg["endpoints"]["signals"]["pub"], "signals", security=stack_security(cfg, tmp_path, "signals"))
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
