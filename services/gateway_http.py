"""The gateway's HTTP side: aiohttp's low-level server on its own asyncio loop in one thread,
reading the GatewayCache that the zmq loop (the main thread) replaces whole, never in place.

Serves      GET/HEAD /, /app.js, /style.css, /openapi.json (the dashboard, from services/web),
            /status, /healthz, /metrics, /api/equity, and /api/stream (server-sent events)
Refuses     any other method (405), an unknown path (404), a data path without the bearer token
            when one is set (401)

What a hostile or careless client cannot do, and where that is kept:
- hold more than ``max_connections`` sockets: at the limit a new connection displaces the
  oldest one that is waiting for a request (idle keep-alive, or still trickling its headers);
  only when every connection is mid-request does the newcomer get a 503 (BoundedServer);
- hold a socket without completing a request: aiohttp's keep-alive timer runs from the
  connection's start and from the end of each response, and closes a connection whose
  request has not fully arrived by then (``idle_timeout``), however slowly its bytes come;
- make one stream subscriber cost unbounded memory: each holds only the latest event of each
  kind (older ones are dropped), and one that cannot take a write within ``WRITE_TIMEOUT_S``
  is disconnected (EventStream);
- smuggle a second request in a GET body: aiohttp frames bodies by Content-Length or chunked
  encoding and discards what a handler did not read.
Replies are written once (headers and body in one buffer) on a TCP_NODELAY socket.
"""
from __future__ import annotations

import asyncio
import hmac
import resource
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

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
ALLOWED_METHODS = "GET, HEAD"
STREAM_PATH = "/api/stream"

MAX_CONNECTIONS = 512  # a few dashboards and scrapers need tens; far below the fd limit
FD_RESERVE = 64  # descriptors kept for zmq, logs and the listening socket
IDLE_TIMEOUT_S = 10.0  # a connection must complete a request within this (from connect or last reply)
BACKLOG = 2048  # a wave of new connections waits in the kernel instead of losing SYNs (1 s, 3 s retries)
SHUTDOWN_TIMEOUT_S = 2.0  # supervisord's stopwaitsecs is 15

MAX_SUBSCRIBERS = 32
STREAM_INTERVAL_S = 0.5  # at most two status events a second, whatever the bus does
PING_S = 15.0  # a comment line keeps proxies from closing a quiet stream and finds dead clients
WRITE_TIMEOUT_S = 10.0  # a subscriber that takes no bytes for this long is dropped
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
    accept() fails and asyncio stops accepting for a second, which is what a limit prevents."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


# --- server-sent events -------------------------------------------------------------------------
def sse_event(name: str, data: bytes) -> bytes:
    """One event in the text/event-stream format (``data`` is single-line JSON)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(eq=False)
class Subscriber:
    """One stream client: the latest event of each kind, not yet written (older ones dropped)."""

    pending: dict[str, bytes] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def offer(self, name: str, event: bytes) -> bool:
        """Queue ``event``; True when it replaced one the client had not taken yet."""
        replaced = name in self.pending
        self.pending[name] = event
        self.wake.set()
        return replaced

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class EventStream:
    """Pushes ``status`` (with health) and ``equity`` events to a bounded set of subscribers,
    each when the cache entries behind it were replaced, checked every STREAM_INTERVAL_S."""

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

    def offer_to_all(self, events: dict[str, bytes]) -> None:
        for name, event in events.items():
            self.counts["events"] += 1
            for sub in self.subscribers:
                self.counts["coalesced"] += sub.offer(name, event)

    async def run(self) -> None:
        """The publishing task: one check per interval, nothing built while nobody listens."""
        while True:
            await asyncio.sleep(self.interval_s)
            if self.subscribers:
                try:
                    self.offer_to_all(self.changed())
                except Exception:  # a bad cache entry costs one round, not the stream
                    continue
            else:
                self._seen = {}

    def close(self) -> None:
        for sub in list(self.subscribers):
            sub.close()


# --- connections ----------------------------------------------------------------------------------
BUSY_BODY = encode_json({"error": "too many connections, every one busy with a request; retry shortly"})
BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: " + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


class Refusal(asyncio.Protocol):
    """What a connection beyond the limit gets when no connection can make room: a 503."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY_REPLY)
        transport.close()


