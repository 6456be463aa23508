"""Bus throughput: our Publisher/Subscriber beside a bare pyzmq PUB/SUB loop, same process.

Ours encodes a msgpack envelope per message, and the subscriber decodes, validates and tracks
sequence numbers; the bare loop sends the very same envelope bytes, pre-encoded once, and
receives raw frames. Both go over tcp on 127.0.0.1 with a receiver thread, the same HWM,
so the ratio is the price of the envelope. The same run of ours again over CurveZMQ (the
publisher a CURVE server with the marketdata key, the subscriber the read-only key) is the
price of the authenticated bus. Then a burst through our HWM (``PUB_HWM``) and through zmq's
default (1000), both consumed by our decoding receiver: what a burst loses.

Run: ``python -m bench.bench_bus``.
"""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import zmq

from bench.harness import Row, verdict
from common.bus import PUB_HWM, Publisher, Subscriber, decode_envelope, encode_envelope
from common.bus_auth import generate_keys, load_security, stop_zap

TOPIC = "bar.BTC/USDT.1h"
BODY = {"symbol": "BTC/USDT", "timeframe": "1h", "ts_open": 1_767_225_600_000, "open": 93_512.5,
        "high": 93_880.25, "low": 93_101.0, "close": 93_644.75, "volume": 1_234.5678}
ZMQ_DEFAULT_HWM = 1000
RUNS = 5
SETTLE_S = 0.5  # the receiver is done when nothing arrives for this long


ANY_LOOPBACK_PORT = "tcp://127.0.0.1:*"  # zmq picks the port at bind; nothing can take it first


def _bound_endpoint(sock: zmq.Socket) -> str:
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _join(send_probe: Callable[[], None], sub_socket: zmq.Socket) -> None:
    """Send probes until the subscription has reached the publisher, then drain them."""
    deadline = time.monotonic() + 5
    while not sub_socket.poll(10):
        if time.monotonic() > deadline:
            raise TimeoutError("subscriber never joined the publisher")
        send_probe()
    while sub_socket.poll(SETTLE_S * 1000 / 5):
        sub_socket.recv_multipart()


def _receive_into(count: list[int], receive_one: Callable[[int], bool], expected: int) -> threading.Thread:
    """A thread that receives until ``expected`` messages or a quiet ``SETTLE_S``; count[0] holds the tally."""
    def loop() -> None:
        quiet_ms = int(SETTLE_S * 1000)
        while count[0] < expected and receive_one(quiet_ms):
            count[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def _timed(send_all: Callable[[], None], receive_one: Callable[[int], bool], n: int) -> tuple[float, int]:
    """(messages/s end to end, messages received) for one run of ``n`` messages."""
    count = [0]
    start = time.perf_counter()
    thread = _receive_into(count, receive_one, n)
    send_all()
    thread.join()
    elapsed = time.perf_counter() - start
    if count[0] < n:  # the receiver waited SETTLE_S for messages that never came
        elapsed -= SETTLE_S
    return count[0] / elapsed, count[0]


def ours_rate(n: int, keys: Path | None = None) -> tuple[float, int]:
    """Our Publisher -> Subscriber; over CurveZMQ with the key pairs in ``keys`` if given."""
    ctx = zmq.Context()
    if keys is None:
        pub = Publisher(ctx, ANY_LOOPBACK_PORT, "bench", security=None)
        sub = Subscriber(ctx, [_bound_endpoint(pub.socket)], ["bar."], security=None)
    else:
        pub = Publisher(ctx, ANY_LOOPBACK_PORT, "bench", security=load_security(keys, "marketdata", {}))
        endpoint = _bound_endpoint(pub.socket)
        sub = Subscriber(ctx, [endpoint], ["bar."], security=load_security(keys, "reader", {"marketdata": (endpoint,)}))
    try:
        _join(lambda: pub.publish(TOPIC, "bar", BODY), sub.socket)

        def send_all() -> None:
            for _ in range(n):
                pub.publish(TOPIC, "bar", BODY)

        return _timed(send_all, lambda quiet_ms: sub.receive(quiet_ms) is not None, n)
    finally:
        pub.close()
        sub.close()
        stop_zap(ctx)
        ctx.term()


def _bare_pair(ctx: zmq.Context, hwm: int) -> tuple[zmq.Socket, zmq.Socket]:
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    for sock in (pub, sub):
        sock.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, hwm)
    sub.setsockopt(zmq.RCVHWM, hwm)
    pub.bind(ANY_LOOPBACK_PORT)
    sub.connect(_bound_endpoint(pub))
    sub.setsockopt(zmq.SUBSCRIBE, b"bar.")
    return pub, sub


