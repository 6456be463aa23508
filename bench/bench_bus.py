"""Bus throughput: our Publisher/Subscriber beside pyzmq + msgpack by hand and bare pyzmq bytes.

Four ways to move the same bar message over tcp on 127.0.0.1, PUB -> SUB, same HWM:

- ours: ``Publisher.publish`` (sequence number, envelope, msgpack) -> ``Subscriber.receive``
  (decode, every envelope check, sequence tracking);
- pyzmq + msgpack: what one writes by hand without our bus: the same envelope map, built and
  packed with ``msgpack.packb`` per message, received and ``msgpack.unpackb``-ed, nothing checked;
- bare pyzmq: the same envelope bytes, packed once, received as bytes;
- ours over CurveZMQ (the publisher a CURVE server with the marketdata key, the subscriber the
  read-only key): the price of the authenticated bus.

The publisher (the load generator) runs in its own process, so the two sides share no
interpreter lock; the receiver here is timed from the first to the last message it takes. The
variants are interleaved round by round, so drift of a loaded machine hits all alike, and each
ratio is the median of the per-round ratios. Beside it, the CPU time per message of our
encode/decode against msgpack's own pack/unpack of the same map (process time, so time the
scheduler gives to other processes does not count). Then a burst through our HWM (``PUB_HWM``)
and through zmq's default (1000), both consumed by our decoding receiver: what a burst loses.

Run: ``python -m bench.bench_bus``.
"""
from __future__ import annotations

import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any, Callable

import msgpack
import zmq

from bench.harness import Row, verdict
from common.bus import PUB_HWM, Publisher, Subscriber, decode_envelope, encode_envelope
from common.bus_auth import generate_keys, load_security, stop_zap

TOPIC = "bar.BTC/USDT.1h"
PROBE_TOPIC = "bar.probe"  # sent until the subscription has reached the publisher; not timed
BODY = {"symbol": "BTC/USDT", "timeframe": "1h", "ts_open": 1_767_225_600_000, "open": 93_512.5,
        "high": 93_880.25, "low": 93_101.0, "close": 93_644.75, "volume": 1_234.5678}
VARIANTS = ("ours", "curve", "msgpack", "bare")
TARGET_VS_MSGPACK = 0.90
ZMQ_DEFAULT_HWM = 1000
RUNS = 7
SETTLE_S = 0.5  # the receiver is done when nothing arrives for this long
START_TIMEOUT_S = 60  # a publisher process on a loaded machine takes a while to import
REPO = Path(__file__).resolve().parents[1]
ANY_LOOPBACK_PORT = "tcp://127.0.0.1:*"  # zmq picks the port at bind; nothing can take it first


def _bound_endpoint(sock: zmq.Socket) -> str:
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _bare_socket(ctx: zmq.Context, kind: int, hwm: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM if kind == zmq.PUB else zmq.RCVHWM, hwm)
    return sock


def hand_envelope(seq: int) -> dict[str, Any]:
    """The envelope map pyzmq + msgpack by hand sends: our keys, a fresh id and clock per message."""
    return {"v": 1, "type": "bar", "id": f"bench-{seq:x}", "ts": time.time_ns() // 1_000_000, "source": "bench",
            "seq": seq, "body": BODY}


def _send_loop(variant: str, ctx: zmq.Context, keys: str | None) -> tuple[zmq.Socket, Callable[[], object],
                                                                          Callable[[int], None], Callable[[], object]]:
    """(socket, send one probe, send n timed messages, close) of one variant's publisher."""
    if variant in ("ours", "curve"):
        security = load_security(Path(keys), "marketdata", {}) if variant == "curve" and keys else None
        pub = Publisher(ctx, ANY_LOOPBACK_PORT, "bench", security=security)

        def send_ours(n: int) -> None:
            for _ in range(n):
                pub.publish(TOPIC, "bar", BODY)

        return pub.socket, lambda: pub.publish(PROBE_TOPIC, "probe", BODY), send_ours, pub.close
    sock = _bare_socket(ctx, zmq.PUB, PUB_HWM)
    sock.bind(ANY_LOOPBACK_PORT)
    topic, probe = TOPIC.encode(), [PROBE_TOPIC.encode(), msgpack.packb(hand_envelope(0))]
    if variant == "msgpack":
        def send_hand(n: int) -> None:
            for seq in range(1, n + 1):
                sock.send_multipart([topic, msgpack.packb(hand_envelope(seq))])

        return sock, lambda: sock.send_multipart(probe), send_hand, sock.close
    frames = [topic, encode_envelope("bar", BODY, "bench", 1)]

    def send_bare(n: int) -> None:
        for _ in range(n):
            sock.send_multipart(frames)

    return sock, lambda: sock.send_multipart(probe), send_bare, sock.close


