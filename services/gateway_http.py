"""The gateway's HTTP side: a small HTTP/1.1 server on the stdlib ``selectors`` module, one
thread ("http") with non-blocking sockets, reading the GatewayCache that the zmq loop (the main
thread) replaces whole, never in place. No asyncio, ssl or http.server: the process maps
neither libssl nor libcrypto, and the server is a few hundred lines that can be read whole.

Serves      GET/HEAD /, /app.js, /style.css, /openapi.json (the dashboard, from services/web),
            /status, /healthz, /metrics, /api/equity, and /api/stream (server-sent events)
Refuses     any other method (405, or 400 for one HTTP does not define), an unknown path (404),
            a data path without the bearer token when one is set (401), a malformed request
            line or header (400, naming what was wrong), a request head over MAX_HEAD_BYTES or
            with more than MAX_HEADERS lines (431); after a 400 or 431 the connection is closed

Connections are HTTP/1.1 keep-alive by default (HTTP/1.0 only with ``Connection: keep-alive``;
``Connection: close`` is honoured); pipelined requests are answered in order. A request that
carries a body (Content-Length > 0 or Transfer-Encoding) is answered and its connection then
closed: nothing here takes a body, and so no body is ever read as a second request (request
smuggling). Content-Length together with Transfer-Encoding, or an invalid or conflicting
Content-Length, is a 400.

What a hostile or careless client cannot do, and where that is kept:
- hold more than ``max_connections`` sockets: at the limit a new connection displaces the
  connection that has waited longest without a request in hand (idle keep-alive, or still
  receiving its request); only when every connection is mid-reply or streaming does the
  newcomer get a 503 (HttpServer._accept);
- hold a socket without completing a request: a connection must send a complete request head
  within ``idle_timeout_s`` of connecting or of the end of its last reply, however slowly its
  bytes come, or it is closed (HttpServer.waiting, in deadline order);
- make the server buffer for it: a reader that takes no bytes for WRITE_TIMEOUT_S is closed,
  and while a reply waits to be written nothing more is read from its connection;
- make one stream subscriber cost unbounded memory: each holds only the latest event of each
  kind (older ones are dropped, counted ``coalesced``) and is written to only once its socket
  took the previous batch; one that takes nothing for WRITE_TIMEOUT_S is dropped (EventStream);
- stop the server: bad bytes cost their own connection a 400 and a close, and an unexpected
  error in handling a connection closes that connection only (``internal_errors``).
Replies are written once (headers and body in one send) on TCP_NODELAY sockets.
"""
from __future__ import annotations

import hmac
import re
import resource
import selectors
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote

from services.gateway_cache import GatewayCache
from services.views.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from services.views.status import encode_json

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_FILES = {  # path -> (file in services/web, content type); the UI shell carries no data
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/openapi.json": ("openapi.json", "application/json"),
}
JSON = "application/json"
EVENT_STREAM = "text/event-stream"
ALLOWED_METHODS = "GET, HEAD"
HTTP_METHODS = frozenset((  # IANA's HTTP method registry: these get a 405, any other token a 400
    "ACL BASELINE-CONTROL BIND CHECKIN CHECKOUT CONNECT COPY DELETE GET HEAD LABEL LINK LOCK MERGE MKACTIVITY "
    "MKCALENDAR MKCOL MKREDIRECTREF MKWORKSPACE MOVE OPTIONS ORDERPATCH PATCH POST PRI PROPFIND PROPPATCH PUT "
    "QUERY REBIND REPORT SEARCH TRACE UNBIND UNCHECKOUT UNLINK UNLOCK UPDATE UPDATEREDIRECTREF VERSION-CONTROL"
).split())
STREAM_PATH = "/api/stream"

