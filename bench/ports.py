"""Loopback ports for test servers that no other socket on the machine is about to take.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range and frees it
at once; between then and the service's own bind, any outgoing connection (every zmq
connect is one) may take it as its local port, and a second ``bind(0)`` may return it
again. Ports here come from below the ephemeral range, are never handed out twice in one
test process, and are checked free by binding before they are returned.
"""
from __future__ import annotations

import errno
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


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback TCP port below the ephemeral range, unique within this process."""
    high = _ephemeral_low()
    low = max(1024, high - 12_000)
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
