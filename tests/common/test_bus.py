import threading
import time

import msgpack
import pytest
import zmq

from common import bus
from common.bus import (
    PROTOCOL_VERSION,
    BadMessage,
    BusStats,
    Publisher,
    RemoteError,
    Replier,
    Requester,
    RequestError,
    RequestFailed,
    Subscriber,
    decode_envelope,
    encode_envelope,
)

# Plain sockets: these tests are about the envelope and the socket patterns; the keys, the ZAP
# handler and who may ask what are tested in test_bus_auth.py.
PLAIN = None


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_envelope_round_trip_keeps_every_field():
    raw = encode_envelope("signal", {"signal": 1, "price": 50000.5}, "signals", seq=7, msg_id="abc")
    env = decode_envelope(raw)
    assert (env.v, env.type, env.id, env.source, env.seq) == (PROTOCOL_VERSION, "signal", "abc", "signals", 7)
    assert env.body == {"signal": 1, "price": 50000.5}
    assert isinstance(env.ts, int) and env.ts > 1_600_000_000_000


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"\xc1garbage", "not msgpack"),
        (msgpack.packb([1, 2, 3]), "not a map"),
        (msgpack.packb({"v": 1, "type": "x"}), "lacks id, ts, source, seq, body"),
        (msgpack.packb({"v": 99, "type": "x", "id": "i", "ts": 1, "source": "s", "seq": 1, "body": None}),
         "unsupported protocol version 99"),
        (msgpack.packb({"v": 1, "type": 5, "id": "i", "ts": 1, "source": "s", "seq": 1, "body": None}),
         "envelope.type must be str"),
        (msgpack.packb({"v": 1, "type": "x", "id": "i", "ts": True, "source": "s", "seq": 1, "body": None}),
         "envelope.ts must be int, got bool"),
        (msgpack.packb({"v": 1, "type": "x", "id": 3, "ts": 1, "source": "s", "seq": 1, "body": None}),
         "envelope.id must be str, got int"),
        (msgpack.packb({"v": 1, "type": "x", "id": "i", "ts": 1, "source": None, "seq": 1, "body": None}),
         "envelope.source must be str, got NoneType"),
        (msgpack.packb({"v": 1, "type": "x", "id": "i", "ts": 1.5, "source": "s", "seq": 1, "body": None}),
         "envelope.ts must be int, got float"),
        (msgpack.packb({"v": 1, "type": "x", "id": "i", "ts": 1, "source": "s", "seq": "1", "body": None}),
         "envelope.seq must be int, got str"),
        (msgpack.packb({"v": 1, "type": "x", "id": "i", "ts": 1, "source": "s", "seq": 1}), "lacks body"),
        (msgpack.packb("envelope"), "envelope is str, not a map"),
        (b"", "not msgpack"),
    ],
)
def test_bad_envelopes_name_the_problem(raw, fragment):
    with pytest.raises(BadMessage, match=fragment):
        decode_envelope(raw)


def test_a_frame_too_big_for_the_kept_packer_buffer_round_trips_and_replaces_the_packer():
    big = "x" * (bus.KEEP_PACKER_BUFFER_BYTES + 1)
    packer = bus._packers.packer
    assert decode_envelope(encode_envelope("t", big, "s")).body == big
    assert bus._packers.packer is not packer  # the grown buffer went with the old one
    small = bus._packers.packer
    assert decode_envelope(encode_envelope("t", [1, "a"], "s", seq=2)).body == [1, "a"]
    assert bus._packers.packer is small