MAX_CONNECTIONS = 512  # a few dashboards and scrapers need tens; far below the fd limit
FD_RESERVE = 64  # descriptors kept for zmq, logs and the listening socket
IDLE_TIMEOUT_S = 10.0  # a connection must complete a request within this (from connect or last reply)
BACKLOG = 2048  # a wave of new connections waits in the kernel instead of losing SYNs (1 s, 3 s retries)
MAX_HEAD_BYTES = 8192  # request line and headers together
MAX_HEADERS = 64
RECV_BYTES = 65536
OUTPUT_HIGH_BYTES = 256 * 1024  # pipelined replies queued past this wait until the socket took them
LINGER_S = 2.0  # after a last reply, unread bytes are drained this long so the reply is not reset away
LINGER_BYTES = 65536
ACCEPTS_PER_EVENT = 64  # a wave of connects cannot starve the connections already open
ACCEPT_PAUSE_S = 0.5  # out of descriptors: stop accepting this long rather than spin
CHECK_S = 1.0  # how often stalled writers and quiet streams are looked at

MAX_SUBSCRIBERS = 32
STREAM_INTERVAL_S = 0.5  # at most two status events a second, whatever the bus does
PING_S = 15.0  # a comment line keeps proxies from closing a quiet stream and finds dead clients
WRITE_TIMEOUT_S = 10.0  # a reader (stream subscriber or not) that takes no bytes for this long is dropped
RETRY_MS = 2000  # what EventSource waits before it reconnects


def load_static(web_dir: Path = WEB_DIR) -> dict[str, tuple[bytes, str]]:
    """The dashboard's files, read once; a missing file is a broken install, said plainly."""
    files = {}
    for path, (name, content_type) in STATIC_FILES.items():
        file = web_dir / name
        if not file.is_file():
            raise FileNotFoundError(f"gateway: dashboard file {file} is missing (services/web is package data)")
        files[path] = (file.read_bytes(), content_type)
    return files


# --- data routes: pure functions of the cache ------------------------------------------------
Route = Callable[["GatewayCache"], tuple[int, bytes, str]]


def route_status(cache: GatewayCache) -> tuple[int, bytes, str]:
    return 200, cache.status_json(), JSON


def route_health(cache: GatewayCache) -> tuple[int, bytes, str]:
    health = cache.health()
    return (200 if health["ok"] else 503), encode_json(health), JSON


def route_metrics(cache: GatewayCache) -> tuple[int, bytes, str]:
    return 200, cache.metrics_text(), METRICS_CONTENT_TYPE


def route_equity(cache: GatewayCache) -> tuple[int, bytes, str]:
    return 200, encode_json(cache.equity()), JSON


ROUTES: dict[str, Route] = {
    "/status": route_status,
    "/healthz": route_health,
    "/metrics": route_metrics,
    "/api/equity": route_equity,
}


def connection_limit(wanted: int = MAX_CONNECTIONS) -> int:
    """``wanted``, lowered to what the open-file limit leaves after FD_RESERVE: past it,
    accept() fails, which is what a limit prevents."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


# --- requests ---------------------------------------------------------------------------------------
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # a header name or a method (RFC 9110 token)


class BadRequest(ValueError):
    """A request this server will not read further: ``code`` (400 or 431) and what was wrong."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Request:
    """What the routes need from a request head."""

    method: str
    path: str  # percent-decoded
    query: str
    http11: bool
    keep_alive: bool
    authorization: bytes | None