class BoundedServer(web.Server):
    """aiohttp's low-level server with a connection limit that a flood of slow clients cannot
    use to shut others out: at the limit, the oldest connection without a request in hand is
    closed to make room. Connections are kept in accept order, so the oldest come first."""

    def __init__(self, handler: Callable[[web.BaseRequest], Any], max_connections: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.counts = {"evicted": 0, "refused": 0}

    @staticmethod
    def without_request(handler: RequestHandler) -> bool:
        """Idle between requests, still receiving its first one, or not yet started: nothing
        would be lost by closing it. Read from aiohttp's own state (the pinned version's): its
        keep-alive timer takes a pending ``_waiter`` for idle too."""
        waiter = handler._waiter
        if waiter is not None:
            return not waiter.done()
        return handler._request_count == 0 and not handler._messages

    def __call__(self) -> asyncio.Protocol:
        if len(self._connections) >= self.max_connections:
            victim = next((h for h in self._connections if self.without_request(h)), None)
            if victim is None:
                self.counts["refused"] += 1
                return Refusal()
            self.counts["evicted"] += 1
            transport = self._connections.pop(victim)
            victim.force_close()
            transport.close()
        return super().__call__()


# --- requests -------------------------------------------------------------------------------------
def reply(code: int, body: bytes, content_type: str, **extra: str) -> web.Response:
    headers = {"Content-Type": content_type, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
               "Server": "go-trader", **extra}
    return web.Response(status=code, body=body, headers=headers)


def reply_error(code: int, message: str, **extra: str) -> web.Response:
    return reply(code, encode_json({"error": message}), JSON, **extra)


class GatewayApp:
    """The request handler: GET/HEAD only, a bearer token on data paths when ``token`` is set."""

    def __init__(self, cache: GatewayCache, token: str | None, stream: EventStream,
                 static: dict[str, tuple[bytes, str]] | None = None) -> None:
        self.cache = cache
        self.stream = stream
        self.static = load_static() if static is None else static
        self.token = token.encode() if token else None

    def authorized(self, request: web.BaseRequest) -> bool:
        if self.token is None:
            return True
        if hmac.compare_digest((request.headers.get("Authorization") or "").encode(), b"Bearer " + self.token):
            return True
        # EventSource cannot send headers: the stream also takes RFC 6750's access_token parameter
        given = request.query.get("access_token") if request.path == STREAM_PATH else None
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return reply_error(405, f"method {request.method} not allowed: this gateway is read-only",
                               Allow=ALLOWED_METHODS)
        path = request.path
        if path in self.static:
            body, content_type = self.static[path]
            return reply(200, body, content_type)
        route = ROUTES.get(path)
        if route is None and path != STREAM_PATH:
            known = sorted([*ROUTES, STREAM_PATH, *self.static])
            return reply(404, encode_json({"error": f"no such path {path!r}", "paths": known}), JSON)
        if not self.authorized(request):
            return reply_error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        if route is None:
            return await self.serve_stream(request)
        try:
            code, body, content_type = route(self.cache)
        except Exception as exc:  # a bad cache entry must cost one reply, not the server
            return reply_error(500, f"{type(exc).__name__}: {exc}")
        return reply(code, body, content_type)

    async def serve_stream(self, request: web.BaseRequest) -> web.StreamResponse:
        """text/event-stream: the current status and equity at once, then each replacement."""
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "Server": "go-trader",
                   "X-Content-Type-Options": "nosniff", "X-Accel-Buffering": "no"}
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        sub = self.stream.subscribe()
        if sub is None:
            return reply_error(503, f"stream full ({self.stream.max_subscribers} subscribers); poll /status",
                               **{"Retry-After": "5"})
        try:
            first = self.stream.current()
        except Exception as exc:
            self.stream.unsubscribe(sub)
            return reply_error(500, f"{type(exc).__name__}: {exc}")
        response = web.StreamResponse(status=200, headers=headers)
        try:
            await response.prepare(request)
            await self._write(response, f"retry: {RETRY_MS}\n\n".encode() + b"".join(first.values()))
            while not sub.closed:
                try:
                    await asyncio.wait_for(sub.wake.wait(), PING_S)
                except asyncio.TimeoutError:
                    await self._write(response, b": ping\n\n")
                    continue
                sub.wake.clear()
                events, sub.pending = sub.pending, {}
                if events and not sub.closed:
                    await self._write(response, b"".join(events.values()))
        except asyncio.TimeoutError:  # a slow consumer: drop it, never buffer for it
            self.stream.counts["dropped_slow"] += 1
            if request.transport is not None:
                request.transport.close()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.stream.unsubscribe(sub)
        return response

    @staticmethod
    async def _write(response: web.StreamResponse, data: bytes) -> None:
        await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)


class HttpServer:
    """The HTTP side on its own thread and event loop; ``start`` returns once it listens (or
    raises what stopped it), ``stop`` closes streams and connections within a few seconds."""

    def __init__(self, host: str, port: int, cache: GatewayCache, token: str | None = None, *,
                 max_connections: int | None = None, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_subscribers: int = MAX_SUBSCRIBERS, stream_interval_s: float = STREAM_INTERVAL_S) -> None:
        self.host, self.port = host, port
        self.cache = cache
        self.token = token
        self.max_connections = connection_limit() if max_connections is None else max_connections
        self.idle_timeout_s = idle_timeout_s
        self.stream = EventStream(cache, max_subscribers, stream_interval_s)
        self.app = GatewayApp(cache, token, self.stream)
        cache.http = lambda: self.counts  # /metrics shows them
        self.server: BoundedServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._runner: web.ServerRunner | None = None
        self._publisher: asyncio.Task[None] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Connections evicted and refused at the limit, stream subscribers and what they lost."""
        server = self.server.counts if self.server else {}
        return {**server, **self.stream.counts, "connections": len(self.server.connections) if self.server else 0,
                "subscribers": len(self.stream.subscribers)}

    def start(self, timeout_s: float = 10.0) -> "HttpServer":
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"gateway HTTP server did not start within {timeout_s} s")
        if self._failure is not None:
            raise self._failure
        return self

    def _serve(self) -> None:
        self.loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # a busy port, a bad host: handed to start()'s caller
            self._failure = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _listen(self) -> None:
        self.server = BoundedServer(self.app.handle, self.max_connections, keepalive_timeout=self.idle_timeout_s,
                                    access_log=None)
        self._runner = web.ServerRunner(self.server, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=BACKLOG)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._publisher = asyncio.get_running_loop().create_task(self.stream.run())

    async def _shutdown(self) -> None:
        self.stream.close()
        if self._publisher is not None:
            self._publisher.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
