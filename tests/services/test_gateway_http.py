"""The gateway's HTTP server as a client sees it on the wire: keep-alive without a Nagle stall,
HTTP/1.0 with and without keep-alive, pipelining, a request body that is never a second request,
malformed and oversize request heads, slow and idle clients and readers that take nothing cut
off while others are served, the connection limit, and the event stream."""
from __future__ import annotations

import http.client
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.ports import free_port
from services import gateway_http
from services.gateway_cache import STATUS_TTL_MS
from services.gateway_http import (
    BUSY_REPLY,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    STREAM_PATH,
    EventStream,
    HttpServer,
    Subscriber,
    connection_limit,
)
from tests.services.test_gateway import Served, filled_cache
from tests.support.stack import REPO, stack_config, stack_security


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[str, dict[str, str], bytes, bytes]:
    """One response by its Content-Length: status line, headers (lower-case), body, bytes after it."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the headers ended: {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, headers, rest[:length], rest[length:]


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the server closes ``sock`` within ``within_s`` (EOF or a reset)."""
    sock.settimeout(within_s)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def wait_until(condition, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def served():
    s = Served(filled_cache())
    yield s
    s.close()


# --- keep-alive, HTTP/1.0, bodies --------------------------------------------------------------------
def test_keep_alive_requests_have_no_nagle_stall(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
    times = []
    for _ in range(21):
        began = time.perf_counter()
        conn.request("GET", "/status")
        resp = conn.getresponse()
        assert resp.status == 200 and len(resp.read()) > 100
        times.append(time.perf_counter() - began)
    conn.close()
    # Nagle with delayed ACKs adds ~40 ms to every request after the first on a connection
    assert statistics.median(times[1:]) < 0.015, times


def test_http10_without_keep_alive_gets_its_reply_and_a_close(served):
    with connect(served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        status, headers, body, _rest = read_response(sock)
        assert status.split()[1] == "200" and json.loads(body)["ok"] is True
        assert closed_by_peer(sock, 2.0)


def test_http10_keep_alive_serves_a_second_request_on_the_same_socket(served):
    with connect(served.port) as sock:
        for path in ("/healthz", "/status"):
            sock.sendall(f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            status, headers, body, rest = read_response(sock)
            assert status.split()[1] == "200" and headers["connection"].lower() == "keep-alive"
            assert json.loads(body) and rest == b""


def read_to_eof(sock: socket.socket, within_s: float = 2.0) -> bytes:
    """Everything the server sends until it closes ``sock`` (a test failure if it does not)."""
    sock.settimeout(within_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@pytest.mark.parametrize("framing", [b"Content-Length: %d\r\n", b"Transfer-Encoding: chunked\r\n"])
def test_a_request_body_is_never_parsed_as_a_second_request(served, framing):
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    body = smuggled if b"%d" in framing else b"0\r\n\r\n" + smuggled
    with connect(served.port) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + (framing % len(body) if b"%d" in framing else framing)
        sock.sendall(head + b"\r\n" + body)
        status, headers, reply, rest = read_response(sock)
        assert status.split()[1] == "200" and json.loads(reply)["ok"] is True
        assert headers["connection"] == "close"  # answered, then closed: the body is never read as a request
        assert rest + read_to_eof(sock) == b""  # no 404 for the body's "request"


def test_the_reply_before_a_close_survives_an_unread_body(served):
    """A socket closed with unread input is reset, and a reset drops what the kernel had not sent
    yet: the server stops writing, then drains the input before it closes."""
    body = b"x" * 100_000  # more than one read takes
    for _ in range(3):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the reply waits in the server's kernel
            sock.connect(("127.0.0.1", served.port))
            sock.settimeout(5)
            sock.sendall(b"GET /app.js HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            time.sleep(0.2)
            status, headers, reply, _rest = read_response(sock)
            assert status.split()[1] == "200" and len(reply) == int(headers["content-length"]) > 10_000


def test_an_empty_get_body_keeps_the_connection(served):
    with connect(served.port) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            status, headers, _body, rest = read_response(sock)
            assert status.split()[1] == "200" and "connection" not in headers and rest == b""


def test_connection_close_is_honoured(served):
    with connect(served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, _body, rest = read_response(sock)
        assert status.split()[1] == "200" and headers["connection"] == "close"
        assert rest + read_to_eof(sock) == b""


# --- malformed requests ---------------------------------------------------------------------------
def rejected(port: int, request: bytes) -> tuple[int, dict[str, str], dict]:
    """Send ``request``; the status, headers and JSON body of the one reply, checking that the
    connection is closed after it."""
    with connect(port) as sock:
        sock.sendall(request)
        status, headers, body, rest = read_response(sock)
        assert rest + read_to_eof(sock) == b""
    return int(status.split()[1]), headers, json.loads(body)


@pytest.mark.parametrize("request_line, says", [
    (b"GET /status", "malformed request line"),
    (b"GET  /status HTTP/1.1", "malformed request line"),
    (b"GET /status HTTP/1.1 extra", "malformed request line"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "malformed request line"),  # TLS to a plain port
    (b"GET status HTTP/1.1", "is not a path"),
    (b"GET /sta\x01tus HTTP/1.1", "is not a path"),
    (b"GET /st\xc3\xa4tus HTTP/1.1", "is not a path"),
    (b"GET /status HTTP/2.0", "unsupported protocol"),
    (b"GET /status http/1.1", "unsupported protocol"),
    (b"G(T /status HTTP/1.1", "malformed method"),
    (b"get /status HTTP/1.1", "unknown method"),
])
def test_a_malformed_request_line_is_a_400_naming_it_then_a_close(served, request_line, says):
    code, headers, doc = rejected(served.port, request_line + b"\r\nHost: x\r\n\r\n")
    assert code == 400 and headers["connection"] == "close" and says in doc["error"], doc


@pytest.mark.parametrize("header, says", [
    (b"Host x", "malformed header line"),
    (b"Host : x", "malformed header line"),
    (b": x", "malformed header line"),
    (b" folded: x", "malformed header line"),
    (b"X-A: a\x00b", "NUL"),
    (b"Content-Length: abc", "invalid Content-Length"),
    (b"Content-Length: -1", "invalid Content-Length"),
    (b"Content-Length: 1\r\nContent-Length: 2", "invalid Content-Length"),
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked", "ambiguous"),
    (b"Host: x\nX-Smuggled: y", "bare CR or LF"),
    (b"Host: x\rX-Smuggled: y", "bare CR or LF"),
])
def test_a_malformed_header_is_a_400_naming_it_then_a_close(served, header, says):
    code, _headers, doc = rejected(served.port, b"GET /healthz HTTP/1.1\r\n" + header + b"\r\n\r\n")
    assert code == 400 and says in doc["error"], doc


def test_a_head_in_bare_lfs_is_a_400_not_a_wait_for_the_timeout(served):
    code, _headers, doc = rejected(served.port, b"GET /healthz HTTP/1.1\nHost: x\n\n")
    assert code == 400 and "CRLF" in doc["error"]


def test_the_path_is_percent_decoded(served):
    assert served.get("/%73tatus")[0] == 200
    code, _h, body = served.get("/no%20such")
    assert code == 404 and json.loads(body)["error"] == "no such path '/no such'"


def test_an_oversize_head_is_a_431_whether_complete_or_not(served):
    for ending in (b"\r\n\r\n", b""):
        request = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + ending
        code, _headers, doc = rejected(served.port, request)
        assert code == 431 and f"over {MAX_HEAD_BYTES} bytes" in doc["error"]
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
    code, _headers, doc = rejected(served.port, b"GET /healthz HTTP/1.1\r\n" + many + b"\r\n")
    assert code == 431 and "header lines" in doc["error"]


def test_a_head_just_under_the_limit_is_served(served):
    request = b"GET /healthz HTTP/1.1\r\nX-Big: "
    request += b"a" * (MAX_HEAD_BYTES - len(request)) + b"\r\n\r\n"
    assert len(request) == MAX_HEAD_BYTES + 4
    with connect(served.port) as sock:
        sock.sendall(request)
        assert read_response(sock)[0].split()[1] == "200"


def test_bad_bytes_on_one_connection_leave_the_others_served(served):
    with connect(served.port) as good, connect(served.port) as bad:
        good.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(good)[0].split()[1] == "200"
        bad.sendall(bytes(range(256)) * 40)  # binary garbage, no head end within the limit
        assert b" 431 " in read_to_eof(bad)[:20]
        good.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(good)[0].split()[1] == "200"
    assert served.server.counts["internal_errors"] == 0


def test_pipelined_requests_are_answered_in_order(served):
    with connect(served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_response(sock)
        second = read_response(sock, first[3])
        assert first[0].split()[1] == "200" and second[0].split()[1] == "404"


def test_many_pipelined_requests_in_one_write_are_answered_in_order(served):
    paths = ["/status", "/healthz", "/nope", "/metrics", "/api/equity"] * 40  # 200 requests, ~1 MB of replies
    with connect(served.port) as sock:
        sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
        rest = b""
        for path in paths:
            status, headers, body, rest = read_response(sock, rest)
            assert status.split()[1] == ("404" if path == "/nope" else "200"), path
            assert headers["content-type"] == ("text/plain; version=0.0.4; charset=utf-8" if path == "/metrics"
                                               else "application/json")
        assert rest == b""


def test_a_client_that_pipelines_without_reading_is_dropped(monkeypatch):
    monkeypatch.setattr(gateway_http, "WRITE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(gateway_http, "CHECK_S", 0.05)
    s = Served(filled_cache())
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", s.port))
            sock.settimeout(0.05)
            began = time.monotonic()
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 100
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                while time.monotonic() - began < 10:
                    try:
                        sock.sendall(request)
                    except socket.timeout:  # the server stopped reading: its buffers are full
                        assert s.get("/healthz")[0] == 200  # and others are served meanwhile
            assert 0.5 <= time.monotonic() - began < 10
        assert wait_until(lambda: s.server.counts["connections"] == 0, 5.0)
    finally:
        s.close()


# --- slow clients and the connection limit -----------------------------------------------------------
def test_a_slowloris_client_is_cut_off_after_the_idle_timeout_while_others_are_served():
    s = Served(filled_cache(), idle_timeout_s=0.6)
    try:
        slow = connect(s.port)
        began = time.monotonic()
        request = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
        cut = False
        for byte in request:  # a byte every 50 ms: the request never completes
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            assert s.get("/healthz")[0] == 200  # others are served meanwhile
            if closed_by_peer(slow, 0.05):
                cut = True
                break
        elapsed = time.monotonic() - began
        assert cut and 0.5 <= elapsed < 2.5, elapsed
        slow.close()
    finally:
        s.close()


def test_the_idle_timeout_runs_from_the_end_of_the_last_reply():
    s = Served(filled_cache(), idle_timeout_s=0.5)
    try:
        with connect(s.port) as sock:
            for _ in range(3):  # 0.9 s in all, each request within 0.5 s of the previous reply
                time.sleep(0.3)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(sock)[0].split()[1] == "200"
            began = time.monotonic()
            assert closed_by_peer(sock, 3.0) and 0.3 < time.monotonic() - began < 2.5
    finally:
        s.close()


def test_a_bug_in_handling_closes_only_its_connection(monkeypatch):
    before = set(threading.enumerate())
    s = Served(filled_cache())
    (thread,) = [t for t in threading.enumerate() if t not in before and t.name == "http"]
    try:
        with connect(s.port) as other:
            def broken(request):
                raise RuntimeError("a bug")

            monkeypatch.setattr(s.server.app, "handle", broken)
            with connect(s.port) as victim:
                victim.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_to_eof(victim) == b""
            monkeypatch.undo()
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(other)[0].split()[1] == "200"
        assert s.server.counts["internal_errors"] == 1 and thread.is_alive()
    finally:
        s.close()
    assert not thread.is_alive()


def test_an_idle_connection_that_never_sends_is_closed():
    s = Served(filled_cache(), idle_timeout_s=0.3)
    try:
        with connect(s.port) as idle:
            assert closed_by_peer(idle, 2.0)
    finally:
        s.close()


def test_at_the_connection_limit_the_oldest_idle_connection_makes_room():
    s = Served(filled_cache(), max_connections=4)
    try:
        held = [connect(s.port) for _ in range(4)]
        time.sleep(0.1)  # each is accepted and waiting for its request
        assert s.get("/healthz")[0] == 200
        assert closed_by_peer(held[0], 1.0)
        assert s.server.counts["evicted"] >= 1 and s.server.counts["connections"] <= 4
        for sock in held:
            sock.close()
    finally:
        s.close()


def test_when_every_connection_is_busy_a_new_one_gets_503():
    s = Served(filled_cache(), max_connections=2)
    try:
        streams = [connect(s.port) for _ in range(2)]
        for sock in streams:
            sock.sendall(f"GET {STREAM_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sock.recv(65536)  # the stream has started: this connection is mid-request for good
        with connect(s.port) as extra:
            reply = b""
            while chunk := extra.recv(65536):
                reply += chunk
        assert reply == BUSY_REPLY and s.server.counts["refused"] == 1
        for sock in streams:
            sock.close()
    finally:
        s.close()


OUT_OF_DESCRIPTORS = """
import os, resource, socket, subprocess, sys, time
from services.gateway_http import HttpServer
from tests.services.test_gateway import filled_cache
from tests.services.test_gateway_http import read_response
server = HttpServer("127.0.0.1", 0, filled_cache(), max_connections=1000).start()  # a limit above the fds
# 30 clients in a process of their own (started before the limit, which it would inherit): only the
# server's side of each connection counts against this process's limit
clients = subprocess.Popen([sys.executable, "-c", "import socket, sys\\nsys.stdin.readline()\\n"
                            f"held = [socket.create_connection(('127.0.0.1', {server.port})) for _ in range(30)]\\n"
                            "print('ready', flush=True)\\nsys.stdin.read()"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 20, resource.getrlimit(
    resource.RLIMIT_NOFILE)[1]))
clients.stdin.write("go\\n")
clients.stdin.flush()
assert clients.stdout.readline().strip() == "ready"
time.sleep(0.5)
held = server.counts["connections"]
began = time.process_time()
time.sleep(1.0)
spent = time.process_time() - began
clients.communicate("", timeout=30)  # they close: the server frees its side and accepts again
time.sleep(0.5)
with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
    sock.sendall(b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    status = read_response(sock)[0]
server.stop()
print(held, spent, status)
"""


def test_out_of_descriptors_the_server_pauses_accepting_instead_of_spinning():
    done = subprocess.run([sys.executable, "-c", OUT_OF_DESCRIPTORS], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=True)
    held, spent, status = done.stdout.split(maxsplit=2)
    assert 0 < int(held) < 30  # accept() failed for the rest: they waited in the backlog
    assert float(spent) < 0.3, spent  # a spinning loop would burn most of that second
    assert status.strip() == "HTTP/1.1 200 OK"  # descriptors freed: accepting again


def test_the_connection_limit_stays_below_the_open_file_limit():
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_limit(10) == min(10, soft - 64)
    assert connection_limit(10**9) <= soft - 64


# --- server-sent events -----------------------------------------------------------------------------
class EventReader:
    """Server-sent events from a raw socket: undoes the chunked transfer coding, then splits
    the text/event-stream into (event name, JSON data)."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock, self.raw, self.text = sock, buffered, b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("stream closed")
        self.raw += chunk

    def _dechunk(self) -> None:
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            self.text += rest[:size]
            self.raw = rest[size + 2:]

    def events(self, count: int) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        while len(out) < count:
            self._dechunk()
            if b"\n\n" not in self.text:
                self._fill()
                continue
            block, self.text = self.text.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if line.startswith((b"event:", b"data:")))
            if b"event" in fields:
                out.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
        return out


def open_stream(port: int, path: str = STREAM_PATH) -> tuple[socket.socket, dict[str, str], EventReader]:
    sock = connect(port)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    assert status.split()[1] == "200", head
    assert headers["transfer-encoding"] == "chunked"
    return sock, headers, EventReader(sock, rest)


def test_the_stream_sends_the_current_state_then_each_new_snapshot():
    s = Served(filled_cache(), stream_interval_s=0.05)
    try:
        sock, headers, reader = open_stream(s.port)
        assert headers["content-type"] == "text/event-stream" and headers["cache-control"] == "no-store"
        first = reader.events(2)
        assert [name for name, _doc in first] == ["status", "equity"]
        assert first[0][1]["strategies"]["momentum-btc"]["portfolio_value"] == pytest.approx(1_100.0)
        assert first[1][1]["strategies"]["momentum-btc"][:2] == [1000.0, 1040.0]
        s.cache.clone = replace(s.cache.clone, prices={"BTC/USDT": 70_000.0})  # a delta's marks: replaced whole
        s.cache.clock_ms.now += STATUS_TTL_MS
        (name, doc), = reader.events(1)
        assert name == "status" and doc["strategies"]["momentum-btc"]["portfolio_value"] == pytest.approx(1_200.0)
        sock.close()
    finally:
        s.close()


def test_a_stream_reader_that_takes_nothing_is_dropped_while_others_keep_up(monkeypatch):
    monkeypatch.setattr(gateway_http, "WRITE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(gateway_http, "CHECK_S", 0.05)
    s = Served(filled_cache(), stream_interval_s=0.01)
    try:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", s.port))
        slow.sendall(f"GET {STREAM_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())  # and never reads
        good, _h, reader = open_stream(s.port)
        assert [name for name, _doc in reader.events(2)] == ["status", "equity"]
        began = time.monotonic()
        while s.server.counts["dropped_slow"] == 0 and time.monotonic() - began < 30:
            s.cache.clock_ms.now += STATUS_TTL_MS  # a new status document, published to both
            while reader.events(1)[0][0] != "status":  # the first round repeats the equity log too
                pass
        counts = s.server.counts
        assert counts["dropped_slow"] == 1 and counts["subscribers"] == 1 and counts["coalesced"] >= 1
        assert closed_by_peer(slow, 2.0)
        s.cache.clock_ms.now += STATUS_TTL_MS
        assert reader.events(1)[0][0] == "status"  # the reader that keeps up still gets every document
        slow.close()
        good.close()
    finally:
        s.close()


def test_an_http10_stream_is_unchunked_and_ends_with_the_connection():
    s = Served(filled_cache())
    try:
        with connect(s.port) as sock:
            sock.sendall(f"GET {STREAM_PATH} HTTP/1.0\r\n\r\n".encode())
            data = b""
            while data.count(b"\n\n") < 4:  # the head's blank line, the retry line, two events
                data += sock.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            assert b"transfer-encoding" not in head.lower() and b"Connection: close" in head
            assert body.startswith(b"retry: 2000\n\nevent: status\ndata: {")
            s.close()
            assert closed_by_peer(sock, 2.0)
    finally:
        s.close()


def test_the_stream_refuses_subscribers_beyond_its_bound():
    s = Served(filled_cache(), max_subscribers=1)
    try:
        sock, _h, _rest = open_stream(s.port)
        code, headers, body = s.get(STREAM_PATH)
        assert code == 503 and headers["Retry-After"] == "5" and "stream full" in json.loads(body)["error"]
        assert s.server.counts["stream_refused"] == 1
        sock.close()
    finally:
        s.close()


def test_head_on_the_stream_is_headers_only(served):
    code, headers, body = served.get(STREAM_PATH, method="HEAD")
    assert code == 200 and headers["Content-Type"] == "text/event-stream" and body == b""


def test_the_stream_takes_the_token_as_a_query_parameter():
    s = Served(filled_cache(), token="s3cret")
    try:
        assert s.get(STREAM_PATH)[0] == 401
        assert s.get(STREAM_PATH + "?access_token=wrong")[0] == 401
        assert s.get("/status?access_token=s3cret")[0] == 401  # only the stream, which cannot send headers
        sock, _h, reader = open_stream(s.port, STREAM_PATH + "?access_token=s3cret")
        assert reader.events(1)[0][0] == "status"
        sock.close()
    finally:
        s.close()


def test_a_slow_subscriber_holds_only_the_latest_event_of_each_kind():
    sub = Subscriber()
    assert sub.offer("status", b"1") is False
    assert sub.offer("status", b"2") is True and sub.offer("equity", b"e") is False
    assert sub.pending == {"status": b"2", "equity": b"e"}
    assert sub.take() == b"2e" and sub.pending == {} and sub.take() == b""


def test_the_stream_publishes_each_new_status_document_and_each_new_equity_log():
    cache = filled_cache()
    stream = EventStream(cache)
    assert set(stream.changed()) == {"status", "equity"}
    assert stream.changed() == {}
    cache.heartbeats = dict(cache.heartbeats)
    assert stream.changed() == {}  # the status document is rebuilt at most once per interval
    cache.clock_ms.now += STATUS_TTL_MS
    (event,) = stream.changed().values()
    assert json.loads(event.split(b"data: ", 1)[1])["health"]["services"]["pricer"]["last_heartbeat_age_s"] == 0.65
    cache.equity_points = list(cache.equity_points)
    assert set(stream.changed()) == {"equity"}
    cache.clock_ms.now += STATUS_TTL_MS  # nothing replaced (every service stopped): heartbeat ages still move on
    assert set(stream.changed()) == {"status"}


def test_stopping_with_an_open_stream_takes_under_three_seconds():
    s = Served(filled_cache())
    sock, _h, _rest = open_stream(s.port)
    began = time.monotonic()
    s.close()
    assert time.monotonic() - began < 3.0
    assert closed_by_peer(sock, 2.0)
    sock.close()


# --- health in /metrics ---------------------------------------------------------------------------
def test_metrics_count_each_services_problems():
    cache = filled_cache()
    cache.heartbeats = {**cache.heartbeats, "portfolio": {**cache.heartbeats["portfolio"],
                                                          "problems": ["persist: disk full", "marking: 2 books"]}}
    s = Served(cache)
    try:
        code, _h, body = s.get("/metrics")
        samples = {(x.name, tuple(sorted(x.labels.items()))): x.value
                   for family in text_string_to_metric_families(body.decode()) for x in family.samples}
        assert samples[("gotrader_service_problems", (("service", "portfolio"),))] == 2.0
        assert samples[("gotrader_service_problems", (("service", "pricer"),))] == 0.0
        assert samples[("gotrader_service_problem", (("problem", "persist"), ("service", "portfolio")))] == 1.0
        assert samples[("gotrader_http_connections", ())] >= 1.0
        assert s.get("/healthz")[0] == 503
    finally:
        s.close()


def test_a_busy_port_is_reported_by_start():
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(OSError, match="address already in use"):
            HttpServer("127.0.0.1", port, filled_cache()).start()


# --- the process ------------------------------------------------------------------------------------
def test_sigterm_stops_the_gateway_with_a_stream_open_well_within_stopwaitsecs(tmp_path):
    cfg = stack_config()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    port = cfg["gateway"]["port"]
    stack_security(cfg, tmp_path, "gateway")  # its bus keys, beside the state as the service looks for them
    proc = subprocess.Popen([sys.executable, "-m", "services.gateway", "--config", str(path)], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock, _h, reader = open_stream(port)
                break
            except (ConnectionRefusedError, ConnectionResetError):
                assert time.monotonic() < deadline and proc.poll() is None, "the gateway did not start"
                time.sleep(0.1)
        assert reader.events(1)[0][0] == "status"
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 5.0  # supervisord's stopwaitsecs is 15
        assert closed_by_peer(sock, 1.0)
        sock.close()
        events = [json.loads(line)["event"] for line in proc.stdout.read().splitlines()]
        assert "http_listening" in events and events[-1] == "stopped" and "stop_failed" not in events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
