"""gateway: what a person looks at. HTTP on 127.0.0.1:8099 by default, read-only.

Subscribes  portfolio.snapshot, fill.*, heartbeat.* (portfolio, signals, pricer), tick.* and
            heartbeat.marketdata
Requests    snapshot from portfolio when it joins late (clone pattern: snapshot, then deltas)
Serves      GET /status (the seed's JSON), GET /healthz (each service's heartbeat)
Calls       common.status (pure views over the caches)

ZeroMQ sockets live on the main thread's loop; HTTP handler threads only read the caches,
which the loop replaces whole (never mutates in place), so a request never sees half an update.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common.bus import Envelope, RemoteError, RequestFailed, wall_ms
from common.config import Config, load_config
from common.status import build_health, build_status
from services.runtime import ServiceRuntime, config_path


class GatewayCache:
    """What the HTTP threads read. Each attribute is replaced, never mutated."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] | None = None
        self.prices: dict[str, float] = {}
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.cycle_count = 0

    def health(self) -> dict[str, Any]:
        return build_health(self.heartbeats, wall_ms())

    def status(self) -> dict[str, Any]:
        return build_status(self.snapshot, self.prices, self.cycle_count, self.health())


class Gateway:
    def __init__(self, cfg: Config, runtime: ServiceRuntime) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.cache = GatewayCache()
        self.portfolio = runtime.requester(cfg.endpoints["portfolio"].rep, timeout_ms=1000, retries=1)

    def on_message(self, topic: str, env: Envelope) -> None:
        body = env.body
        if not isinstance(body, dict):
            self.rt.stats.count_drop("bad_body")
            return
        if env.type == "snapshot":
            self.cache.snapshot = body
        elif env.type == "tick":
            price = body.get("price")
            if isinstance(price, (int, float)) and price > 0:
                self.cache.prices = {**self.cache.prices, str(body.get("symbol")): float(price)}
        elif env.type == "heartbeat":
            beat = {**body, "received_ms": wall_ms()}
            self.cache.heartbeats = {**self.cache.heartbeats, env.source: beat}
            if env.source == "signals" and isinstance(body.get("cycle_count"), int):
                self.cache.cycle_count = body["cycle_count"]

    def fetch_snapshot(self) -> None:
        """Late joiner: ask once for the full snapshot, then follow the stream."""
        if self.cache.snapshot is not None:
            return
        try:
            self.cache.snapshot = self.portfolio.request("snapshot")
        except (RequestFailed, RemoteError) as exc:
            self.rt.log.warning("snapshot_unavailable", error=str(exc))


def make_handler(cache: GatewayCache, token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "go-trader"

        def log_message(self, *_args: Any) -> None:  # access logs would drown the service log
            return

        def send_json(self, code: int, doc: Any) -> None:
            payload = json.dumps(doc, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                self.send_json(401, {"error": "missing or wrong bearer token"})
                return
            path = self.path.split("?", 1)[0]
            if path == "/status":
                self.send_json(200, cache.status())
            elif path == "/healthz":
                health = cache.health()
                self.send_json(200 if health["ok"] else 503, health)
            else:
                self.send_json(404, {"error": f"no such path {path!r}", "paths": ["/status", "/healthz"]})

    return Handler


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(config_path(argv))
    rt = ServiceRuntime("gateway")
    gw = Gateway(cfg, rt)
    token = None
    if cfg.gateway.allow_remote:
        token = os.environ.get("GO_TRADER_TOKEN")
        if not token:
            rt.log.error("token_missing", detail="gateway.allow_remote needs GO_TRADER_TOKEN in the environment")
            return 2
    eps = cfg.endpoints
    rt.subscribe([eps["portfolio"].pub], ["portfolio.snapshot", "heartbeat."], gw.on_message)
    rt.subscribe([eps["marketdata"].pub], ["tick.", "heartbeat."], gw.on_message)
    rt.subscribe([eps["signals"].pub, eps["pricer"].pub], ["heartbeat."], gw.on_message)
    rt.every(1.0, gw.fetch_snapshot)
    server = ThreadingHTTPServer((cfg.gateway.host, cfg.gateway.port), make_handler(gw.cache, token))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    rt.log.info("http_listening", host=cfg.gateway.host, port=cfg.gateway.port)
    rt.run(on_stop=server.shutdown)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