def test_envelopes_encoded_on_many_threads_at_once_each_decode_to_their_own_body():
    frames: dict[int, list[bytes]] = {}

    def encode(worker: int) -> None:
        frames[worker] = [encode_envelope("t", {"worker": worker, "n": n, "pad": "p" * n}, "s", seq=n)
                          for n in range(500)]

    threads = [threading.Thread(target=encode, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for worker, raws in frames.items():
        assert [decode_envelope(raw).body["worker"] for raw in raws] == [worker] * 500
        assert [decode_envelope(raw).seq for raw in raws] == list(range(500))


def test_huge_frame_is_rejected_before_parsing():
    with pytest.raises(BadMessage, match="exceeds"):
        decode_envelope(b"\x00" * (9 * 1024 * 1024))


def test_sequence_gaps_are_counted_per_source_and_restarts_are_not_gaps():
    stats = BusStats()
    assert stats.track_sequence("feed", 1) == 0
    assert stats.track_sequence("feed", 2) == 0
    assert stats.track_sequence("feed", 5) == 2
    assert stats.track_sequence("feed", 1) == 0  # publisher restarted
    assert stats.missed["feed"] == 2


def test_pub_sub_delivers_valid_and_drops_garbage(ctx, tcp_endpoint):
    endpoint = tcp_endpoint()
    pub = Publisher(ctx, endpoint, "feed", security=PLAIN)
    drops = []
    sub = Subscriber(ctx, [endpoint], ["bar."], on_drop=lambda reason, detail: drops.append(reason), security=PLAIN)
    raw_pub = ctx.socket(zmq.PUB)  # a rogue publisher sending garbage on the same topic
    raw_sub_endpoint = tcp_endpoint()
    raw_pub.bind(raw_sub_endpoint)
    sub.socket.connect(raw_sub_endpoint)
    deadline = time.monotonic() + 5
    good = []
    while time.monotonic() < deadline and not (good and sub.stats.dropped["bad_frame_count"]
                                               and sub.stats.dropped["bad_envelope"]):
        pub.publish("bar.BTC/USDT.1h", "bar", {"close": 1.0})  # slow joiners: keep publishing
        raw_pub.send_multipart([b"bar.x", b"\xc1\xc1"])
        raw_pub.send_multipart([b"bar.x"])
        got = sub.receive(50)
        if got is not None:
            good.append(got)
    topic, env = good[0]
    assert topic == "bar.BTC/USDT.1h" and env.body == {"close": 1.0}
    assert sub.stats.dropped["bad_envelope"] >= 1
    assert sub.stats.dropped["bad_frame_count"] >= 1
    assert drops.count("bad_envelope") == 1  # logged once per reason, counted every time
    raw_pub.close(linger=0)
    pub.close()
    sub.close()


def _serve(rep: Replier, stop: threading.Event) -> None:
    while not stop.is_set():
        if rep.socket.poll(20):
            rep.serve_pending()


def test_request_reply_with_handler_table_and_error_replies(ctx, tcp_endpoint):
    endpoint = tcp_endpoint()

    def add(body):
        return body["a"] + body["b"]

    def refuse(body):
        raise RequestError("rejected", "no thanks")

    def crash(body):
        raise KeyError("boom")

    rep = Replier(ctx, endpoint, "portfolio", {"add": add, "refuse": refuse, "crash": crash}, security=PLAIN)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(rep, stop))
    thread.start()
    try:
        req = Requester(ctx, endpoint, "test", timeout_ms=1000, retries=2, security=PLAIN)
        assert req.request("add", {"a": 2, "b": 3}) == 5
        with pytest.raises(RemoteError) as err:
            req.request("refuse", {})
        assert err.value.code == "rejected"
        with pytest.raises(RemoteError) as err:
            req.request("nope", {})
        assert err.value.code == "unknown_request" and "known: add, crash, refuse" in err.value.message
        with pytest.raises(RemoteError) as err:
            req.request("crash", {})
        assert err.value.code == "internal"
        assert req.request("add", {"a": 1, "b": 1}) == 2  # the service survived its handler's bug
        req.close()
    finally:
        stop.set()
        thread.join()
        rep.close()


def test_replier_answers_garbage_with_an_error_reply(ctx):
    rep = Replier(ctx, "inproc://rep-garbage", "portfolio", {}, security=PLAIN)
    reply = decode_envelope(rep.answer(b"not an envelope"))
    assert reply.body["ok"] is False and reply.body["error"]["code"] == "bad_request"
    rep.close()


def test_request_to_a_dead_peer_gives_up_in_bounded_time(ctx, tcp_endpoint):
    req = Requester(ctx, tcp_endpoint(), "test", timeout_ms=100, retries=3, security=PLAIN)
    started = time.monotonic()
    with pytest.raises(RequestFailed, match="after 3 tries of 100 ms"):
        req.request("order", {"x": 1})
    assert time.monotonic() - started < 2.0
    req.close()


def test_request_succeeds_when_the_peer_comes_up_between_retries(ctx, tcp_endpoint):
    endpoint = tcp_endpoint()
    stop = threading.Event()
    holder = {}

    def late_server():
        time.sleep(0.3)
        holder["rep"] = Replier(ctx, endpoint, "late", {"ping": lambda body: "pong"}, security=PLAIN)
        _serve(holder["rep"], stop)

    thread = threading.Thread(target=late_server)
    thread.start()
    try:
        req = Requester(ctx, endpoint, "test", timeout_ms=200, retries=10, security=PLAIN)
        assert req.request("ping") == "pong"
        req.close()
    finally:
        stop.set()
        thread.join()
        holder["rep"].close()


def test_a_request_on_a_socket_libzmq_left_without_a_peer_fails_its_try_and_the_next_is_answered(ctx, tcp_endpoint):
    """After a peer broke the handshake protocol (a rogue on a restarting service's port), libzmq
    drops the connection and never reconnects: a blocking send on that REQ socket waited
    forever, and the engine hung until supervisord's SIGKILL."""
    endpoint = tcp_endpoint()
    rep = Replier(ctx, endpoint, "portfolio", {"ping": lambda body: "pong"}, security=PLAIN)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(rep, stop))
    thread.start()
    beats = []
    req = Requester(ctx, endpoint, "signals", timeout_ms=300, retries=2, security=PLAIN,
                    while_waiting=lambda: beats.append(1))
    answers = []
    try:
        assert req.request("ping") == "pong"
        req.socket.disconnect(endpoint)  # what libzmq does to the only pipe after a protocol error
        asking = threading.Thread(target=lambda: answers.append(req.request("ping")), daemon=True)
        asking.start()
        asking.join(5)
        assert not asking.is_alive(), "the request hung on a socket with no peer"
    finally:
        stop.set()
        thread.join()
        rep.close()
        req.close()
    assert answers == ["pong"]  # the first try could not send; the second, on a fresh socket, did
    assert req.stats.dropped["request_unsendable"] == 1 and beats  # the heartbeat ran while it waited


def test_a_prefix_filter_sees_no_false_gaps_and_counts_real_ones(ctx, tcp_endpoint):
    endpoint = tcp_endpoint()
    pub = Publisher(ctx, endpoint, "feed", security=PLAIN)
    sub = Subscriber(ctx, [endpoint], ["bar.BTC"], security=PLAIN)
    got = None
    while got is None:  # slow joiner
        pub.publish("bar.BTC", "bar", {"n": 0})
        got = sub.receive(50)
    while sub.receive(50) is not None:
        pass
    for n in range(1, 6):  # interleaved topics the subscriber filters out are not gaps
        pub.publish("bar.ETH", "bar", {"n": n})
        pub.publish("bar.BTC", "bar", {"n": n})
    pub.seqs["bar.BTC"] += 3  # three BTC bars lost on the way
    pub.publish("bar.BTC", "bar", {"n": 9})
    received = [sub.receive(500) for _ in range(6)]
    assert [r[1].body["n"] for r in received] == [1, 2, 3, 4, 5, 9]
    assert sub.stats.missed["feed"] == 3
    pub.close()
    sub.close()