def parse_head(head: bytes) -> Request:
    """A request head (request line and headers, without the blank line) as a Request, or a
    BadRequest naming what was wrong. Headers other than Connection, Authorization,
    Content-Length and Transfer-Encoding are checked for form only."""
    lines = head.split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, f"{len(lines) - 1} header lines, more than {MAX_HEADERS}")
    if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        raise BadRequest(400, "a bare CR or LF in the request head: lines end in CRLF")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, f"malformed request line {lines[0][:100]!r}: want 'METHOD /path HTTP/1.1'")
    method_b, target, version = parts
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    else:
        raise BadRequest(400, f"unsupported protocol {version[:20]!r}: this server speaks HTTP/1.1 and HTTP/1.0")
    if not TOKEN.match(method_b):
        raise BadRequest(400, f"malformed method {method_b[:20]!r}")
    method = method_b.decode("ascii")
    if method not in HTTP_METHODS:
        raise BadRequest(400, f"unknown method {method[:20]!r}")
    if not target.startswith(b"/") or not target.isascii() or not target.decode("ascii").isprintable():
        raise BadRequest(400, f"request target {target[:100]!r} is not a path")
    connection = authorization = None
    lengths: set[bytes] = set()
    chunked = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.match(name):
            raise BadRequest(400, f"malformed header line {line[:100]!r}")
        value = value.strip(b" \t")
        if b"\x00" in value:
            raise BadRequest(400, f"header {name[:40]!r} holds a NUL byte")
        name = name.lower()
        if name == b"connection":
            connection = value.lower()
        elif name == b"authorization":
            authorization = value
        elif name == b"content-length":
            lengths.add(value)
        elif name == b"transfer-encoding":
            chunked = True
    has_body = chunked
    if lengths:
        if chunked:
            raise BadRequest(400, "both Content-Length and Transfer-Encoding: the body's length is ambiguous")
        length = next(iter(lengths))
        if len(lengths) > 1 or not length.isdigit() or len(length) > 18:
            raise BadRequest(400, f"invalid Content-Length {b', '.join(sorted(lengths))[:60]!r}")
        has_body = int(length) > 0
    tokens = {t.strip() for t in connection.split(b",")} if connection else set()
    keep_alive = not has_body and (b"close" not in tokens if http11 else b"keep-alive" in tokens)
    raw_path, _q, query = target.decode("ascii").partition("?")
    path = unquote(raw_path) if "%" in raw_path else raw_path
    return Request(method, path, query, http11, keep_alive, authorization)


# --- replies ----------------------------------------------------------------------------------------
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
KEEP_ALIVE_10 = b"Connection: keep-alive\r\n"
CLOSE = b"Connection: close\r\n"
Reply = tuple[int, bytes, str, bytes]  # status, body, content type, extra header lines (each ending CRLF)

_prefixes: dict[tuple[int, str], bytes] = {}


def reply_head(code: int, content_type: str) -> bytes:
    """The status line and the headers every reply carries, built once per (code, type)."""
    prefix = _prefixes.get((code, content_type))
    if prefix is None:
        prefix = (f"HTTP/1.1 {code} {REASONS[code]}\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\n"
                  "X-Content-Type-Options: nosniff\r\nServer: go-trader\r\n").encode("latin-1")
        _prefixes[(code, content_type)] = prefix
    return prefix


def render(reply: Reply, connection: bytes, head_only: bool) -> bytes:
    """One reply's bytes: the head, and the body unless ``head_only`` (HEAD)."""
    code, body, content_type, extra = reply
    head = b"%s%s%sContent-Length: %d\r\n\r\n" % (reply_head(code, content_type), extra, connection, len(body))
    return head if head_only else head + body


def error(code: int, message: str, extra: bytes = b"") -> Reply:
    return code, encode_json({"error": message}), JSON, extra


BUSY_BODY = encode_json({"error": "too many connections, every one busy with a request; retry shortly"})
BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: " + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)
STREAM_HEADERS = reply_head(200, EVENT_STREAM) + b"X-Accel-Buffering: no\r\n"
STREAM_HEAD_11 = STREAM_HEADERS + b"Transfer-Encoding: chunked\r\n\r\n"
STREAM_HEAD_10 = STREAM_HEADERS + CLOSE + b"\r\n"  # HTTP/1.0 has no chunks: the stream ends with the connection


