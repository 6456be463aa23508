"""gateway: what a person looks at. HTTP on 127.0.0.1:8099 by default, read-only.

Subscribes  portfolio.delta, fill.*, heartbeat.* (portfolio); tick.*, heartbeat.marketdata;
            cycle, heartbeat.signals-<engine> from every signal engine; heartbeat.pricer
Requests    book_snapshot from portfolio when it joins late or a delta does not follow (clone
            pattern: a snapshot current to delta seq N, then deltas N+1, N+2, ...);
            equity from portfolio every few seconds (the equity log behind the charts)
Serves      GET /status (the seed's JSON), /healthz, /metrics (Prometheus), /api/equity,
            /api/stream (server-sent events), /openapi.json, and the dashboard (/, /app.js,
            /style.css from services/web/): services.gateway_http, a selectors server on its own thread
Posts       the seed's cycle summary to the Discord webhook named by discord.webhook_env,
            after a cycle with fills, from a background thread (services.discord_webhook)
Calls       services.views.status, services.views.metrics, services.views.discord (pure views over the caches)

ZeroMQ sockets live on the main thread's loop (ServiceRuntime); the HTTP thread's selector loop
only reads the caches, which the zmq loop replaces whole (never mutates in place), so a request
never sees half an update. SIGTERM stops the zmq loop, whose on_stop stops the HTTP thread.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from common.bus import Envelope, RemoteError, RequestFailed
from common.model import RecordError
from common.wall import wall_ms
from config.schema import LOCAL_HOSTS
from config.settings import Config, load_config
from services.gateway_cache import GatewayCache
from services.gateway_http import HttpServer
from services.runtime import ServiceRuntime, config_path, service_cores
from services.views.discord import cycle_messages, summary_due
from services.views.status import CloneGap, apply_delta, clone_from_snapshot, engine_cycles, services_of

if TYPE_CHECKING:
    from services.discord_webhook import WebhookPoster

EQUITY_SECONDS = 2.0
EQUITY_MAX_POINTS = 500
# Collector settings for a process that allocates a few hundred short-lived objects per HTTP
# request: young collections every 10,000 allocations instead of 700, and the objects alive at
# start (modules, config) kept out of every full collection (fewer pauses between requests).
GC_THRESHOLDS = (10_000, 10, 10)
DISCORD_MIN_INTERVAL_MS = 2_000  # a fast-forwarded feed runs many cycles a second: coalesce
MAX_PENDING_FILLS = 1_000


@dataclass(frozen=True, slots=True)
class SummaryPost:
    """One Discord summary to post: a group ("spot" or "options"), the cycle, its fills."""

    group: str
    cycle: int
    fills: list[dict[str, Any]]


class CycleReporter:
    """When Discord summaries are due: after a cycle, once the portfolio's snapshot covers every
    fill since the last post (fills of a cycle arrive after its ``cycle`` message), and not more
    often than ``min_interval_ms`` of wall time. Spot and options post apart, each at its own
    frequency in market time (``discord.spot_summary_freq``, ``options_summary_freq``;
    services.views.discord.summary_due), each with its own fills."""

    def __init__(self, spot_freq: str = "per_check", options_freq: str = "per_check",
                 min_interval_ms: int = DISCORD_MIN_INTERVAL_MS, max_pending: int = MAX_PENDING_FILLS) -> None:
        self.freqs = {"spot": spot_freq, "options": options_freq}
        self.last_posted_ts: dict[str, int | None] = {group: None for group in self.freqs}
        self.min_interval_ms = min_interval_ms
        self.max_pending = max_pending
        self.pending: dict[int, dict[str, Any]] = {}
        self.cycle: int | None = None
        self.market_ts = 0
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

    def on_cycle(self, cycle: int, market_ts: int) -> None:
        self.cycle, self.market_ts = cycle, max(self.market_ts, market_ts)

    def take(self, journal_seq: int, now_ms: int, group_of: Callable[[dict[str, Any]], str]) -> list[SummaryPost]:
        """The summaries to post now (``group_of`` says a fill's group); taking them resets the
        cycle, and fills of a group that is not due wait for its next post."""
        if self.cycle is None or (self.pending and journal_seq < max(self.pending)):
            return []
        if self.last_post_ms is not None and now_ms - self.last_post_ms < self.min_interval_ms:
            return []
        posts = []
        for group, freq in self.freqs.items():
            seqs = [seq for seq in sorted(self.pending) if group_of(self.pending[seq]) == group]
            if summary_due(freq, self.last_posted_ts[group], self.market_ts, bool(seqs)):
                posts.append(SummaryPost(group, self.cycle, [self.pending.pop(seq) for seq in seqs]))
                self.last_posted_ts[group] = self.market_ts
        self.cycle = None
        if posts:
            self.last_post_ms = now_ms
        return posts


class Gateway:
    """The loop side: turns bus messages into cache replacements and Discord summaries."""

    def __init__(self, cfg: Config, runtime: ServiceRuntime, poster: WebhookPoster | None = None) -> None:
        self.cfg = cfg
        self.rt = runtime
        self.cache = GatewayCache()
        self.cache.services = services_of([e.service for e in cfg.engines])
        self.poster = poster
        self.reporter = CycleReporter(cfg.discord.spot_summary_freq, cfg.discord.options_summary_freq)
        if poster is not None:
            self.cache.discord = lambda: poster.counts
        self.portfolio = runtime.requester(cfg.endpoints["portfolio"].rep, timeout_ms=1000, retries=1)
        self.handlers: dict[str, Callable[[Envelope], None]] = {
            "book_delta": self.on_delta, "tick": self.on_tick, "heartbeat": self.on_heartbeat,
            "cycle": self.on_cycle, "fill": self.on_fill,
        }

    def on_message(self, topic: str, env: Envelope) -> None:
        handler = self.handlers.get(env.type)
        if handler is None or not isinstance(env.body, dict):
            self.rt.stats.count_drop("bad_body" if handler else "unexpected_type")
            return
        handler(env)

    def on_delta(self, env: Envelope) -> None:
        """Follow the portfolio's deltas; one that does not follow (a missed seq, a restarted
        portfolio, a bad record) rebuilds the clone from a fresh snapshot at once. Until the
        first snapshot, deltas wait for ``fetch_snapshot``."""
        clone = self.cache.clone
        if clone is None:
            return
        try:
            self.cache.clone = apply_delta(clone, env.body)
        except CloneGap as exc:
            self.rt.stats.count_drop("delta_gap")
            self.rt.log.warning("resnapshot", reason=str(exc))
            self.fetch_snapshot(force=True)

    def on_tick(self, env: Envelope) -> None:
        """The feed's ticks only date the feed for /healthz: books are valued at the
        portfolio's marks, which come with its deltas."""
        price = env.body.get("price")
        if isinstance(price, (int, float)) and not isinstance(price, bool) and price > 0:
            self.cache.last_tick_ms = int(wall_ms())
        else:
            self.rt.stats.count_drop("bad_tick")

    def on_heartbeat(self, env: Envelope) -> None:
        beat = {**env.body, "received_ms": int(wall_ms())}
        self.cache.heartbeats = {**self.cache.heartbeats, env.source: beat}
        beats = engine_cycles({env.source: env.body})
        if beats:
            self.count_cycles(env.source, beats[env.source])

    def count_cycles(self, engine: str, count: int) -> None:
        """An engine's cycle count; /status shows the sum over the engines."""
        cycles = {**self.cache.engine_cycles, engine: max(count, self.cache.engine_cycles.get(engine, 0))}
        self.cache.engine_cycles = cycles
        self.cache.cycle_count = sum(cycles.values())

    def on_cycle(self, env: Envelope) -> None:
        cycle = env.body.get("cycle")
        if isinstance(cycle, bool) or not isinstance(cycle, int):
            self.rt.stats.count_drop("bad_cycle")
            return
        self.count_cycles(env.source, cycle)
        stats = {**self.cache.cycles, "count": self.cache.cycles["count"] + 1}
        duration_ms = env.body.get("duration_ms")
        if isinstance(duration_ms, (int, float)) and not isinstance(duration_ms, bool) and duration_ms >= 0:
            stats.update(timed=stats["timed"] + 1, duration_sum_s=stats["duration_sum_s"] + duration_ms / 1000,
                         last_duration_s=duration_ms / 1000)
        self.cache.cycles = stats
        market_ts = env.body.get("market_ts")
        if isinstance(market_ts, bool) or not isinstance(market_ts, int):
            market_ts = self.cache.clone.market_ts if self.cache.clone is not None else 0
        self.reporter.on_cycle(self.cache.cycle_count, market_ts)

    def on_fill(self, env: Envelope) -> None:
        if self.poster is None:
            return
        try:
            self.reporter.on_fill(env.body)
        except ValueError:
            self.rt.stats.count_drop("bad_fill")

    # --- timers ------------------------------------------------------------------------------
    def fetch_snapshot(self, force: bool = False) -> None:
        """Late joiner (or ``force``: a delta did not follow): ask for every book, then follow
        the deltas after it. After a failed or bad reply the timer asks again; a forced ask that
        fails drops the clone, which is known to be stale, so /status waits rather than lies."""
        if self.cache.clone is not None and not force:
            return
        try:
            clone = clone_from_snapshot(self.portfolio.request("book_snapshot"))
        except (RequestFailed, RemoteError, RecordError) as exc:
            self.rt.log.warning("snapshot_unavailable", error=str(exc))
            if force:
                self.cache.clone = None  # stale: the timer fetches again, deltas wait for it
            return
        self.cache.clone = clone

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
        clone = self.cache.clone
        if self.poster is None or clone is None:
            return

        def group_of(fill: dict[str, Any]) -> str:
            held = clone.books.get(fill.get("strategy_id"))
            category = held[1] if held is not None else None
            return "spot" if (category or fill.get("kind")) == "spot" else "options"

        status = None
        for post in self.reporter.take(clone.journal_seq, int(wall_ms()), group_of):
            status = status or self.cache.status()
            messages = cycle_messages(status, post.fills, post.cycle, group=post.group)
            if self.poster.submit(messages):
                self.rt.log.info("discord_summary_queued", group=post.group, cycle=post.cycle,
                                 fills=len(post.fills), pieces=len(messages))


