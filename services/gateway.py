"""gateway: what a person looks at. HTTP on 127.0.0.1:8099 by default, read-only.

Subscribes  portfolio.snapshot, fill.*, heartbeat.* (portfolio); tick.*, heartbeat.marketdata;
            cycle, heartbeat.signals; heartbeat.pricer
Requests    snapshot from portfolio when it joins late (clone pattern: snapshot, then deltas);
            equity from portfolio every few seconds (the equity log behind the charts)
Serves      GET /status (the seed's JSON), /healthz, /metrics (Prometheus), /api/equity,
            /openapi.json, and the dashboard (/, /app.js, /style.css from services/web/)
Posts       the seed's cycle summary to the Discord webhook named by discord.webhook_env,
            after a cycle with fills, from a background thread (services.discord_webhook)
Calls       common.status, common.metrics, common.discord (pure views over the caches)

ZeroMQ sockets live on the main thread's loop; HTTP handler threads only read the caches,
which the loop replaces whole (never mutates in place), so a request never sees half an update.
"""
from __future__ import annotations

import argparse
import hmac
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from common.bus import Envelope, RemoteError, RequestFailed, wall_ms
from common.config import Config, load_config
from common.config_schema import LOCAL_HOSTS
from common.discord import cycle_messages
from common.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, MetricsInputs, metric_families, render
from common.status import build_health, build_status, equity_curves, json_safe
from services.runtime import ServiceRuntime, config_path

if TYPE_CHECKING:
    from services.discord_webhook import WebhookPoster

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_FILES = {  # path -> (file in services/web, content type); the UI shell carries no data
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/openapi.json": ("openapi.json", "application/json"),
}
STATUS_TTL_MS = 250  # /status is rebuilt at most this often unless its inputs change
EQUITY_SECONDS = 2.0
EQUITY_MAX_POINTS = 500
DISCORD_MIN_INTERVAL_MS = 2_000  # a fast-forwarded feed runs many cycles a second: coalesce
MAX_PENDING_FILLS = 1_000


