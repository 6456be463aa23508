"""The message bus: one msgpack envelope over ZeroMQ PUB/SUB and REQ/REP.

Envelope (a msgpack map): ``{v, type, id, ts, source, seq, body}``

- ``v``      protocol version (``PROTOCOL_VERSION``); other versions are dropped and counted
- ``type``   what the body is (``bar``, ``signal``, ``fill``, ``order``, ``reply`` ...)
- ``id``     unique message id; a reply carries the request's id in ``body.re``
- ``ts``     wall-clock send time, int ms (market time lives in the body)
- ``source`` the sending service
- ``seq``    the publisher's sequence number of this topic, 1-based, so a subscriber counts what
             it missed on every topic it follows (whatever prefix filter it uses)

PUB/SUB frames are ``[topic, envelope]`` with dotted topics, general part first
(``bar.BTC/USDT.1h``, ``signal.momentum-btc``, ``heartbeat.portfolio``), so SUB prefix
filters work. Pub/sub may drop under load; anything that must arrive (orders) goes over
REQ/REP with retries and idempotent ids. Nothing here ever raises on a bad frame: it is
dropped, counted in ``BusStats`` and logged once per reason.

Every socket takes a ``security`` (common/bus_auth.py): binding sockets become CurveZMQ
servers, connecting ones pin the server's key, and a Replier answers only what its caller's
key may ask. ``security=None`` is plain TCP, for the pure bus unit tests only; services always
pass keys (ServiceRuntime has no way to open a socket without them).
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

import msgpack
import zmq

from common.bus_auth import BusSecurity, Context, Socket, may_request, recv_monitor_message
from common.wall import wall_ms

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 8 * 1024 * 1024
PUB_HWM = 100_000
ENVELOPE_KEYS = ("v", "type", "id", "ts", "source", "seq", "body")


class BadMessage(ValueError):
    """A frame that is not a valid envelope; the message says what is wrong."""


class RequestFailed(RuntimeError):
    """A request got no reply after all retries: the peer is down or unreachable."""


class RemoteError(RuntimeError):
    """The peer answered with an error reply; ``code`` says which kind."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Envelope(NamedTuple):
    """One decoded envelope. A NamedTuple, not a dataclass: every message received makes one, and a
    frozen dataclass takes several times as long to build (a guarded setattr per field)."""

    v: int
    type: str
    id: str
    ts: int
    source: str
    seq: int
    body: Any


_ids = itertools.count(1)
_id_prefix = ""


def _new_process() -> None:
    """Ids start with the sender's pid and start time: a child forked from an importer (a service
    started by services/forking_supervisord.py) is a new sender."""
    global _id_prefix
    _id_prefix = f"{os.getpid():x}-{int(wall_ms()):x}"


_new_process()
os.register_at_fork(after_in_child=_new_process)


def new_message_id() -> str:
    return f"{_id_prefix}-{next(_ids):x}"