def publish(variant: str, n: int, keys: str | None) -> None:
    """The load generator, in its own process: print the endpoint, send probes until stdin says
    the receiver has joined, send ``n`` timed messages, and keep the socket open (LINGER is 0)
    until stdin closes."""
    ctx = zmq.Context()
    sock, send_probe, send_timed, close = _send_loop(variant, ctx, keys)
    try:
        print(_bound_endpoint(sock), flush=True)
        while not select.select([sys.stdin], [], [], 0.01)[0]:
            send_probe()
        sys.stdin.readline()
        send_timed(n)
        sys.stdin.read()
    finally:
        close()
        stop_zap(ctx)
        ctx.term()


def _receiver(variant: str, ctx: zmq.Context, endpoint: str, keys: Path | None) -> tuple[Callable[[int], str | None],
                                                                                         Callable[[], object]]:
    """(receive one message's topic within a timeout or None, close) of one variant's subscriber."""
    if variant in ("ours", "curve"):
        security = (load_security(keys, "reader", {"marketdata": (endpoint,)})
                    if variant == "curve" and keys else None)
        sub = Subscriber(ctx, [endpoint], ["bar."], security=security)

        def receive_ours(quiet_ms: int) -> str | None:
            got = sub.receive(quiet_ms)
            return None if got is None else got[0]

        return receive_ours, sub.close
    sock = _bare_socket(ctx, zmq.SUB, PUB_HWM)
    sock.connect(endpoint)
    sock.setsockopt(zmq.SUBSCRIBE, b"bar.")
    if variant == "msgpack":
        def receive_hand(quiet_ms: int) -> str | None:
            if not sock.poll(quiet_ms):
                return None
            topic, raw = sock.recv_multipart()
            msgpack.unpackb(raw)
            return topic.decode()

        return receive_hand, sock.close

    def receive_bare(quiet_ms: int) -> str | None:
        if not sock.poll(quiet_ms):
            return None
        return sock.recv_multipart()[0].decode()

    return receive_bare, sock.close


def measure(variant: str, n: int, keys: Path | None = None) -> tuple[float, int]:
    """(messages/s the receiver took, first to last; messages received) for one run of ``n``."""
    code = f"from bench.bench_bus import publish; publish({variant!r}, {n}, {str(keys) if keys else None!r})"
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    ctx = zmq.Context()
    try:
        if not select.select([child.stdout], [], [], START_TIMEOUT_S)[0]:
            raise TimeoutError(f"the {variant} publisher never started")
        receive, close = _receiver(variant, ctx, child.stdout.readline().strip(), keys)
        try:
            while (topic := receive(int(START_TIMEOUT_S * 1000))) != PROBE_TOPIC:
                if topic is None:
                    raise TimeoutError(f"the {variant} subscriber never joined its publisher")
            child.stdin.write("joined\n")
            child.stdin.flush()
            return _count(receive, n)
        finally:
            close()
    finally:
        child.stdin.close()
        try:
            child.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        stop_zap(ctx)
        ctx.term()


def _count(receive: Callable[[int], str | None], n: int) -> tuple[float, int]:
    quiet_ms = int(SETTLE_S * 1000)
    count, first, last = 0, 0.0, 0.0
    while count < n:
        topic = receive(quiet_ms)
        if topic is None:
            break
        if topic == TOPIC:
            count += 1
            last = time.perf_counter()
            if count == 1:
                first = last
    return ((count - 1) / (last - first) if count > 1 and last > first else 0.0), count


def cpu_us_per_message(work: Callable[[], object], repeats: int, number: int = 2_000) -> float:
    """Least process CPU time per call of ``work`` over ``repeats`` batches, in microseconds."""
    timer = timeit.Timer(work, timer=time.process_time)
    return min(timer.repeat(repeat=repeats, number=number)) / number * 1e6


def codec_costs(repeats: int) -> dict[str, float]:
    """CPU per message of our encode/decode and of msgpack's pack/unpack of the same map."""
    raw = encode_envelope("bar", BODY, "bench", 1)
    return {
        "encode_envelope_us": cpu_us_per_message(lambda: encode_envelope("bar", BODY, "bench", 1), repeats),
        "msgpack_packb_us": cpu_us_per_message(lambda: msgpack.packb(hand_envelope(1)), repeats),
        "decode_envelope_us": cpu_us_per_message(lambda: decode_envelope(raw), repeats),
        "msgpack_unpackb_us": cpu_us_per_message(lambda: msgpack.unpackb(raw), repeats),
    }


def _join(send_probe: Callable[[], object], sub_socket: zmq.Socket) -> None:
    """Send probes until the subscription has reached the publisher, then drain them."""
    deadline = time.monotonic() + 5
    while not sub_socket.poll(10):
        if time.monotonic() > deadline:
            raise TimeoutError("subscriber never joined the publisher")
        send_probe()
    while sub_socket.poll(int(SETTLE_S * 1000 / 5)):
        sub_socket.recv_multipart()