class GatewayApp:
    """The routes: GET/HEAD only, a bearer token on data paths when ``token`` is set. ``handle``
    gives a Reply, or None for a GET of the stream (which the server starts)."""

    def __init__(self, cache: GatewayCache, token: str | None, static: dict[str, tuple[bytes, str]] | None = None
                 ) -> None:
        self.cache = cache
        self.static = load_static() if static is None else static
        self.token = token.encode() if token else None
        self.known_paths = sorted([*ROUTES, STREAM_PATH, *self.static])

    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        if hmac.compare_digest(request.authorization or b"", b"Bearer " + self.token):
            return True
        if request.path != STREAM_PATH:
            return False
        # EventSource cannot send headers: the stream also takes RFC 6750's access_token parameter
        given = next((v for k, v in parse_qsl(request.query, keep_blank_values=True) if k == "access_token"), None)
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    def handle(self, request: Request) -> Reply | None:
        if request.method not in ("GET", "HEAD"):
            return error(405, f"method {request.method} not allowed: this gateway is read-only",
                         b"Allow: " + ALLOWED_METHODS.encode() + b"\r\n")
        path = request.path
        static = self.static.get(path)
        if static is not None:
            return 200, static[0], static[1], b""
        route = ROUTES.get(path)
        if route is None and path != STREAM_PATH:
            return 404, encode_json({"error": f"no such path {path!r}", "paths": self.known_paths}), JSON, b""
        if not self.authorized(request):
            return error(401, "missing or wrong bearer token", b"WWW-Authenticate: Bearer\r\n")
        if route is None:
            return (200, b"", EVENT_STREAM, b"X-Accel-Buffering: no\r\n") if request.method == "HEAD" else None
        try:
            code, body, content_type = route(self.cache)
        except Exception as exc:  # a bad cache entry must cost one reply, not the server
            return error(500, f"{type(exc).__name__}: {exc}")
        return code, body, content_type, b""


# --- server-sent events -------------------------------------------------------------------------
def sse_event(name: str, data: bytes) -> bytes:
    """One event in the text/event-stream format (``data`` is single-line JSON)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(eq=False)
class Subscriber:
    """One stream client: the latest event of each kind, not yet written (older ones dropped)."""

    pending: dict[str, bytes] = field(default_factory=dict)

    def offer(self, name: str, event: bytes) -> bool:
        """Queue ``event``; True when it replaced one the client had not taken yet."""
        replaced = name in self.pending
        self.pending[name] = event
        return replaced

    def take(self) -> bytes:
        """Every pending event, in one piece, and none left pending."""
        events, self.pending = self.pending, {}
        return b"".join(events.values())


class EventStream:
    """Pushes ``status`` (with health) and ``equity`` events to a bounded set of subscribers,
    each when the cache entries behind it were replaced, checked every ``interval_s``."""

    def __init__(self, cache: GatewayCache, max_subscribers: int = MAX_SUBSCRIBERS,
                 interval_s: float = STREAM_INTERVAL_S) -> None:
        self.cache = cache
        self.max_subscribers = max_subscribers
        self.interval_s = interval_s
        self.subscribers: set[Subscriber] = set()
        self.counts = {"stream_refused": 0, "coalesced": 0, "dropped_slow": 0, "events": 0}
        self._seen: dict[str, tuple[Any, ...]] = {}

    def current(self) -> dict[str, bytes]:
        """Every event kind built now (a new subscriber starts from these)."""
        return {"status": sse_event("status", self.cache.status_json()),
                "equity": sse_event("equity", encode_json(self.cache.equity()))}

    def changed(self) -> dict[str, bytes]:
        """The events whose document was rebuilt since the last call: status whenever the
        cache built a new one (its inputs changed, or health ages moved on: a few times a
        second at most), equity when the portfolio's equity log was replaced."""
        cache = self.cache
        builds = {"status": ((cache.status_json(),), cache.status_json),
                  "equity": ((cache.equity_points,), lambda: encode_json(cache.equity()))}
        out = {}
        for name, (key, build) in builds.items():
            seen = self._seen.get(name)
            if seen is None or any(a is not b for a, b in zip(seen, key)):
                self._seen[name] = key
                out[name] = sse_event(name, build())
        return out

    def subscribe(self) -> Subscriber | None:
        if len(self.subscribers) >= self.max_subscribers:
            self.counts["stream_refused"] += 1
            return None
        sub = Subscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers:
            self._seen = {}  # nobody listens: hold no document for them

    def offer_to_all(self, events: dict[str, bytes]) -> None:
        for name, event in events.items():
            self.counts["events"] += 1
            for sub in self.subscribers:
                self.counts["coalesced"] += sub.offer(name, event)

    def offer_changes(self) -> None:
        """One round: what changed, offered to every subscriber. A bad cache entry costs the
        round, not the stream."""
        try:
            events = self.changed()
        except Exception:
            return
        self.offer_to_all(events)