# --- HTTP ----------------------------------------------------------------------------------------
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
    rt = ServiceRuntime("gateway", cores=service_cores(cfg.cpu, fill_path=False))
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
            rt.log.error("token_missing",
                         detail=f"gateway.allow_remote needs {cfg.gateway.token_env} in the environment")
            rt.close()
            return 2
    gw = Gateway(cfg, rt, start_discord(cfg, rt))
    eps = cfg.endpoints
    rt.subscribe([eps["portfolio"].pub], ["portfolio.delta", "fill.", "heartbeat."], gw.on_message)
    rt.subscribe([eps["marketdata"].pub], ["tick.", "heartbeat."], gw.on_message)
    rt.subscribe([e.pub for e in cfg.engines], ["cycle", "heartbeat."], gw.on_message)
    rt.subscribe([eps["pricer"].pub], ["heartbeat."], gw.on_message)
    # Its requests to the portfolio wait out each close's burst: one queued before the orders was answered first.
    rt.hold_at_closes(cfg)
    rt.every(1.0, gw.fetch_snapshot, housekeeping=True)
    rt.every(EQUITY_SECONDS, gw.fetch_equity, housekeeping=True)
    rt.every(1.0, gw.refresh_bus_stats)
    rt.every(0.25, gw.report_cycle)
    try:
        server = HttpServer(host, cfg.gateway.port, gw.cache, token).start()
    except OSError as exc:
        rt.log.error("http_failed", host=host, port=cfg.gateway.port, error=str(exc))
        rt.close()
        return 1
    rt.log.info("http_listening", host=host, port=server.port, auth=token is not None,
                max_connections=server.max_connections, idle_timeout_s=server.idle_timeout_s)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    def stop() -> None:  # SIGTERM: streams and connections closed within SHUTDOWN_TIMEOUT_S
        server.stop()
        if gw.poster is not None:
            gw.poster.stop()

    rt.run(on_stop=stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
