"""The authenticated bus: key files and their modes, who may ask what, the ZAP handler, and
real CURVE sockets on loopback refusing rogue binders and unknown clients."""
from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import zmq
import zmq.auth

from bench.ports import bind_when_free
from common.bus import Publisher, RemoteError, Replier, Requester, RequestFailed, Subscriber, encode_envelope
from common.bus_auth import (
    IDENTITIES,
    READ_REQUESTS,
    BusKeysError,
    ensure_zap,
    generate_keys,
    load_security,
    may_request,
    public_path,
    recv_monitor_message,
    secret_path,
    stop_zap,
    zap_handler,
    zap_reply,
)
from config.schema import local_alias


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def keys(tmp_path) -> Path:
    directory = tmp_path / "run" / "keys"
    generate_keys(directory)
    return directory


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    stop_zap(c)
    c.destroy(linger=0)


# ---- key files ------------------------------------------------------------------------------

def test_keys_are_made_once_in_a_private_directory_whatever_the_umask(tmp_path):
    directory = tmp_path / "run" / "keys"
    old = os.umask(0)  # the most permissive umask must not leak a secret
    try:
        assert generate_keys(directory) == list(IDENTITIES)
    finally:
        os.umask(old)
    assert mode(directory) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f"{n}.key" for n in IDENTITIES] + [f"{n}.key_secret" for n in IDENTITIES])
    for name in IDENTITIES:
        assert mode(secret_path(directory, name)) == 0o600
        assert mode(public_path(directory, name)) == 0o644
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert generate_keys(directory) == []  # a second run keeps every key
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_key_files_are_zeromq_certificates_that_zmq_auth_reads(keys):
    public, secret = zmq.auth.load_certificate(secret_path(keys, "reader"))
    assert len(public) == len(secret) == 40
    assert zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(public_path(keys, "reader")) == (public, None)


def test_a_lost_public_file_is_rebuilt_from_its_secret(keys):
    public = zmq.auth.load_certificate(public_path(keys, "pricer"))[0]
    public_path(keys, "pricer").unlink()
    assert generate_keys(keys) == []
    assert zmq.auth.load_certificate(public_path(keys, "pricer"))[0] == public


def test_a_loose_directory_is_tightened_when_keys_are_made(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o755)
    generate_keys(directory)
    assert mode(directory) == 0o700


