"""Loopback ports for test servers that no other socket on the machine is about to take.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range and frees it
at once; between then and the service's own bind, any outgoing connection (every zmq
connect is one) may take it as its local port, and a second ``bind(0)`` may return it
again. Ports here come from below the ephemeral range, are never handed out twice in one
test process, and are checked free by binding before they are returned. Parallel test workers
(``make test`` runs pytest-xdist) each draw from their own slice of that range, so two stacks
started at once never pick the same port.
"""
from __future__ import annotations

import errno
import os
import random
import socket
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

_handed_out: set[int] = set()
_rng = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _whole_range() -> tuple[int, int]:
    """[low, high) of the ports every worker's slice is cut from: below the ephemeral range."""
    high = _ephemeral_low()
    return max(1024, high - 12_000), high


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _worker_slice() -> tuple[int, int]:
    """(this worker, workers) as pytest-xdist names them (``gw3`` of 4); (0, 1) outside it."""
    try:
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        return 0, 1
    return (worker, workers) if 0 <= worker < workers else (0, 1)


def free_port() -> int:
    """A free loopback TCP port below the ephemeral range, unique within this process and
    apart from every other test worker's."""
    low, high = _whole_range()
    worker, workers = _worker_slice()
    span = (high - low) // workers
    low, high = low + worker * span, low + (worker + 1) * span
    for _ in range(1000):
        port = _rng.randrange(low, high)
        if port not in _handed_out and _is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in [{low}, {high})")


def tcp_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def bind_when_free(bind: Callable[[], T], timeout_s: float = 5.0) -> T:
    """``bind()`` retried while the port is still held: zmq closes sockets in its I/O thread, so
    a port a socket (or a process) just let go of can be busy for a moment after."""
    import zmq

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return bind()
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