class _Packers(threading.local):
    """One msgpack Packer per thread: ``msgpack.packb`` builds a Packer and its buffer on every
    call, which costs as much as packing an envelope; a Packer's buffer is not safe to share."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True)


_packers = _Packers()
KEEP_PACKER_BUFFER_BYTES = 1024 * 1024  # a Packer never shrinks: one that packed more is replaced


def encode_envelope(type_: str, body: Any, source: str, seq: int = 0, msg_id: str | None = None) -> bytes:
    packers = _packers
    frame: bytes = packers.packer.pack({
        "v": PROTOCOL_VERSION,
        "type": type_,
        "id": msg_id or new_message_id(),
        "ts": int(wall_ms()),
        "source": source,
        "seq": seq,
        "body": body,
    })
    if len(frame) > KEEP_PACKER_BUFFER_BYTES:
        packers.packer = msgpack.Packer(use_bin_type=True)
    return frame


_ENVELOPE_TYPES = (("type", str), ("id", str), ("source", str), ("ts", int), ("seq", int))


def decode_envelope(raw: bytes) -> Envelope:
    """Parse and check one envelope; raise BadMessage naming the problem.

    This runs for every message a service receives, so a valid envelope passes one inline
    expression of exact type checks; only a bad one pays for finding the field to name.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise BadMessage(f"frame is {type(raw).__name__}, not bytes")
    if len(raw) > MAX_FRAME_BYTES:
        raise BadMessage(f"frame of {len(raw)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types for garbage input
        raise BadMessage(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if type(msg) is not dict:
        raise BadMessage(f"envelope is {type(msg).__name__}, not a map")
    try:
        env = Envelope(msg["v"], msg["type"], msg["id"], msg["ts"], msg["source"], msg["seq"], msg["body"])
    except KeyError:
        raise BadMessage(f"envelope lacks {', '.join(k for k in ENVELOPE_KEYS if k not in msg)}") from None
    if env.v != PROTOCOL_VERSION:
        raise BadMessage(f"unsupported protocol version {env.v!r} (this build speaks {PROTOCOL_VERSION})")
    # exact types: msgpack makes no subclasses, and a bool (an int subclass) is no ts or seq
    if not (type(env.type) is str and type(env.id) is str and type(env.source) is str and type(env.ts) is int
            and type(env.seq) is int):
        key, kind = next((key, kind) for key, kind in _ENVELOPE_TYPES if type(getattr(env, key)) is not kind)
        raise BadMessage(f"envelope.{key} must be {kind.__name__}, got {type(getattr(env, key)).__name__}")
    return env


@dataclass
class BusStats:
    """Counters a service exposes in /metrics and /status: traffic, drops and gaps."""

    sent: int = 0
    received: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> count
    missed: Counter[str] = field(default_factory=Counter)  # source -> messages lost to gaps
    last_seq: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, topic) -> seq

    def count_drop(self, reason: str) -> int:
        self.dropped[reason] += 1
        return self.dropped[reason]

    def track_sequence(self, source: str, seq: int, topic: str = "") -> int:
        """Record ``seq`` of ``topic`` from ``source``; return how many were skipped before it."""
        previous = self.last_seq.get((source, topic))
        self.last_seq[(source, topic)] = seq
        if previous is None or seq <= previous:  # first contact, or the publisher restarted
            return 0
        gap = seq - previous - 1
        if gap:
            self.missed[source] += gap
        return gap

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "received": self.received,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "missed": dict(self.missed),
        }


def close_quietly(sock: Socket | None) -> None:
    if sock is not None and not sock.closed:
        sock.close(linger=0)


def close_monitored(sock: Socket | None, monitor: Socket | None) -> None:
    """Close ``sock`` and the monitor watching it (``get_monitor_socket``)."""
    if monitor is not None and sock is not None and not sock.closed:
        sock.disable_monitor()
    close_quietly(monitor)
    close_quietly(sock)


def handshake_failures(monitor: Socket | None) -> set[str]:
    """The endpoints whose peer broke the handshake protocol since the last call, read off a
    monitor of EVENT_HANDSHAKE_FAILED_PROTOCOL. libzmq never reconnects such an endpoint."""
    failed: set[str] = set()
    while monitor is not None and monitor.poll(0):
        failed.add(recv_monitor_message(monitor)["endpoint"].decode(errors="replace"))
    return failed


@contextmanager
def closed_on_failure(sock: Socket) -> Iterator[Socket]:
    """Close ``sock`` if setting it up fails (a bad endpoint, a port in use, no key): a socket
    left open would hang ``ctx.term()``."""
    try:
        yield sock
    except BaseException:
        sock.close(linger=0)
        raise


def bind_socket(sock: Socket, endpoint: str, security: BusSecurity | None) -> None:
    """Bind ``endpoint``, and its local alias when ``security`` gives it one: the service's
    neighbours on this host connect there."""
    if security is not None:
        security.serve(sock)
    sock.bind(endpoint)
    alias = security.aliases.get(endpoint) if security is not None else None
    if alias is not None:
        try:
            sock.bind(alias)
        except zmq.ZMQError as exc:
            raise zmq.ZMQError(exc.errno, f"cannot bind {alias}, the local alias of {endpoint} (config "
                                          f"bus.local_ipc): {exc.strerror}") from None


def connect_socket(sock: Socket, endpoint: str, security: BusSecurity | None) -> str:
    """Connect to ``endpoint`` (at its local alias when ``security`` has one); the address used."""
    if security is None:
        sock.connect(endpoint)
        return endpoint
    return security.connect(sock, endpoint)


