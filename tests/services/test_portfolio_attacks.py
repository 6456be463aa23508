"""Attacks on the order socket from inside the keys: a local process holding the signal
engine's own key forges orders over REQ to the real portfolio (beside the real marketdata and
pricer, no signal engine). Every forgery is refused with a
reason that names it and no book moves; honest orders still fill, at the portfolio's own
prices, not the declared ones."""
from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from common.bus import RemoteError, Requester
from options.chain import chain_from_dict
from options.venues import DERIBIT
from tests.support import builders
from tests.support.builders import journal
from tests.support.stack import REPO, stack_config, stack_security

pytestmark = pytest.mark.timeout(180)
HOUR = 3_600_000
DAY = 24 * HOUR
ORDER_NUMBERS = itertools.count()


def run_service(name: str, config: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"services.{name}", "--config", str(config)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def wait_for(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """marketdata, pricer and portfolio at one market minute per second: one bar (1h) in
    flight is a minute of wall time, room enough to send an order on the market's time."""
    tmp = tmp_path_factory.mktemp("orders")
    cfg = stack_config(speed=60)
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    # The attacker holds the signals key, the one key allowed to order: past the bus's own
    # authentication, only the portfolio's checks stand between a forged order and the books.
    signals_key = stack_security(cfg, tmp, "signals")
    procs = {name: run_service(name, path, tmp) for name in ("marketdata", "pricer", "portfolio")}
    ctx = zmq.Context()
    clients = {name: Requester(ctx, cfg["endpoints"][name]["rep"], "attacker", timeout_ms=3000, retries=20,
                               security=signals_key)
               for name in procs}
    try:
        wait_for(lambda: len(clients["portfolio"].request("snapshot")["prices"]) == 3, 60, "portfolio prices")
        wait_for(lambda: len(clients["pricer"].request("status")["spot"]) == 3, 60, "pricer spot prices")
        yield clients, tmp / "state"
    finally:
        for client in clients.values():
            client.close()
        ctx.term()
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.communicate(timeout=30)


def market(clients) -> dict[str, Any]:
    return clients["marketdata"].request("prices")


def spot_order(sid: str, symbol: str, price: float, ts: int) -> dict[str, Any]:
    """A forged order's id names its declared price too: each forgery is a new order, not a duplicate."""
    return builders.spot_order(sid, symbol, price, ts, order_id=f"{sid}:{ts}:{price!r}")


def books(clients) -> dict[str, tuple[float, int]]:
    strategies = clients["portfolio"].request("snapshot")["strategies"]
    return {sid: (v["cash"], v["trade_count"]) for sid, v in strategies.items()}


def send_until_decided(clients, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """As the signal engine does: an answer "retry" keeps the order, which is sent again."""
    return wait_for(lambda: (lambda ack: ack if ack["status"] != "retry" else None)(
        clients["portfolio"].request(kind, body)), 30, f"{kind} decided")


def option_leg(contract: dict[str, Any], *, side: int = -1, quantity: float = 0.1, premium: float,
               score: float = 0.7) -> dict[str, Any]:
    return {"contract": contract, "side": side, "quantity": quantity, "premium_usd_per_coin": premium,
            "greeks": {"delta": 0.1}, "score": score, "reason": "forged", "action": "open"}


def option_order(ts: int, *legs: dict[str, Any], sid: str = "deribit-vol-btc") -> dict[str, Any]:
    return {"order_id": f"{sid}:{ts}:{next(ORDER_NUMBERS)}", "strategy_id": sid, "ts_event": ts,
            "spot": 90_000.0, "legs": list(legs)}


def listed_call(clients) -> tuple[dict[str, Any], float, int]:
    """A listed far-from-the-money BTC call on Deribit (contract, mark, market time) from the pricer."""
    chain = chain_from_dict(clients["pricer"].request("chain", {"underlying": "BTC", "venue": "deribit",
                                                                 "horizon_days": 40}))
    rows = [i for i in range(len(chain)) if chain.is_call[i] and chain.strike[i] > chain.spot * 1.2]
    row = rows[len(rows) // 2]
    return chain.contract(row).to_dict(), float(chain.mark[row]), chain.ts


def test_forged_spot_orders_are_refused_and_no_book_moves(services):
    clients, state_dir = services
    before = books(clients)
    ts = market(clients)["prices"]["ETH/USDT"]["ts"]
    cases = [
        (spot_order("momentum-eth", "ETH/USDT", 0.01, ts), "-100.00% from the portfolio's mark"),
        (spot_order("momentum-btc", "FAKE/USDT", 1.0, ts), "'FAKE/USDT' is not traded by momentum-btc"),
        (spot_order("momentum-btc", "ETH/USDT", 3_000.0, ts), "'ETH/USDT' is not traded by momentum-btc"),
        (spot_order("momentum-btc", "BTC/USDT", 1e-304, ts), "band ±5%"),
        (spot_order("momentum-btc", "BTC/USDT", 90_000.0, ts - 2 * HOUR), "back-dated"),
        (spot_order("momentum-btc", "BTC/USDT", 90_000.0, ts + 30 * 24 * HOUR), "dated in the future"),
    ]
    for body, fragment in cases:
        ack = clients["portfolio"].request("order", body)
        assert ack["status"] == "rejected" and fragment in ack["reason"], (body, ack)
        assert ack["fill"] is None
    for price in (math.nan, math.inf, -1.0):
        with pytest.raises(RemoteError) as err:
            clients["portfolio"].request("order", spot_order("momentum-btc", "BTC/USDT", price, ts))
        assert err.value.code == "bad_order" and "order.price" in err.value.message
    assert books(clients) == before and journal(state_dir) == []


def test_forged_option_orders_are_refused_and_no_book_moves(services):
    clients, state_dir = services
    before = books(clients)
    contract, mark, ts = listed_call(clients)
    unlisted = {**contract, "strike": contract["strike"] + 1.0}
    thousand = {**contract, "multiplier": 1000.0}
    cases = [
        (option_order(ts, option_leg(unlisted, premium=mark)), "not listed in the pricer's deribit BTC chain"),
        (option_order(ts, option_leg(thousand, premium=mark)), "multiplier 1000 is not deribit's 1"),
        (option_order(ts, option_leg(contract, premium=mark, quantity=1e6)), "more than 10 x the book's value"),
        (option_order(ts, option_leg(contract, premium=mark, quantity=0.123)), "not a multiple of 0.1"),
        (option_order(ts, option_leg(contract, premium=mark * 3 + 2_000.0)), "from the portfolio's mark"),
        (option_order(ts, option_leg(contract, premium=mark, score=5.0)), "declared score 5.000 is above"),
        (option_order(ts - 2 * DAY, option_leg(contract, premium=mark)), "back-dated"),  # options read 1d bars
        (option_order(ts, option_leg({**contract, "venue": "ibkr", "multiplier": 0.1}, premium=mark)),
         "ibkr BTC is not traded by this strategy"),
    ]
    for body, fragment in cases:
        ack = send_until_decided(clients, "option_order", body)
        assert ack["status"] == "rejected" and fragment in ack["reason"], (body["legs"][0]["contract"], ack)
        assert ack["fills"] == []
    for quantity in (math.nan, math.inf):
        with pytest.raises(RemoteError) as err:
            clients["portfolio"].request("option_order", option_order(ts, option_leg(contract, premium=mark,
                                                                                      quantity=quantity)))
        assert err.value.code == "bad_order" and "quantity" in err.value.message
    assert books(clients) == before and journal(state_dir) == []


def test_honest_orders_fill_at_the_portfolio_prices_not_the_declared_ones(services):
    clients, state_dir = services
    tick = market(clients)["prices"]["BTC/USDT"]
    declared = tick["price"] * 1.03  # within the band: accepted, but not the price it fills at
    ack = send_until_decided(clients, "order", spot_order("momentum-btc", "BTC/USDT", declared, tick["ts"]))
    assert ack["status"] == "filled" and ack["fill"]["price"] == tick["price"]  # slippage 0 in the default config
    contract, mark, ts = listed_call(clients)
    ack = send_until_decided(clients, "option_order", option_order(ts, option_leg(contract, premium=mark, score=0.5)))
    assert ack["status"] == "filled", ack
    (fill,) = ack["fills"]
    assert fill["extra"]["multiplier"] == DERIBIT.underlying("BTC").multiplier
    assert fill["price"] == pytest.approx(mark, rel=0.05) and fill["extra"]["score"] > 0.7  # its own score
    assert [(f["strategy_id"], f["kind"]) for f in journal(state_dir)] == [("momentum-btc", "spot"),
                                                                          ("deribit-vol-btc", "option")]