def bare_rate(n: int) -> tuple[float, int]:
    ctx = zmq.Context()
    pub, sub = _bare_pair(ctx, PUB_HWM)
    frames = [TOPIC.encode(), encode_envelope("bar", BODY, "bench", 1)]
    try:
        _join(lambda: pub.send_multipart(frames), sub)

        def send_all() -> None:
            for _ in range(n):
                pub.send_multipart(frames)

        def receive_one(quiet_ms: int) -> bool:
            if not sub.poll(quiet_ms):
                return False
            sub.recv_multipart()
            return True

        return _timed(send_all, receive_one, n)
    finally:
        pub.close()
        sub.close()
        ctx.term()


def burst_loss(n: int, hwm: int) -> float:
    """Fraction of an ``n``-message burst lost between one PUB and our decoding receiver."""
    ctx = zmq.Context()
    pub, sub = _bare_pair(ctx, hwm)
    try:
        _join(lambda: pub.send_multipart([TOPIC.encode(), encode_envelope("bar", BODY, "bench", 0)]), sub)
        frames = [[TOPIC.encode(), encode_envelope("bar", BODY, "bench", seq)] for seq in range(1, n + 1)]

        def send_all() -> None:
            for frame in frames:
                pub.send_multipart(frame)

        def receive_one(quiet_ms: int) -> bool:
            if not sub.poll(quiet_ms):
                return False
            decode_envelope(sub.recv_multipart()[1])
            return True

        _rate, received = _timed(send_all, receive_one, n)
        return 1 - received / n
    finally:
        pub.close()
        sub.close()
        ctx.term()


def run(quick: bool = False) -> dict[str, Any]:
    n = 5_000 if quick else 50_000
    runs = 3 if quick else RUNS
    ours, curve, bare = [], [], []
    lost_ours = lost_curve = lost_bare = 0
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        generate_keys(keys)
        for _ in range(runs):  # interleaved, so drift of the machine hits all alike
            rate, got = ours_rate(n)
            ours.append(rate)
            lost_ours += n - got
            rate, got = ours_rate(n, keys)
            curve.append(rate)
            lost_curve += n - got
            rate, got = bare_rate(n)
            bare.append(rate)
            lost_bare += n - got
    burst = 10_000 if quick else 50_000
    loss_default = [burst_loss(burst, ZMQ_DEFAULT_HWM) for _ in range(runs)]
    loss_ours = [burst_loss(burst, PUB_HWM) for _ in range(runs)]
    ours_med, curve_med, bare_med = statistics.median(ours), statistics.median(curve), statistics.median(bare)
    return {
        "messages_per_run": n,
        "runs": runs,
        "envelope_bytes": len(encode_envelope("bar", BODY, "bench", 1)),
        "ours_msgs_per_s": ours_med,
        "bare_msgs_per_s": bare_med,
        "ours_vs_bare": ours_med / bare_med,
        "curve_msgs_per_s": curve_med,
        "curve_vs_plain": curve_med / ours_med,
        "curve_lost": lost_curve,
        "ours_lost": lost_ours,
        "bare_lost": lost_bare,
        "burst_messages": burst,
        "our_hwm": PUB_HWM,
        "burst_loss_our_hwm": statistics.median(loss_ours),
        "burst_loss_default_hwm": statistics.median(loss_default),
    }


def report(r: dict[str, Any]) -> list[Row]:
    return [
        (f"our Publisher -> Subscriber (envelope {r['envelope_bytes']} B, median of {r['runs']} x "
         f"{r['messages_per_run']:,})", f"{r['ours_msgs_per_s']:,.0f} msg/s", "", ""),
        ("bare pyzmq PUB -> SUB, same bytes", f"{r['bare_msgs_per_s']:,.0f} msg/s", "", ""),
        ("ours / bare", f"{r['ours_vs_bare']:.2f}", "", ""),
        ("ours over CurveZMQ (encrypted, ZAP-checked keys)", f"{r['curve_msgs_per_s']:,.0f} msg/s", "", ""),
        ("CurveZMQ / plain", f"{r['curve_vs_plain']:.2f}", "", ""),
        ("lost in the throughput runs (ours, ours over Curve, bare)",
         f"{r['ours_lost']}, {r['curve_lost']}, {r['bare_lost']}", "0",
         verdict(r["ours_lost"] == 0 and r["curve_lost"] == 0)),
        (f"burst of {r['burst_messages']:,} lost at our HWM ({r['our_hwm']:,})",
         f"{r['burst_loss_our_hwm']:.2%}", "0%", verdict(r["burst_loss_our_hwm"] == 0)),
        (f"burst of {r['burst_messages']:,} lost at the default HWM ({ZMQ_DEFAULT_HWM})",
         f"{r['burst_loss_default_hwm']:.2%}", "(reference)", ""),
    ]


if __name__ == "__main__":
    for row in report(run()):
        print(" | ".join(row))