class Publisher:
    """PUB socket that stamps every message with the next sequence number of its topic."""

    def __init__(self, ctx: Context, endpoint: str, source: str, stats: BusStats | None = None, *,
                 security: BusSecurity | None) -> None:
        self.source = source
        self.stats = stats or BusStats()
        self.seqs: dict[str, int] = {}
        with closed_on_failure(ctx.socket(zmq.PUB)) as self.socket:
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.setsockopt(zmq.SNDHWM, PUB_HWM)
            bind_socket(self.socket, endpoint, security)

    def publish(self, topic: str, type_: str, body: Any) -> None:
        seq = self.seqs[topic] = self.seqs.get(topic, 0) + 1
        frame = encode_envelope(type_, body, self.source, seq)
        try:
            self.socket.send_multipart([topic.encode(), frame], flags=zmq.NOBLOCK)
            self.stats.sent += 1
        except zmq.Again:
            self.stats.count_drop("pub_hwm")

    def close(self) -> None:
        close_quietly(self.socket)


class Subscriber:
    """SUB socket over one or more publishers; ``receive`` never raises on bad input.

    libzmq drops an endpoint for good after a protocol error in the handshake, which is what a
    plain socket bound where a CURVE service belongs causes; ``repair`` reconnects such endpoints
    so a subscriber hears the real service again once an impostor is gone.
    """

    def __init__(
        self,
        ctx: Context,
        endpoints: Iterable[str],
        topics: Iterable[str],
        stats: BusStats | None = None,
        on_drop: Callable[[str, str], None] | None = None,
        *,
        security: BusSecurity | None,
    ) -> None:
        self.stats = stats or BusStats()
        self.on_drop = on_drop
        self.security = security
        self.endpoints = list(endpoints)
        self.addresses: dict[str, str] = {}  # endpoint -> where the socket connected for it
        self.monitor: Socket | None = None
        with closed_on_failure(ctx.socket(zmq.SUB)) as self.socket:
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.setsockopt(zmq.RCVHWM, PUB_HWM)
            self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES + 1024)
            if security is not None:
                self.monitor = self.socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
            for endpoint in self.endpoints:
                self.addresses[endpoint] = connect_socket(self.socket, endpoint, security)
            for topic in topics:
                self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())

    def _drop(self, reason: str, detail: str) -> None:
        if self.stats.count_drop(reason) == 1 and self.on_drop:
            self.on_drop(reason, detail)

    def receive(self, timeout_ms: int = 0) -> tuple[str, Envelope] | None:
        """Next valid ``(topic, envelope)`` within ``timeout_ms``, or None; bad frames are dropped."""
        deadline = None
        while True:
            try:  # a frame already queued needs no poll (the loop drains a burst this way)
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                if deadline is None:
                    deadline = time.monotonic() + timeout_ms / 1000
                remaining = max(0, int((deadline - time.monotonic()) * 1000))
                if not remaining or not self.socket.poll(remaining):
                    if timeout_ms:  # a caller that waits is idle: the moment to mend lost endpoints
                        self.repair()
                    return None
                continue
            if len(parts) != 2:
                self._drop("bad_frame_count", f"{len(parts)} frames, expected [topic, envelope]")
                continue
            try:
                topic = parts[0].decode()
                env = decode_envelope(parts[1])
            except (BadMessage, UnicodeDecodeError) as exc:
                self._drop("bad_envelope", str(exc))
                continue
            self.stats.received += 1
            self.stats.track_sequence(env.source, env.seq, topic)
            return topic, env

    def repair(self) -> list[str]:
        """Reconnect the endpoints whose peer broke the handshake protocol since the last call;
        return them (an endpoint the event names in another spelling reconnects them all)."""
        failed = handshake_failures(self.monitor)
        named = [endpoint for endpoint, address in self.addresses.items() if address in failed]
        targets = named if len(named) == len(failed) else list(self.endpoints)
        for endpoint in targets if failed else []:
            try:
                self.socket.disconnect(self.addresses[endpoint])
            except zmq.ZMQError:
                pass  # libzmq may have forgotten it already
            self.addresses[endpoint] = connect_socket(self.socket, endpoint, self.security)
        return sorted(failed)

    def close(self) -> None:
        close_monitored(self.socket, self.monitor)


