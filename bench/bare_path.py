"""The bar close -> fill ack path with nothing of go-trader's in it: the floor of its design here.

Three processes, as in the stack, on CURVE-encrypted loopback TCP: a feed sleeps until a close's
wall time and publishes a bar-sized message (PUB); an engine receives it (SUB) and sends an
order-sized request (REQ); a book appends a journal-sized line, fsyncs it, and replies (REP). The
engine records ack received minus the close's wall time. No decoding, deciding, pricing or
booking: what is left is three wake-ups, three hops and an fsync, which no change to
go-trader's code can remove. bench_latency runs it beside the running stack. Its closes come
every ``spacing_s`` and are not aligned with the stack's, so few of them meet a close's burst:
it is the design's floor on this machine as it is between the stack's closes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import zmq

from bench.ports import free_port

BAR = b"b" * 300  # about a bar envelope's size
ORDER = b"o" * 250
REPLY = b"r" * 200
LINE = b'{"seq":1,"kind":"spot","strategy_id":"probe","price":100.0,"quantity":1.0}\n' * 4
JOIN_TIMEOUT_S = 10.0
SPACING_S = 0.01  # between closes: an fsync right after another is cheaper than one a close brings
WARMUP_CLOSES = 20  # not recorded: the first request also waits for its connection's handshake


def _curve(sock: zmq.Socket, keys: dict[str, bytes], server: str | None = None, client_of: str | None = None) -> None:
    if server is not None:
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = keys[f"{server}_public"], keys[f"{server}_secret"]
    else:
        sock.curve_publickey, sock.curve_secretkey = keys["engine_public"], keys["engine_secret"]
        sock.curve_serverkey = keys[f"{client_of}_public"]


def _book(rep_ep: str, keys: dict[str, bytes], journal: str, ready: Any) -> None:
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.linger = 0
    _curve(rep, keys, server="book")
    rep.bind(rep_ep)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    ready.set()
    try:
        while True:
            if rep.recv() == b"stop":
                rep.send(b"")
                return
            os.write(fd, LINE)
            os.fsync(fd)
            rep.send(REPLY)
    finally:
        os.close(fd)
        rep.close()
        ctx.term()


def _engine(pub_ep: str, rep_ep: str, keys: dict[str, bytes], samples: int, ready: Any, out: Any) -> None:
    ctx = zmq.Context()
    sub, req = ctx.socket(zmq.SUB), ctx.socket(zmq.REQ)
    for sock in (sub, req):
        sock.linger = 0
    _curve(sub, keys, client_of="feed")
    _curve(req, keys, client_of="book")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub_ep)
    req.connect(rep_ep)
    latencies: list[float] = []
    try:
        while len(latencies) < WARMUP_CLOSES + samples:
            topic, due_ns, _bar = sub.recv_multipart()
            if topic == b"hello":  # the feed waits for this subscription before the first close
                ready.set()
                continue
            req.send(ORDER)
            req.recv()
            latencies.append((time.time_ns() - int(due_ns)) / 1e6)
        req.send(b"stop")
        req.recv()
    finally:
        out.put(latencies[WARMUP_CLOSES:])
        sub.close()
        req.close()
        ctx.term()


def close_to_ack(directory: Path, samples: int, spacing_s: float = SPACING_S) -> list[float]:
    """``samples`` closes ``spacing_s`` apart through the bare path; close -> ack of each (ms).
    The journal line goes to ``directory`` (the stack's state directory: the same disk)."""
    spawn = mp.get_context("spawn")  # no zmq context or stack state carried over by fork
    keys: dict[str, bytes] = {}
    for role in ("feed", "book", "engine"):
        keys[f"{role}_public"], keys[f"{role}_secret"] = zmq.curve_keypair()
    pub_ep, rep_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    journal = directory / "bare-path-probe.jsonl"
    book_ready, engine_ready, out = spawn.Event(), spawn.Event(), spawn.Queue()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    _curve(pub, keys, server="feed")
    pub.bind(pub_ep)
    book = spawn.Process(target=_book, args=(rep_ep, keys, str(journal), book_ready), daemon=True)
    engine = spawn.Process(target=_engine, args=(pub_ep, rep_ep, keys, samples, engine_ready, out), daemon=True)
    book.start()
    engine.start()
    try:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while not (engine_ready.is_set() and book_ready.is_set()):
            if time.monotonic() > deadline:
                raise RuntimeError("bare path: the engine or the book did not come up")
            pub.send_multipart([b"hello", b"0", b""])
            time.sleep(0.01)
        for _ in range(WARMUP_CLOSES + samples):
            due = time.time() + spacing_s
            time.sleep(max(0.0, due - time.time()))
            pub.send_multipart([b"bar", str(int(due * 1e9)).encode(), BAR])
        latencies: list[float] = out.get(timeout=JOIN_TIMEOUT_S)
    finally:
        for proc in (engine, book):
            proc.join(JOIN_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
        pub.close()
        ctx.term()
        journal.unlink(missing_ok=True)
    return latencies