def burst_loss(n: int, hwm: int) -> float:
    """Fraction of an ``n``-message burst lost between one PUB and our decoding receiver (a thread)."""
    ctx = zmq.Context()
    pub, sub = _bare_socket(ctx, zmq.PUB, hwm), _bare_socket(ctx, zmq.SUB, hwm)
    pub.bind(ANY_LOOPBACK_PORT)
    sub.connect(_bound_endpoint(pub))
    sub.setsockopt(zmq.SUBSCRIBE, b"bar.")
    try:
        _join(lambda: pub.send_multipart([TOPIC.encode(), encode_envelope("bar", BODY, "bench", 0)]), sub)
        frames = [[TOPIC.encode(), encode_envelope("bar", BODY, "bench", seq)] for seq in range(1, n + 1)]
        received = [0]

        def drain() -> None:
            while received[0] < n and sub.poll(int(SETTLE_S * 1000)):
                decode_envelope(sub.recv_multipart()[1])
                received[0] += 1

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        for frame in frames:
            pub.send_multipart(frame)
        thread.join()
        return 1 - received[0] / n
    finally:
        pub.close()
        sub.close()
        ctx.term()


def run(quick: bool = False) -> dict[str, Any]:
    n = 5_000 if quick else 50_000
    runs = 1 if quick else RUNS  # quick: a smoke run (the tests), one round of each
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    lost = dict.fromkeys(VARIANTS, 0)
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        generate_keys(keys)
        for _ in range(runs):  # interleaved, so drift of the machine hits all alike
            for variant in VARIANTS:
                rate, got = measure(variant, n, keys)
                rates[variant].append(rate)
                lost[variant] += n - got
    per_round = {f"{a}_vs_{b}": statistics.median(x / y if y else 0.0 for x, y in zip(rates[a], rates[b]))
                 for a, b in (("ours", "msgpack"), ("ours", "bare"), ("msgpack", "bare"), ("curve", "ours"))}
    burst = 10_000 if quick else 50_000
    loss_default = [burst_loss(burst, ZMQ_DEFAULT_HWM) for _ in range(runs)]
    loss_ours = [burst_loss(burst, PUB_HWM) for _ in range(runs)]
    return {
        "messages_per_run": n,
        "runs": runs,
        "envelope_bytes": len(encode_envelope("bar", BODY, "bench", 1)),
        **{f"{v}_msgs_per_s": statistics.median(rates[v]) for v in VARIANTS},
        **per_round,
        **{f"{v}_lost": lost[v] for v in VARIANTS},
        **codec_costs(repeats=10 if quick else 50),
        "burst_messages": burst,
        "our_hwm": PUB_HWM,
        "burst_loss_our_hwm": statistics.median(loss_ours),
        "burst_loss_default_hwm": statistics.median(loss_default),
    }


def report(r: dict[str, Any]) -> list[Row]:
    return [
        (f"our Publisher -> Subscriber (envelope {r['envelope_bytes']} B, median of {r['runs']} x "
         f"{r['messages_per_run']:,}, publisher in its own process)", f"{r['ours_msgs_per_s']:,.0f} msg/s", "", ""),
        ("pyzmq + msgpack by hand (same map, packb / unpackb per message, no checks)",
         f"{r['msgpack_msgs_per_s']:,.0f} msg/s", "", ""),
        ("bare pyzmq PUB -> SUB, same bytes packed once", f"{r['bare_msgs_per_s']:,.0f} msg/s", "", ""),
        ("ours / pyzmq + msgpack (median of per-round ratios)", f"{r['ours_vs_msgpack']:.2f}",
         f">= {TARGET_VS_MSGPACK:.2f}", verdict(r["ours_vs_msgpack"] >= TARGET_VS_MSGPACK)),
        ("ours / bare; pyzmq + msgpack / bare", f"{r['ours_vs_bare']:.2f}; {r['msgpack_vs_bare']:.2f}", "", ""),
        ("CPU per message: encode_envelope / msgpack.packb of the map",
         f"{r['encode_envelope_us']:.2f} / {r['msgpack_packb_us']:.2f} us", "", ""),
        ("CPU per message: decode_envelope (with every check) / msgpack.unpackb",
         f"{r['decode_envelope_us']:.2f} / {r['msgpack_unpackb_us']:.2f} us", "", ""),
        ("ours over CurveZMQ (encrypted, ZAP-checked keys)", f"{r['curve_msgs_per_s']:,.0f} msg/s", "", ""),
        ("CurveZMQ / plain", f"{r['curve_vs_ours']:.2f}", "", ""),
        ("lost in the throughput runs (ours, ours over Curve, by hand, bare)",
         f"{r['ours_lost']}, {r['curve_lost']}, {r['msgpack_lost']}, {r['bare_lost']}", "0",
         verdict(r["ours_lost"] == 0 and r["curve_lost"] == 0)),
        (f"burst of {r['burst_messages']:,} lost at our HWM ({r['our_hwm']:,})",
         f"{r['burst_loss_our_hwm']:.2%}", "0%", verdict(r["burst_loss_our_hwm"] == 0)),
        (f"burst of {r['burst_messages']:,} lost at the default HWM ({ZMQ_DEFAULT_HWM})",
         f"{r['burst_loss_default_hwm']:.2%}", "(reference)", ""),
    ]


if __name__ == "__main__":
    for row in report(run()):
        print(" | ".join(row))