# --- connections ----------------------------------------------------------------------------------
class Connection:
    """One accepted socket: unparsed input, unwritten output, and what it is doing."""

    __slots__ = ("sock", "inbuf", "out", "keep", "sub", "chunked", "closing", "closed", "drained", "mask",
                 "progress_s", "ping_at")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.out: bytes | memoryview = b""
        self.keep = True  # False: the connection closes once ``out`` is written
        self.sub: Subscriber | None = None  # set while it streams events
        self.chunked = True
        self.closing = False  # its last reply is written; draining its input until EOF or LINGER_S
        self.closed = False
        self.drained = 0
        self.mask = selectors.EVENT_READ
        self.progress_s = 0.0  # when ``out`` last shrank, or became non-empty
        self.ping_at = 0.0


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``'s first address (IPv4 first), or an OSError naming it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _type, _proto, _name, address = min(infos, key=lambda info: info[0] != socket.AF_INET)
        sock = socket.create_server(address, family=family, backlog=BACKLOG)
    except OSError as exc:
        raise OSError(exc.errno, f"gateway: cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}"
                      ) from exc
    sock.setblocking(False)
    return sock


class HttpServer:
    """The HTTP side on its own thread; ``start`` returns once it listens (or raises what
    stopped it), ``stop`` closes streams and connections and joins the thread."""

    def __init__(self, host: str, port: int, cache: GatewayCache, token: str | None = None, *,
                 max_connections: int | None = None, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_subscribers: int = MAX_SUBSCRIBERS, stream_interval_s: float = STREAM_INTERVAL_S) -> None:
        self.host, self.port = host, port
        self.address: tuple[str, int] | None = None  # what it is bound to, once started
        self.cache = cache
        self.token = token
        self.max_connections = connection_limit() if max_connections is None else max_connections
        self.idle_timeout_s = idle_timeout_s
        self.stream = EventStream(cache, max_subscribers, stream_interval_s)
        self.app = GatewayApp(cache, token)
        cache.http = lambda: self.counts  # /metrics shows them
        self.conns: set[Connection] = set()
        # without a request in hand, by deadline (their timeouts are fixed, so insertion order is deadline order)
        self.waiting: OrderedDict[Connection, float] = OrderedDict()
        self.lingering: OrderedDict[Connection, float] = OrderedDict()
        self.stalled: dict[Connection, None] = {}  # output the socket has not taken yet
        self.streams: set[Connection] = set()
        self._counts = {"evicted": 0, "refused": 0, "internal_errors": 0}
        self._now = time.monotonic()
        self._next_publish = self._next_check = self._accept_resume = 0.0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None  # stop() writes a byte to _wake_w to end select()
        self._wake_w: socket.socket | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Connections evicted and refused at the limit, stream subscribers and what they lost."""
        return {**self._counts, **self.stream.counts, "connections": len(self.conns),
                "subscribers": len(self.stream.subscribers)}

    def start(self) -> "HttpServer":
        self._listener = listen(self.host, self.port)
        host, port = self._listener.getsockname()[:2]
        self.address, self.port = (host, port), port
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._stopping = True
        try:
            assert self._wake_w is not None
            self._wake_w.send(b"x")
        except OSError:  # the thread is already closing its end
            pass
        thread.join(timeout_s)

    # --- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while not self._stopping:
                events = sel.select(self._timeout())
                self._now = time.monotonic()
                for key, mask in events:
                    conn = key.data
                    if conn is None:
                        self._guarded(self._accept)
                    elif isinstance(conn, Connection):
                        self._on_event(conn, mask)
                    else:
                        conn.recv(64)
                self._on_timers()
        finally:
            for conn in list(self.conns):
                self._close(conn)
            sel.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()

    def _timeout(self) -> float | None:
        """Seconds until the next deadline, or None when nothing is timed."""
        due = [table[next(iter(table))] for table in (self.waiting, self.lingering) if table]
        if self.streams:
            due += [self._next_publish, self._next_check]
        elif self.stalled:
            due.append(self._next_check)
        if self._accept_resume:
            due.append(self._accept_resume)
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _on_event(self, conn: Connection, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._guarded(self._pump, conn)
        if mask & selectors.EVENT_READ and not conn.closed:
            self._guarded(self._read, conn)

    def _on_timers(self) -> None:
        now = self._now
        for table in (self.waiting, self.lingering):  # slow or idle clients, finished ones that never closed
            while table:
                conn = next(iter(table))
                if table[conn] > now:
                    break
                self._close(conn)
        if self._accept_resume and now >= self._accept_resume and self._listener and self._sel is not None:
            self._accept_resume = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, None)
        if self.streams and now >= self._next_publish:
            self._next_publish = now + self.stream.interval_s
            self.stream.offer_changes()
            for conn in list(self.streams):
                if not conn.out:
                    self._guarded(self._pump, conn)
        if (self.streams or self.stalled) and now >= self._next_check:
            self._next_check = now + CHECK_S
            for conn in list(self.stalled):
                if now - conn.progress_s >= WRITE_TIMEOUT_S:
                    subscribed = conn.sub is not None
                    self._close(conn)
                    if subscribed:  # counted once gone: the counts never show it dropped and still subscribed
                        self.stream.counts["dropped_slow"] += 1
            for conn in list(self.streams):
                if not conn.out and now >= conn.ping_at:
                    conn.out = self._frame(conn, b": ping\n\n")
                    self._guarded(self._pump, conn)

    def _guarded(self, step: Callable[..., None], conn: Connection | None = None) -> None:
        """``step`` (on ``conn``); a bug it meets closes that connection, the others are served."""
        try:
            step() if conn is None else step(conn)
        except Exception:
            self._counts["internal_errors"] += 1
            if conn is not None:
                self._close(conn)

    # --- accepting ----------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None and self._sel is not None
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError:  # out of descriptors: the connection waits in the backlog meanwhile
                self._sel.unregister(self._listener)
                self._accept_resume = self._now + ACCEPT_PAUSE_S
                return
            sock.setblocking(False)
            if len(self.conns) >= self.max_connections and not self._make_room():
                self._counts["refused"] += 1
                try:
                    sock.send(BUSY_REPLY)
                except OSError:
                    pass
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock)
            self.conns.add(conn)
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self.waiting[conn] = self._now + self.idle_timeout_s

    def _make_room(self) -> bool:
        """Close the connection that has waited longest with nothing in hand (one already
        answered and lingering first); False when every connection is busy."""
        for table in (self.lingering, self.waiting):
            if table:
                self._close(next(iter(table)))
                self._counts["evicted"] += 1
                return True
        return False

    # --- reading, answering, writing ----------------------------------------------------------
    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        if conn.closing:
            conn.drained += len(data)
            if conn.drained > LINGER_BYTES:
                self._close(conn)
            return
        if conn.sub is not None:  # a stream takes no further requests: its bytes are dropped
            return
        conn.inbuf = conn.inbuf + data if conn.inbuf else data
        self._pump(conn)

    def _pump(self, conn: Connection) -> None:
        """Answer what has arrived, write, and repeat, until the socket is full, no complete
        request is left, or the connection is done."""
        while True:
            if not conn.out:
                if conn.sub is not None:
                    events = conn.sub.take()
                    if not events:
                        return
                    conn.out = self._frame(conn, events)
                elif conn.closing or not self._answer(conn):
                    return
            if not self._send(conn):
                return
            if not conn.keep:
                self._finish(conn)
                return
            if conn.sub is None:
                self.waiting[conn] = self._now + self.idle_timeout_s  # its next request is due by then

    def _answer(self, conn: Connection) -> bool:
        """Replies to the complete requests in ``conn.inbuf``, in order, into ``conn.out``
        (up to OUTPUT_HIGH_BYTES); False when none is complete yet."""
        if not conn.inbuf:
            return False
        buf, pos, replies, size = conn.inbuf, 0, [], 0
        while pos < len(buf):
            if buf.startswith(b"\r\n", pos):  # blank lines before a request are allowed (RFC 9112 2.2)
                pos += 2
                continue
            end = buf.find(b"\r\n\r\n", pos, pos + MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(buf) - pos > MAX_HEAD_BYTES + 3:
                    conn.keep = False
                    replies.append(render(error(431, f"request head over {MAX_HEAD_BYTES} bytes"), CLOSE, False))
                elif buf.find(b"\n\n", pos) >= 0:  # a head that ends in bare LFs would never end
                    conn.keep = False
                    replies.append(render(error(400, "request head ends in bare LFs: lines end in CRLF"), CLOSE,
                                          False))
                break
            reply = self._reply_to(conn, buf[pos:end])
            pos = end + 4
            replies.append(reply)
            size += len(reply)
            if not conn.keep or conn.sub is not None or size >= OUTPUT_HIGH_BYTES:
                break
        conn.inbuf = buf[pos:] if conn.keep and conn.sub is None else b""
        if not replies:
            return False
        self.waiting.pop(conn, None)  # a request in hand until its reply is written
        conn.out = replies[0] if len(replies) == 1 else b"".join(replies)
        return True

    def _reply_to(self, conn: Connection, head: bytes) -> bytes:
        try:
            request = parse_head(head)
        except BadRequest as exc:
            conn.keep = False
            return render(error(exc.code, str(exc)), CLOSE, False)
        conn.keep = request.keep_alive
        reply = self.app.handle(request)
        if reply is None:
            started = self._start_stream(conn, request)
            if isinstance(started, bytes):
                return started
            reply = started
        connection = b"" if request.http11 and conn.keep else KEEP_ALIVE_10 if conn.keep else CLOSE
        return render(reply, connection, request.method == "HEAD")

    def _start_stream(self, conn: Connection, request: Request) -> bytes | Reply:
        """Subscribe ``conn``: the stream's head and first events, or the Reply that refuses it."""
        sub = self.stream.subscribe()
        if sub is None:
            return error(503, f"stream full ({self.stream.max_subscribers} subscribers); poll /status",
                         b"Retry-After: 5\r\n")
        try:
            first = self.stream.current()
        except Exception as exc:
            self.stream.unsubscribe(sub)
            return error(500, f"{type(exc).__name__}: {exc}")
        if not self.streams:
            self._next_publish = self._now + self.stream.interval_s
        conn.sub, conn.chunked, conn.keep = sub, request.http11, True
        self.streams.add(conn)
        head = STREAM_HEAD_11 if conn.chunked else STREAM_HEAD_10
        return head + self._frame(conn, f"retry: {RETRY_MS}\n\n".encode() + b"".join(first.values()))

    def _frame(self, conn: Connection, data: bytes) -> bytes:
        """Stream bytes as they go on the wire (a chunk on HTTP/1.1); the next ping is due
        PING_S after them."""
        conn.ping_at = self._now + PING_S
        return b"%x\r\n%s\r\n" % (len(data), data) if conn.chunked else data

    def _send(self, conn: Connection) -> bool:
        """Write ``conn.out``; True when all of it went, else wait for the socket to drain
        (reading nothing more from it meanwhile)."""
        out = conn.out
        try:
            sent = conn.sock.send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return False
        if sent == len(out):
            conn.out = b""
            if self.stalled.pop(conn, 0) is None:
                self._set_mask(conn, selectors.EVENT_READ)
            return True
        conn.out = memoryview(out)[sent:]
        if sent or conn not in self.stalled:
            conn.progress_s = self._now
            self.stalled[conn] = None
        self._set_mask(conn, selectors.EVENT_WRITE)
        return False

    def _set_mask(self, conn: Connection, mask: int) -> None:
        if conn.mask != mask and self._sel is not None:
            self._sel.modify(conn.sock, mask, conn)
            conn.mask = mask

    def _finish(self, conn: Connection) -> None:
        """After the last reply: no more writes, and the input drained until the client closes
        (closing with unread input would reset the connection and could destroy the reply)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.closing, conn.inbuf = True, b""
        self.waiting.pop(conn, None)
        self.lingering[conn] = self._now + LINGER_S

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if self._sel is not None:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()
        self.conns.discard(conn)
        self.waiting.pop(conn, None)
        self.lingering.pop(conn, None)
        self.stalled.pop(conn, None)
        if conn.sub is not None:
            self.streams.discard(conn)
            self.stream.unsubscribe(conn.sub)
            conn.sub = None