def test_security_pins_each_endpoint_to_the_key_of_the_service_that_binds_it(keys):
    binds = {"marketdata": ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2"), "pricer": ("ipc:///tmp/p",)}
    sec = load_security(keys, "portfolio", binds)
    md = zmq.auth.load_certificate(public_path(keys, "marketdata"))[0]
    assert sec.identity == "portfolio" and sec.server_keys == {
        "tcp://127.0.0.1:1": md, "tcp://127.0.0.1:2": md,
        "ipc:///tmp/p": zmq.auth.load_certificate(public_path(keys, "pricer"))[0]}
    assert sorted(sec.clients.values()) == sorted(IDENTITIES)
    assert all(len(raw) == 32 for raw in sec.clients)


@pytest.mark.parametrize("damage, fragment", [
    (shutil.rmtree, "does not exist; create the keys with make keys"),
    (lambda d: secret_path(d, "signals").unlink(), "signals.key_secret is missing; create the keys with make keys"),
    (lambda d: public_path(d, "reader").unlink(), "reader.key is missing"),
    (lambda d: secret_path(d, "signals").chmod(0o644), "mode 644, readable or writable by others: run chmod 600"),
    (lambda d: d.chmod(0o755), "directory"),
    (lambda d: secret_path(d, "signals").write_text("junk"), "holds no public-key line"),
    (lambda d: secret_path(d, "signals").write_text(public_path(d, "signals").read_text()), "no secret-key line"),
    (lambda d: public_path(d, "signals").write_text(public_path(d, "pricer").read_text()), "do not match"),
])
def test_missing_or_exposed_keys_stop_with_the_file_and_the_fix(keys, damage, fragment):
    damage(keys)
    with pytest.raises(BusKeysError) as err:
        load_security(keys, "signals", {})
    assert fragment in str(err.value) and str(keys) in str(err.value)


def test_an_unknown_identity_has_no_key(keys):
    with pytest.raises(BusKeysError, match="'signals-test' has no bus key; the identities are marketdata"):
        load_security(keys, "signals-test", {})


def test_connecting_to_an_endpoint_no_service_binds_is_refused(keys, ctx):
    sec = load_security(keys, "reader", {"signals": ("tcp://127.0.0.1:5562",)})
    sock = ctx.socket(zmq.SUB)
    with pytest.raises(BusKeysError, match="no service binds tcp://127.0.0.1:9 in the config"):
        sec.connect(sock, "tcp://127.0.0.1:9")
    sock.close()


# ---- who may ask what (pure) ----------------------------------------------------------------

@pytest.mark.parametrize("caller, request_type, allowed", [
    ("signals", "order", True),
    ("signals", "option_order", True),
    ("reader", "order", False),
    ("reader", "option_order", False),
    ("portfolio", "order", False),
    ("gateway", "order", False),
    ("reader", "status", True),
    ("reader", "snapshot", True),
    ("reader", "history", True),
    ("reader", "reset", False),  # the read-only key is refused anything not known to be a read
    ("reader", "reset_risk", False),
    ("signals", "reset_risk", False),
    ("operator", "reset_risk", True),
    ("operator", "order", False),
    ("operator", "snapshot", True),
    ("operator", "something_else", False),
    ("gateway", "equity", True),
    ("portfolio", "mark", True),
    ("pricer", "some_new_read", True),
    ("", "status", False),
    ("mallory", "status", False),
])
def test_only_signals_may_order_and_the_reader_only_reads(caller, request_type, allowed):
    refusal = may_request(caller, request_type)
    assert (refusal is None) is allowed
    if not allowed:
        assert request_type in refusal or "unknown caller" in refusal


def test_every_read_request_is_open_to_the_reader():
    assert all(may_request("reader", kind) is None for kind in READ_REQUESTS)


# ---- the ZAP handler's answer (pure) -----------------------------------------------------------

KNOWN = {b"k" * 32: "signals"}


@pytest.mark.parametrize("request_frames, status, user_id", [
    ([b"1.0", b"7", b"go-trader", b"127.0.0.1", b"", b"CURVE", b"k" * 32], b"200", b"signals"),
    ([b"1.0", b"7", b"go-trader", b"127.0.0.1", b"", b"CURVE", b"x" * 32], b"400", b""),
    ([b"1.0", b"7", b"go-trader", b"127.0.0.1", b"", b"NULL"], b"400", b""),
    ([b"1.0", b"7", b"go-trader", b"127.0.0.1", b"", b"PLAIN", b"user", b"pass"], b"400", b""),
    ([b"2.0", b"7", b"go-trader", b"127.0.0.1", b"", b"CURVE", b"k" * 32], b"400", b""),
    ([b"1.0", b"7"], b"400", b""),
])
def test_zap_admits_only_known_curve_keys_and_names_them(request_frames, status, user_id):
    reply = zap_reply(request_frames, KNOWN)
    assert reply[0] == b"1.0" and reply[1] == b"7" and reply[2] == status and reply[4] == user_id


# ---- real sockets ---------------------------------------------------------------------------

def serve(rep: Replier, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            if rep.socket.poll(20):
                rep.serve_pending()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def stranger(keys: Path, tmp_path: Path, binds: dict) -> object:
    """A client with a valid-looking key pair of its own, pinned to the real server keys."""
    other = tmp_path / "stranger"
    generate_keys(other)
    real = load_security(keys, "signals", binds)
    return replace(load_security(other, "signals", binds), server_keys=real.server_keys)


def receive_within(sub: Subscriber, publish, seconds: float) -> list:
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        publish()
        msg = sub.receive(20)
        if msg is not None:
            got.append(msg)
    return got


def test_a_subscriber_pins_a_key_per_endpoint_and_ignores_a_publisher_without_it(keys, tmp_path, tcp_endpoint):
    md, sig = tcp_endpoint(), tcp_endpoint()
    binds = {"marketdata": (md,), "signals": (sig,)}
    server_ctx, client_ctx = zmq.Context(), zmq.Context()
    real = Publisher(server_ctx, md, "marketdata", security=load_security(keys, "marketdata", binds))
    # signals' port held by a process with the marketdata key, not signals': it cannot pose as signals
    rogue = Publisher(server_ctx, sig, "signals", security=load_security(keys, "marketdata", binds))
    sub = Subscriber(client_ctx, [md, sig], ["tick."], security=load_security(keys, "reader", binds))
    try:
        got = receive_within(sub, lambda: (real.publish("tick.BTC", "tick", {"price": 90_000.0}),
                                           rogue.publish("tick.ETH", "tick", {"price": 1.0})), 1.5)
        topics = {topic for topic, _env in got}
        assert topics == {"tick.BTC"}
    finally:
        for closable in (real, rogue, sub):
            closable.close()
        stop_zap(server_ctx)
        server_ctx.destroy(linger=0)
        client_ctx.destroy(linger=0)


@pytest.mark.parametrize("aliased", [False, True], ids=["tcp", "local_alias"])
@pytest.mark.parametrize("rogue_kind", ["plain", "random_key"])
def test_a_rogue_publisher_on_a_services_port_reaches_no_subscriber_and_the_real_one_is_heard_after(
        keys, tcp_endpoint, rogue_kind, aliased):
    md = tcp_endpoint()
    binds = {"marketdata": (md,)}
    aliases = {md: local_alias(md)} if aliased else {}
    ctx, server_ctx = zmq.Context(), zmq.Context()
    rogue = ctx.socket(zmq.PUB)
    rogue.linger = 0
    if rogue_kind == "random_key":
        rogue.curve_server = True
        rogue.curve_publickey, rogue.curve_secretkey = zmq.curve_keypair()
    rogue.bind(aliases.get(md, md))  # where the subscriber connects
    sub = Subscriber(ctx, [md], ["tick."], security=load_security(keys, "portfolio", binds, aliases))
    frames = [b"tick.BTC/USDT", encode_envelope("tick", {"symbol": "BTC/USDT", "price": 1.0}, "marketdata", 1)]
    real = None
    try:
        assert receive_within(sub, lambda: rogue.send_multipart(frames), 1.5) == []
        rogue.close()
        # libzmq gives up on an endpoint after a mechanism mismatch; the subscriber reconnects it
        real = bind_when_free(lambda: Publisher(server_ctx, md, "marketdata",  # the rogue's port, let go a moment ago
                                                security=load_security(keys, "marketdata", binds, aliases)))
        got = receive_within(sub, lambda: real.publish("tick.BTC/USDT", "tick", {"price": 90_000.0}), 2.0)
        assert got and got[0][1].body == {"price": 90_000.0}
    finally:
        sub.close()
        if real is not None:
            real.close()
        end_contexts(server_ctx, ctx)


def end_contexts(server_ctx: zmq.Context, *clients: zmq.Context) -> None:
    """Stop the servers' ZAP handler and drop every context, sockets left open or not."""
    stop_zap(server_ctx)
    for c in (server_ctx, *clients):
        c.destroy(linger=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract Unix sockets are Linux's")
def test_a_service_binds_its_local_alias_beside_its_port_and_neighbours_connect_there(keys, tcp_endpoint):
    """Its neighbours on the host reach it through the alias (the same keys and handshake), a tap
    without the alias through the port; a second binder of the alias is refused by name."""
    md = tcp_endpoint()
    binds = {"marketdata": (md,)}
    alias = local_alias(md)
    assert alias is not None
    aliases = {md: alias}
    server_ctx, client_ctx = zmq.Context(), zmq.Context()
    real = Publisher(server_ctx, md, "marketdata", security=load_security(keys, "marketdata", binds, aliases))
    neighbour = Subscriber(client_ctx, [md], ["tick."], security=load_security(keys, "portfolio", binds, aliases))
    tap = Subscriber(client_ctx, [md], ["tick."], security=load_security(keys, "reader", binds))
    squatter = None
    try:
        assert neighbour.addresses == {md: alias} and tap.addresses == {md: md}
        for sub in (neighbour, tap):
            got = receive_within(sub, lambda: real.publish("tick.BTC/USDT", "tick", {"price": 1.0}), 1.0)
            assert got and got[0][1].body == {"price": 1.0}
        real.close()
        squatter = server_ctx.socket(zmq.PUB)
        squatter.linger = 0
        bind_when_free(lambda: squatter.bind(alias))  # holds the alias, not the port
        with pytest.raises(zmq.ZMQError, match=rf"cannot bind {re.escape(alias)}, the local alias of {md} \(config "
                                                r"bus.local_ipc\): Address already in use"):
            Publisher(server_ctx, md, "marketdata", security=load_security(keys, "marketdata", binds, aliases))
    finally:
        for closable in (neighbour, tap, real):
            closable.close()
        if squatter is not None:
            squatter.close()
        end_contexts(server_ctx, client_ctx)


def test_a_rogue_replier_gets_no_request_and_the_real_one_is_reached_once_back(keys, tcp_endpoint):
    rep_ep = tcp_endpoint()
    binds = {"portfolio": (rep_ep,)}
    ctx = zmq.Context()
    rogue = ctx.socket(zmq.REP)
    rogue.linger = 0
    rogue.bind(rep_ep)
    req = Requester(ctx, rep_ep, "signals", timeout_ms=300, retries=2, security=load_security(keys, "signals", binds))
    try:
        with pytest.raises(RequestFailed):
            req.request("status")
        assert not rogue.poll(0)  # the handshake failed: the rogue never saw the request
        rogue.close()
        server_ctx = zmq.Context()
        rep = bind_when_free(lambda: Replier(server_ctx, rep_ep, "portfolio", {"status": lambda _b: "up"},
                                             security=load_security(keys, "portfolio", binds)))
        stop = threading.Event()
        thread = serve(rep, stop)
        try:
            assert req.request("status", timeout_ms=1000, retries=5) == "up"
        finally:
            stop.set()
            thread.join()
            rep.close()
            stop_zap(server_ctx)
            server_ctx.destroy(linger=0)
    finally:
        req.close()
        ctx.destroy(linger=0)


def plain_replier(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A REP without CURVE bound at ``endpoint``: a rogue on a service's port."""
    sock = ctx.socket(zmq.REP)
    sock.linger = 0
    try:
        sock.bind(endpoint)
    except zmq.ZMQError:
        sock.close()
        raise
    return sock


def test_a_rogue_on_a_restarting_services_port_costs_the_requester_no_try_once_the_service_is_back(
        keys, tcp_endpoint):
    """The service goes away and a plain socket takes its port: the requester's reconnect breaks
    the handshake, and libzmq drops that peer for good. Without a fresh socket the next request
    could not be sent and lost its whole try; here one try of 1 s is enough."""
    rep_ep = tcp_endpoint()
    binds = {"portfolio": (rep_ep,)}
    ctx, server_ctx = zmq.Context(), zmq.Context()
    handlers = {"status": lambda _b: "up"}

    def real_service() -> tuple[Replier, threading.Event, threading.Thread]:
        rep = bind_when_free(lambda: Replier(server_ctx, rep_ep, "portfolio", handlers,
                                             security=load_security(keys, "portfolio", binds)))
        stop = threading.Event()
        return rep, stop, serve(rep, stop)

    def stop_service(rep: Replier, stop: threading.Event, thread: threading.Thread) -> None:
        stop.set()
        thread.join()
        rep.close()

    req = Requester(ctx, rep_ep, "signals", timeout_ms=1000, retries=1, security=load_security(keys, "signals", binds))
    try:
        service = real_service()
        assert req.request("status") == "up"
        stop_service(*service)
        rogue = bind_when_free(lambda: plain_replier(ctx, rep_ep))
        assert req.monitor is not None and req.monitor.poll(5000), "the reconnect to the rogue never failed"
        rogue.close()
        service = real_service()
        try:
            assert req.request("status") == "up"
        finally:
            stop_service(*service)
        assert req.stats.dropped["bus_handshake_failed"] == 1 and not req.stats.dropped["request_unsendable"]
    finally:
        req.close()
        stop_zap(server_ctx)
        server_ctx.destroy(linger=0)
        ctx.destroy(linger=0)


def test_a_replier_knows_its_caller_orders_need_the_signals_key(keys, tmp_path, tcp_endpoint):
    rep_ep = tcp_endpoint()
    binds = {"portfolio": (rep_ep,)}
    server_ctx, client_ctx = zmq.Context(), zmq.Context()
    orders = []
    errors = []
    rep = Replier(server_ctx, rep_ep, "portfolio",
                  {"order": lambda body: orders.append(body) or "filled", "status": lambda _b: "up"},
                  on_error=lambda kind, detail: errors.append((kind, detail)),
                  security=load_security(keys, "portfolio", binds))
    stop = threading.Event()
    thread = serve(rep, stop)

    def client(security, timeout_ms=1000):
        return Requester(client_ctx, rep_ep, "test", timeout_ms=timeout_ms, retries=1, security=security)

    try:
        reader = client(load_security(keys, "reader", binds))
        assert reader.request("status") == "up"
        with pytest.raises(RemoteError) as err:
            reader.request("order", {"price": 0.01})
        assert err.value.code == "forbidden" and "'reader' may not send 'order' (only signals)" in err.value.message
        with pytest.raises(RemoteError):
            reader.request("order", {"price": 0.01})
        assert errors == [("order", "forbidden: 'reader' may not send 'order' (only signals)")]  # logged once
        assert rep.stats.dropped["forbidden_request"] == 2
        signals = client(load_security(keys, "signals", binds))
        assert signals.request("order", {"price": 90_000.0}) == "filled"
        unknown = client(stranger(keys, tmp_path, binds), timeout_ms=300)
        with pytest.raises(RequestFailed):
            unknown.request("order", {"price": 0.01})
        assert orders == [{"price": 90_000.0}]
        assert zap_handler(server_ctx).refused >= 1
        assert "unknown client key" in zap_handler(server_ctx).last_refused
        for r in (reader, signals, unknown):
            r.close()
    finally:
        stop.set()
        thread.join()
        rep.close()
        stop_zap(server_ctx)
        server_ctx.destroy(linger=0)
        client_ctx.destroy(linger=0)


def test_a_client_without_curve_is_refused_by_a_secure_replier(keys, ctx, tcp_endpoint):
    rep_ep = tcp_endpoint()
    rep = Replier(ctx, rep_ep, "portfolio", {"order": lambda body: "filled"},
                  security=load_security(keys, "portfolio", {"portfolio": (rep_ep,)}))
    plain = ctx.socket(zmq.REQ)
    plain.linger = 0
    plain.connect(rep_ep)
    plain.send(encode_envelope("order", {"price": 0.01}, "mallory"))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if rep.socket.poll(20):
            rep.serve_pending()
    assert rep.stats.received == 0 and not plain.poll(0)
    plain.close()
    rep.close()


def test_one_context_admits_one_key_set(keys, tmp_path, ctx):
    sec = load_security(keys, "portfolio", {})
    assert ensure_zap(ctx, sec.clients) is ensure_zap(ctx, sec.clients)
    other = tmp_path / "other"
    generate_keys(other)
    with pytest.raises(BusKeysError, match="already admits another set of keys"):
        ensure_zap(ctx, load_security(other, "portfolio", {}).clients)


def test_terminating_the_context_alone_ends_the_zap_handler(keys):
    ctx = zmq.Context()
    handler = ensure_zap(ctx, load_security(keys, "portfolio", {}).clients)
    done = threading.Event()
    threading.Thread(target=lambda: (ctx.term(), done.set()), daemon=True).start()
    assert done.wait(5), "ctx.term() hung on the ZAP handler's sockets"
    assert not handler.alive and zap_handler(ctx) is None


def test_recv_monitor_message_parses_what_pyzmq_parses() -> None:
    """Our monitor parser gives pyzmq's dict for a real event (a bind's LISTENING) and refuses
    a malformed one by name."""
    from zmq.utils.monitor import parse_monitor_message

    ctx = zmq.Context()
    watched = ctx.socket(zmq.PAIR)
    monitor = watched.get_monitor_socket(zmq.EVENT_LISTENING)
    fake = ctx.socket(zmq.PAIR)
    try:
        port = watched.bind_to_random_port("tcp://127.0.0.1")
        endpoint = f"tcp://127.0.0.1:{port}".encode()
        assert monitor.poll(5000)
        event = recv_monitor_message(monitor)
        assert event == {"event": zmq.Event.LISTENING, "value": event["value"], "endpoint": endpoint}
        event_frame = zmq.Event.LISTENING.value.to_bytes(2, "little") + int(event["value"]).to_bytes(4, "little")
        frames = [event_frame, endpoint]
        assert parse_monitor_message(frames) == event
        fake.bind("inproc://fake-monitor")
        sender = ctx.socket(zmq.PAIR)
        sender.connect("inproc://fake-monitor")
        sender.send_multipart([b"\x00\x20", b"tcp://x"])  # a 2-byte first frame: not an event
        with pytest.raises(RuntimeError, match="socket monitor: expected"):
            recv_monitor_message(fake)
        sender.close(0)
    finally:
        watched.disable_monitor()
        for sock in (monitor, watched, fake):
            sock.close(0)
        ctx.term()
