"""Attacks on the bus of a real stack, as any local process could try them: order without the
signals key, publish fake $1 prices and heartbeats from a service's port while it is down,
and answer requests in its place. None of it reaches the books, and /healthz tells the truth."""
from __future__ import annotations

import time

import pytest
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from bench.ports import bind_when_free
from common.bus import RemoteError, Requester, RequestFailed, decode_envelope, encode_envelope
from common.bus_auth import public_path
from common.model import Fill
from tests.support.stack import Stack, stack_config

pytestmark = pytest.mark.timeout(240)
FAKE_PRICE = 1.0
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                    zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def rogue_socket(ctx: zmq.Context, kind: int, with_key: bool) -> zmq.Socket:
    """A socket of a process that has no go-trader key: plain, or CURVE with a key pair of its own."""
    sock = ctx.socket(kind)
    sock.linger = 0
    if with_key:
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    return sock


def raw_request(ctx: zmq.Context, endpoint: str, frame: bytes, server_key: bytes | None) -> bytes | None:
    """One request from a keyless process (plain REQ, or a CURVE client with a random key that
    pins the real server key); the reply, or None when none comes."""
    sock = rogue_socket(ctx, zmq.REQ, with_key=server_key is not None)
    if server_key is not None:
        sock.curve_serverkey = server_key
    sock.connect(endpoint)
    try:
        sock.send(frame)
        return sock.recv() if sock.poll(1500) else None
    finally:
        sock.close()


def fills_at_fake_prices(stack: Stack) -> list[Fill]:
    return [f for f in map(Fill.from_dict, stack.journal()) if f.kind != "option" and f.price <= FAKE_PRICE * 2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One stack for both attacks: the refused orders move no book, and the rogue test ends with
    the real marketdata back and /healthz healthy."""
    with Stack(tmp_path_factory.mktemp("bus-auth"), stack_config()) as running:
        yield running


def test_only_the_signals_key_places_orders(stack):
    eps = stack.config["endpoints"]
    status = stack.wait_for(lambda: (s := stack.status())["market_ts"] and s["prices"] and s, 60, "prices")
    keys = stack.security().directory
    portfolio_key = zmq.auth.load_certificate(public_path(keys, "portfolio"))[0]

    def order(n: int) -> dict:
        return {"order_id": f"momentum-btc:attack-{n}", "strategy_id": "momentum-btc", "symbol": "BTC/USDT",
                "signal": 1, "price": status["prices"]["BTC/USDT"], "ts_event": status["market_ts"]}

    ctx = zmq.Context()
    try:
        for n, server_key in enumerate((None, portfolio_key)):
            frame = encode_envelope("order", order(n), "signals")
            assert raw_request(ctx, eps["portfolio"]["rep"], frame, server_key) is None
        reader = Requester(ctx, eps["portfolio"]["rep"], "tap", timeout_ms=3000, retries=1,
                           security=stack.security())
        with pytest.raises(RemoteError) as refused:
            reader.request("order", order(2))
        assert refused.value.code == "forbidden"
        with pytest.raises(RemoteError) as refused:
            reader.request("option_order", {"order_id": "x"})
        assert refused.value.code == "forbidden"
        assert reader.request("status")["journal_seq"] >= 0  # the read-only key reads
        reader.close()
        signals = Requester(ctx, eps["portfolio"]["rep"], "signals", timeout_ms=3000, retries=1,
                            security=stack.security("signals"))
        ack = signals.request("order", order(3))  # the same order, with the key that may send it
        assert ack["order_id"] == "momentum-btc:attack-3"
        signals.close()
    finally:
        ctx.term()
    attacks = {f"momentum-btc:attack-{n}" for n in range(3)}
    assert not attacks & {r["order_id"] for r in stack.journal()}


def test_a_rogue_on_a_stopped_services_ports_is_believed_by_no_one(stack):
    eps = stack.config["endpoints"]["marketdata"]
    stack.wait_for(lambda: sum(v["trade_count"] for v in stack.status()["strategies"].values()) >= 1, 60,
                   "first trade")
    symbols = list(stack.status()["prices"])
    assert stack.ctl("stop", "marketdata").returncode == 0
    ctx = zmq.Context()
    security = stack.security()
    reader = Requester(ctx, eps["rep"], "tap", timeout_ms=500, retries=1, security=security)
    try:
        for with_key in (False, True):
            pub = rogue_socket(ctx, zmq.PUB, with_key)
            rep = rogue_socket(ctx, zmq.REP, with_key)
            if with_key:
                pub.curve_server = rep.curve_server = True
            monitor = pub.get_monitor_socket()
            for sock, endpoint in ((pub, eps["pub"]), (rep, eps["rep"])):  # the ports and their local aliases
                for address in {endpoint, security.address(endpoint)}:
                    bind_when_free(lambda: sock.bind(address))  # the last round's rogue may still hold it
            requests_seen = handshakes_failed = 0
            market_ts = stack.status()["market_ts"]
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                for seq, symbol in enumerate(symbols, 1):
                    pub.send_multipart([f"tick.{symbol}".encode(), encode_envelope(
                        "tick", {"symbol": symbol, "price": FAKE_PRICE, "ts": market_ts + 3_600_000},
                        "marketdata", seq)])
                pub.send_multipart([b"heartbeat.marketdata", encode_envelope(
                    "heartbeat", {"service": "marketdata", "problems": []}, "marketdata", 1)])
                if rep.poll(0):
                    requests_seen += 1
                    request = decode_envelope(rep.recv())
                    rep.send(encode_envelope("reply", {"re": request.id, "ok": True, "result": {
                        "prices": {s: {"price": FAKE_PRICE, "ts": market_ts} for s in symbols}}}, "marketdata"))
                while monitor.poll(0):
                    event = recv_monitor_message(monitor)
                    handshakes_failed += event["event"] in HANDSHAKE_FAILED
                time.sleep(0.05)
            with pytest.raises(RequestFailed):
                reader.request("prices")  # pinned to the real marketdata key: the rogue cannot answer
            status = stack.status()
            code, health = stack.http("/healthz")
            pub.disable_monitor()
            for sock in (monitor, pub, rep):
                sock.close()
            assert requests_seen == 0, "a request reached the rogue replier"
            assert handshakes_failed > 0, "no service even tried the rogue publisher"
            assert all(price > FAKE_PRICE * 2 for price in status["prices"].values()), status["prices"]
            assert code == 503 and health["services"]["marketdata"]["alive"] is False
        assert fills_at_fake_prices(stack) == []
    finally:
        ctx.destroy(linger=0)  # the rogue sockets too, when an assertion left them open
    assert stack.ctl("start", "marketdata").returncode == 0
    stack.wait_for(lambda: stack.http("/healthz")[0] == 200, 30, "/healthz healthy with the real marketdata")