class GatewayCache:
    """What the HTTP threads read. Each attribute is replaced, never mutated; views built from
    them are memoized on the identity of their inputs, so a burst of requests builds once."""

    def __init__(self, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.clock_ms = clock_ms
        self.snapshot: dict[str, Any] | None = None
        self.prices: dict[str, float] = {}
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.cycle_count = 0
        self.cycles: dict[str, float] = {"count": 0, "timed": 0, "duration_sum_s": 0.0}
        self.last_tick_ms: int | None = None
        self.equity_points: list[dict[str, Any]] = []
        self.gateway_bus: dict[str, Any] = {}
        self.discord: Callable[[], dict[str, int]] | None = None
        self._memo: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def _memoized(self, name: str, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        held = self._memo.get(name)
        if held is not None and all(a is b or (type(a) is int and a == b) for a, b in zip(held[0], key)):
            return held[1]
        value = build()
        self._memo = {**self._memo, name: (key, value)}
        return value

    def health(self) -> dict[str, Any]:
        return build_health(self.heartbeats, self.clock_ms(), self.last_tick_ms)

    def _status_key(self) -> tuple[Any, ...]:
        return (self.snapshot, self.prices, self.heartbeats, self.cycle_count, self.clock_ms() // STATUS_TTL_MS)

    def status(self) -> dict[str, Any]:
        return self._memoized("status", self._status_key(), lambda: build_status(
            self.snapshot, self.prices, self.cycle_count, self.health(),
            self.heartbeats.get("signals", {}).get("strategies")))

    def status_json(self) -> bytes:
        return self._memoized("status_json", self._status_key(), lambda: encode_json(self.status()))

    def equity(self) -> dict[str, Any]:
        status = self.status()
        return self._memoized("equity", (self.equity_points, status["strategies"]), lambda: equity_curves(
            self.equity_points, status["strategies"], status.get("market_ts")))

    def metrics_text(self) -> bytes:
        discord = self.discord() if self.discord else None
        key = (*self._status_key(), self.cycles, self.gateway_bus, discord)
        return self._memoized("metrics", key, lambda: render(metric_families(MetricsInputs(
            status=self.status(), heartbeats=self.heartbeats, gateway_bus=self.gateway_bus, cycles=self.cycles,
            discord=discord))))


def encode_json(doc: Any) -> bytes:
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    except (ValueError, TypeError):  # a NaN or an odd type slipped in: strict JSON all the same
        return json.dumps(json_safe(doc), separators=(",", ":"), default=str).encode()


class CycleReporter:
    """When a Discord summary is due: after a cycle, once the portfolio's snapshot covers every
    fill since the last post (fills of a cycle arrive after its ``cycle`` message), and not more
    often than ``min_interval_ms`` of wall time."""

    def __init__(self, min_interval_ms: int = DISCORD_MIN_INTERVAL_MS, max_pending: int = MAX_PENDING_FILLS) -> None:
        self.min_interval_ms = min_interval_ms
        self.max_pending = max_pending
        self.pending: dict[int, dict[str, Any]] = {}
        self.cycle: int | None = None
        self.last_post_ms: int | None = None
        self.overflow = 0

    def on_fill(self, fill: dict[str, Any]) -> None:
        seq = fill.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise ValueError(f"fill.seq: expected an integer, got {seq!r}")
        self.pending[seq] = fill
        if len(self.pending) > self.max_pending:
            del self.pending[min(self.pending)]
            self.overflow += 1

    def on_cycle(self, cycle: int) -> None:
        self.cycle = cycle

    def take(self, journal_seq: int, now_ms: int) -> tuple[int, list[dict[str, Any]]] | None:
        """The cycle and its fills to post now, or None; taking them resets the reporter."""
        if self.cycle is None or not self.pending or journal_seq < max(self.pending):
            return None
        if self.last_post_ms is not None and now_ms - self.last_post_ms < self.min_interval_ms:
            return None
        fills = [self.pending[seq] for seq in sorted(self.pending)]
        cycle = self.cycle
        self.pending, self.cycle, self.last_post_ms = {}, None, now_ms
        return cycle, fills


class Gateway:
    """The loop side: turns bus messages into cache replacements and Discord summaries."""

    def __init__(self, cfg: Config, runtime: ServiceRuntime, poster: WebhookPoster | None = None) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.cache = GatewayCache()
        self.poster = poster
        self.reporter = CycleReporter()
        if poster is not None:
            self.cache.discord = lambda: poster.counts
        self.portfolio = runtime.requester(cfg.endpoints["portfolio"].rep, timeout_ms=1000, retries=1)
        self.handlers: dict[str, Callable[[Envelope], None]] = {
            "snapshot": self.on_snapshot, "tick": self.on_tick, "heartbeat": self.on_heartbeat,
            "cycle": self.on_cycle, "fill": self.on_fill,
        }

    def on_message(self, topic: str, env: Envelope) -> None:
        handler = self.handlers.get(env.type)
        if handler is None or not isinstance(env.body, dict):
            self.rt.stats.count_drop("bad_body" if handler else "unexpected_type")
            return
        handler(env)

    def on_snapshot(self, env: Envelope) -> None:
        if isinstance(env.body.get("strategies"), dict):
            self.cache.snapshot = env.body
        else:
            self.rt.stats.count_drop("bad_snapshot")

    def on_tick(self, env: Envelope) -> None:
        price = env.body.get("price")
        if isinstance(price, (int, float)) and not isinstance(price, bool) and price > 0:
            self.cache.prices = {**self.cache.prices, str(env.body.get("symbol")): float(price)}
            self.cache.last_tick_ms = wall_ms()
        else:
            self.rt.stats.count_drop("bad_tick")

    def on_heartbeat(self, env: Envelope) -> None:
        beat = {**env.body, "received_ms": wall_ms()}
        self.cache.heartbeats = {**self.cache.heartbeats, env.source: beat}
        if env.source == "signals" and isinstance(env.body.get("cycle_count"), int):
            self.cache.cycle_count = max(self.cache.cycle_count, env.body["cycle_count"])

    def on_cycle(self, env: Envelope) -> None:
        cycle = env.body.get("cycle")
        if isinstance(cycle, bool) or not isinstance(cycle, int):
            self.rt.stats.count_drop("bad_cycle")
            return
        self.cache.cycle_count = cycle
        stats = {**self.cache.cycles, "count": self.cache.cycles["count"] + 1}
        duration_ms = env.body.get("duration_ms")
        if isinstance(duration_ms, (int, float)) and not isinstance(duration_ms, bool) and duration_ms >= 0:
            stats.update(timed=stats["timed"] + 1, duration_sum_s=stats["duration_sum_s"] + duration_ms / 1000,
                         last_duration_s=duration_ms / 1000)
        self.cache.cycles = stats
        self.reporter.on_cycle(cycle)

    def on_fill(self, env: Envelope) -> None:
        if self.poster is None:
            return
        try:
            self.reporter.on_fill(env.body)
        except ValueError:
            self.rt.stats.count_drop("bad_fill")

    # --- timers ------------------------------------------------------------------------------
    def fetch_snapshot(self) -> None:
        """Late joiner: ask once for the full snapshot, then follow the stream."""
        if self.cache.snapshot is not None:
            return
        try:
            self.cache.snapshot = self.portfolio.request("snapshot")
        except (RequestFailed, RemoteError) as exc:
            self.rt.log.warning("snapshot_unavailable", error=str(exc))

    def fetch_equity(self) -> None:
        try:
            reply = self.portfolio.request("equity", {"max_points": EQUITY_MAX_POINTS})
        except (RequestFailed, RemoteError) as exc:
            self.rt.log.warning("equity_unavailable", error=str(exc))
            return
        points = reply.get("points") if isinstance(reply, dict) else None
        if isinstance(points, list):
            self.cache.equity_points = points

    def refresh_bus_stats(self) -> None:
        self.cache.gateway_bus = self.rt.stats.to_dict()

    def report_cycle(self) -> None:
        snapshot = self.cache.snapshot
        if self.poster is None or snapshot is None:
            return
        due = self.reporter.take(int(snapshot.get("journal_seq") or 0), wall_ms())
        if due is None:
            return
        cycle, fills = due
        messages = cycle_messages(self.cache.status(), fills, cycle)
        if self.poster.submit(messages):
            self.rt.log.info("discord_summary_queued", cycle=cycle, fills=len(fills), pieces=len(messages))


# --- HTTP ----------------------------------------------------------------------------------------
def load_static(web_dir: Path = WEB_DIR) -> dict[str, tuple[bytes, str]]:
    """The dashboard's files, read once; a missing file is a broken install, said plainly."""
    files = {}
    for path, (name, content_type) in STATIC_FILES.items():
        file = web_dir / name
        if not file.is_file():
            raise FileNotFoundError(f"gateway: dashboard file {file} is missing (services/web is package data)")
        files[path] = (file.read_bytes(), content_type)
    return files


Route = Callable[[GatewayCache], tuple[int, bytes, str]]
JSON = "application/json"


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
ALLOWED_METHODS = "GET, HEAD"


def make_handler(cache: GatewayCache, token: str | None,
                 static: dict[str, tuple[bytes, str]] | None = None) -> type[BaseHTTPRequestHandler]:
    """The request handler: GET/HEAD only, a bearer token on data paths when ``token`` is set."""
    static_files = load_static() if static is None else static
    expected = f"Bearer {token}".encode() if token else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every reply carries Content-Length
        server_version = "go-trader"
        sys_version = ""

        def log_message(self, *_args: Any) -> None:  # access logs would drown the service log
            return

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):  # any other method: 405, never 501
                return self.refuse_method
            raise AttributeError(name)

        def reply(self, code: int, body: bytes, content_type: str, head_only: bool = False,
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head_only:
                self.wfile.write(body)

        def reply_error(self, code: int, message: str, head_only: bool = False, **extra: str) -> None:
            self.reply(code, encode_json({"error": message}), JSON, head_only, extra)

        def refuse_method(self) -> None:
            self.close_connection = True  # a body we will not read must not become the next request
            self.reply_error(405, f"method {self.command} not allowed: this gateway is read-only",
                             head_only=False, Allow=ALLOWED_METHODS)

        def authorized(self) -> bool:
            if expected is None:
                return True
            given = (self.headers.get("Authorization") or "").encode()
            return hmac.compare_digest(given, expected)

        def serve(self, head_only: bool) -> None:
            path = urlsplit(self.path).path
            if path in static_files:
                body, content_type = static_files[path]
                self.reply(200, body, content_type, head_only)
                return
            route = ROUTES.get(path)
            if route is None:
                known = sorted([*ROUTES, *static_files])
                self.reply(404, encode_json({"error": f"no such path {path!r}", "paths": known}), JSON, head_only)
                return
            if not self.authorized():
                self.reply_error(401, "missing or wrong bearer token", head_only, **{"WWW-Authenticate": "Bearer"})
                return
            try:
                code, body, content_type = route(cache)
            except Exception as exc:  # a bad cache entry must cost one reply, not the thread
                self.reply_error(500, f"{type(exc).__name__}: {exc}", head_only)
                return
            self.reply(code, body, content_type, head_only)

        def do_GET(self) -> None:
            self.serve(head_only=False)

        def do_HEAD(self) -> None:
            self.serve(head_only=True)

    return Handler


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many dashboards and scrapers at once must not see resets


class GatewayServer6(GatewayServer):
    address_family = socket.AF_INET6


def make_server(host: str, port: int, cache: GatewayCache, token: str | None) -> GatewayServer:
    server_class = GatewayServer6 if ":" in host else GatewayServer
    return server_class((host, port), make_handler(cache, token))


def listen_host(cfg: Config, override: str | None) -> str:
    """``--host`` if given, else the config's; a non-loopback host needs gateway.allow_remote."""
    host = override or cfg.gateway.host
    if host not in LOCAL_HOSTS and not cfg.gateway.allow_remote:
        raise ValueError(f"gateway host {host!r}: listening beyond {', '.join(LOCAL_HOSTS)} needs "
                         f"gateway.allow_remote = true in the config (requests then need ${cfg.gateway.token_env})")
    return host


def start_discord(cfg: Config, rt: ServiceRuntime) -> WebhookPoster | None:
    url = os.environ.get(cfg.discord.webhook_env, "").strip()
    if not cfg.discord.enabled or not url:
        rt.log.info("discord_off", reason="disabled in config" if not cfg.discord.enabled
                    else f"${cfg.discord.webhook_env} is not set")
        return None
    from services.discord_webhook import WebhookPoster  # requests only when a webhook is configured

    poster = WebhookPoster(url, rt.log).start()
    rt.log.info("discord_on", target=poster.target)
    return poster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host")
    args, _rest = parser.parse_known_args(argv)
    cfg = load_config(config_path(argv))
    rt = ServiceRuntime("gateway")
    try:
        host = listen_host(cfg, args.host)
    except ValueError as exc:
        rt.log.error("host_refused", detail=str(exc))
        rt.close()
        return 2
    token = None
    if cfg.gateway.allow_remote:
        token = os.environ.get(cfg.gateway.token_env)
        if not token:
            rt.log.error("token_missing", detail=f"gateway.allow_remote needs {cfg.gateway.token_env} in the environment")
            rt.close()
            return 2
    gw = Gateway(cfg, rt, start_discord(cfg, rt))
    eps = cfg.endpoints
    rt.subscribe([eps["portfolio"].pub], ["portfolio.snapshot", "fill.", "heartbeat."], gw.on_message)
    rt.subscribe([eps["marketdata"].pub], ["tick.", "heartbeat."], gw.on_message)
    rt.subscribe([eps["signals"].pub], ["cycle", "heartbeat."], gw.on_message)
    rt.subscribe([eps["pricer"].pub], ["heartbeat."], gw.on_message)
    rt.every(1.0, gw.fetch_snapshot)
    rt.every(EQUITY_SECONDS, gw.fetch_equity)
    rt.every(1.0, gw.refresh_bus_stats)
    rt.every(0.25, gw.report_cycle)
    server = make_server(host, cfg.gateway.port, gw.cache, token)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    rt.log.info("http_listening", host=host, port=cfg.gateway.port, auth=token is not None)

    def stop() -> None:
        server.shutdown()
        if gw.poster is not None:
            gw.poster.stop()

    rt.run(on_stop=stop)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