def reply_body(request_id: str, result: Any = None, error: tuple[str, str] | None = None) -> dict[str, Any]:
    if error is not None:
        return {"re": request_id, "ok": False, "error": {"code": error[0], "message": error[1]}}
    return {"re": request_id, "ok": True, "result": result}


class RequestError(ValueError):
    """Raised by a handler to answer with a named error code instead of ``internal``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Handler = Callable[[Any], Any]


class Replier:
    """REP socket that dispatches by envelope type through a table of handlers.

    Every request gets exactly one reply, bad ones included, so the REQ/REP state
    machine never wedges and a bad client cannot stop the service. With keys, the caller is
    the identity the ZAP handler vouched for (the frame's User-Id), and a request its key may
    not send is answered ``forbidden`` without reaching a handler.
    """

    def __init__(
        self,
        ctx: Context,
        endpoint: str,
        source: str,
        handlers: Mapping[str, Handler],
        stats: BusStats | None = None,
        on_error: Callable[[str, str], None] | None = None,
        *,
        security: BusSecurity | None,
    ) -> None:
        self.source = source
        self.handlers = dict(handlers)
        self.stats = stats or BusStats()
        self.on_error = on_error
        self.secure = security is not None
        with closed_on_failure(ctx.socket(zmq.REP)) as self.socket:
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES + 1024)
            bind_socket(self.socket, endpoint, security)

    def answer(self, raw: bytes, caller: str | None = None) -> bytes:
        """Turn one raw request into one raw reply; pure dispatch, usable without a socket.
        ``caller`` is the authenticated identity; None (plain sockets) skips the permission check."""
        try:
            env = decode_envelope(raw)
        except BadMessage as exc:
            self.stats.count_drop("bad_request")
            return encode_envelope("reply", reply_body("", error=("bad_request", str(exc))), self.source)
        self.stats.received += 1
        handler = self.handlers.get(env.type)
        refusal = None if caller is None else may_request(caller, env.type)
        if refusal is not None:
            if self.stats.count_drop("forbidden_request") == 1 and self.on_error:  # logged once, counted always
                self.on_error(env.type, f"forbidden: {refusal}")
            body = reply_body(env.id, error=("forbidden", refusal))
        elif handler is None:
            self.stats.count_drop("unknown_request")
            known = ", ".join(sorted(self.handlers))
            body = reply_body(env.id, error=("unknown_request", f"unknown request type {env.type!r}; known: {known}"))
        else:
            try:
                body = reply_body(env.id, handler(env.body))
            except RequestError as exc:
                body = reply_body(env.id, error=(exc.code, str(exc)))
            except Exception as exc:  # a handler bug must not kill the service
                self.stats.count_drop("handler_error")
                if self.on_error:
                    self.on_error(env.type, f"{type(exc).__name__}: {exc}")
                body = reply_body(env.id, error=("internal", f"{type(exc).__name__}: {exc}"))
        try:
            return encode_envelope("reply", body, self.source)
        except (TypeError, ValueError, OverflowError) as exc:
            unserializable = reply_body(env.id, error=("internal", f"unserializable reply: {exc}"))
            return encode_envelope("reply", unserializable, self.source)

    def serve_pending(self, max_requests: int = 100) -> int:
        """Answer requests already waiting; return how many were served."""
        served = 0
        while served < max_requests:
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            raw = parts[-1].bytes if parts else b""
            self.socket.send(self.answer(raw, self._caller(parts[-1]) if parts else ""))
            self.stats.sent += 1
            served += 1
        return served

    def _caller(self, frame: zmq.Frame) -> str | None:
        """Who sent ``frame``: its ZAP User-Id on a secure socket ('' if it has none), else None."""
        if not self.secure:
            return None
        try:
            return str(frame.get("User-Id"))  # pyzmq types any property as int | str; this one is text
        except zmq.ZMQError:
            return ""

    def close(self) -> None:
        close_quietly(self.socket)


WAIT_SLICE_MS = 250


class Requester:
    """REQ client with the Lazy Pirate pattern: poll with a timeout, reopen, resend, give up.

    A peer that died never hangs the caller: after ``retries`` timeouts ``request`` raises
    RequestFailed. Replies to an earlier, abandoned request are recognised by ``re`` and dropped.
    ``security`` may be a function giving the keys: it is called when the socket first opens,
    so a requester that never sends needs no keys. ``while_waiting`` runs at least every
    WAIT_SLICE_MS while a reply is awaited (a service keeps its heartbeat going: a slow peer
    must not make the caller look dead).

    With keys, a peer that broke the handshake protocol (a plain socket on a restarting
    service's port) leaves the socket without a peer for good: the next request opens a fresh
    one before it sends, instead of losing a try's timeout on it.
    """

    def __init__(
        self,
        ctx: Context,
        endpoint: str,
        source: str,
        timeout_ms: int = 2000,
        retries: int = 3,
        stats: BusStats | None = None,
        *,
        security: BusSecurity | Callable[[], BusSecurity] | None,
        while_waiting: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.security = security
        self.while_waiting = while_waiting
        self.endpoint = endpoint
        self.source = source
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.stats = stats or BusStats()
        self.socket: Socket | None = None
        self.monitor: Socket | None = None  # handshake failures on ``socket`` (with keys)

    def _open(self) -> Socket:
        security = self.security() if callable(self.security) else self.security
        with closed_on_failure(self.ctx.socket(zmq.REQ)) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES + 1024)
            connect_socket(sock, self.endpoint, security)
            if security is not None:
                self.monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        return sock

    def _reset(self) -> None:
        """Close the socket (and its monitor): the next try opens a fresh one."""
        close_monitored(self.socket, self.monitor)
        self.socket = self.monitor = None

    def request(self, type_: str, body: Any = None, timeout_ms: int | None = None, retries: int | None = None) -> Any:
        """Send and wait for the matching reply's result; raise RequestFailed or RemoteError."""
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        tries = self.retries if retries is None else retries
        msg_id = new_message_id()
        frame = encode_envelope(type_, body, self.source, msg_id=msg_id)
        for _attempt in range(max(1, tries)):
            if handshake_failures(self.monitor):
                self.stats.count_drop("bus_handshake_failed")
                self._reset()  # libzmq dropped the only peer and will not reconnect it
            if self.socket is None:
                self.socket = self._open()
            deadline = time.monotonic() + timeout / 1000
            # A blocking send would wait forever once libzmq has dropped the only peer (it gives
            # up reconnecting after a peer broke the handshake protocol): the try fails instead,
            # and the next one goes on a fresh socket.
            sent = self._send(frame, deadline)
            if sent:
                self.stats.sent += 1
            else:
                self.stats.count_drop("request_unsendable")
            while sent and self._ready(zmq.POLLIN, deadline):
                try:
                    env = decode_envelope(self.socket.recv())
                except BadMessage:
                    self.stats.count_drop("bad_reply")
                    break
                reply = env.body if isinstance(env.body, dict) else {}
                if reply.get("re") not in (msg_id, ""):
                    self.stats.count_drop("stray_reply")
                    break  # REQ allows one reply per send: resend on a fresh socket
                self.stats.received += 1
                if reply.get("ok"):
                    return reply.get("result")
                error = reply.get("error") or {}
                raise RemoteError(str(error.get("code", "error")), str(error.get("message", "")))
            self._reset()  # the REQ socket is wedged: a fresh one lets us resend
        raise RequestFailed(f"no reply from {self.endpoint} to {type_!r} after {tries} tries of {timeout} ms")

    def _send(self, frame: bytes, deadline: float) -> bool:
        """Queue ``frame`` at once (the usual case: no extra system call), else when the socket
        can take it before ``deadline``."""
        assert self.socket is not None
        while True:
            try:
                self.socket.send(frame, zmq.NOBLOCK)
                return True
            except zmq.Again:
                if not self._ready(zmq.POLLOUT, deadline):
                    return False

    def _ready(self, event: int, deadline: float) -> bool:
        """Wait until the socket can ``event`` (zmq.POLLIN or zmq.POLLOUT), running
        ``while_waiting`` every WAIT_SLICE_MS; False at ``deadline`` (monotonic seconds)."""
        assert self.socket is not None
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            if remaining <= 0:
                return False
            if self.socket.poll(min(remaining, WAIT_SLICE_MS) if self.while_waiting else remaining, event):
                return True
            if self.while_waiting is not None:
                self.while_waiting()

    def close(self) -> None:
        self._reset()
