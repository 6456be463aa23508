"""Posts cycle summaries to a Discord webhook from a background thread.

The gateway's zmq loop only ever calls ``submit``, which never blocks: a full queue drops the
batch and counts it. The thread posts each piece in order, waits out a 429 for as long as
Discord asks (``retry_after`` in the JSON body, else the ``Retry-After`` header), backs off on
5xx and network errors, and gives up on other 4xx. The URL is never logged: only
``redact_webhook(url)``, and error texts are scrubbed of it.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable
from urllib.parse import urlsplit

import requests

from common.log import EventLog
from services.views.discord import redact_webhook, retry_after_seconds

QUEUE_BATCHES = 32
MAX_TRIES = 5
TIMEOUT_S = 10.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)


class WebhookPoster:
    """One webhook, one thread, a bounded queue of message batches."""

    def __init__(self, url: str, log: EventLog, *, queue_batches: int = QUEUE_BATCHES, max_tries: int = MAX_TRIES,
                 timeout_s: float = TIMEOUT_S, session: requests.Session | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"discord webhook: expected an http(s) URL, got one starting {url[:8]!r}")
        self._url = url
        self.target = redact_webhook(url)
        self.log = log
        self.max_tries = max_tries
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.queue: queue.Queue[list[str] | None] = queue.Queue(maxsize=queue_batches)
        self.stopping = threading.Event()
        self.counts = {"posted": 0, "failed": 0, "dropped": 0, "rate_limited": 0}
        self.thread = threading.Thread(target=self._run, name="discord", daemon=True)

    def __repr__(self) -> str:
        return f"WebhookPoster({self.target})"

    def start(self) -> "WebhookPoster":
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish what is queued within ``timeout_s``, then let the thread go."""
        try:
            self.queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self.thread.join(timeout_s)
        self.stopping.set()
        self.session.close()

    def submit(self, messages: list[str]) -> bool:
        """Queue one summary (its pieces stay together and in order); False when the queue is full."""
        try:
            self.queue.put_nowait(list(messages))
            return True
        except queue.Full:
            self.counts = {**self.counts, "dropped": self.counts["dropped"] + 1}
            self.log.warning("discord_dropped", target=self.target, reason="queue full", pieces=len(messages))
            return False

    def _count(self, key: str) -> None:
        self.counts = {**self.counts, key: self.counts[key] + 1}  # replaced whole: /metrics reads it

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            for content in batch:
                self._count("posted" if self.post(content) else "failed")

    def _scrub(self, text: str) -> str:
        """``text`` without the URL or its path (which carries the webhook's token)."""
        parts = urlsplit(self._url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        for secret in (self._url, self._url.split("://", 1)[-1], path, parts.path):
            if len(secret) > 1:
                text = text.replace(secret, "/***")
        return text

    def post(self, content: str, wait: Callable[[float], Any] | None = None) -> bool:
        """POST one message; True once Discord accepted it."""
        wait = wait or self.stopping.wait
        for attempt in range(self.max_tries):
            try:
                resp = self.session.post(self._url, json={"content": content}, timeout=self.timeout_s)
            except requests.RequestException as exc:
                self.log.warning("discord_error", target=self.target, attempt=attempt + 1,
                                 error=self._scrub(f"{type(exc).__name__}: {exc}"))
                wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                continue
            if resp.status_code < 300:
                return True
            if resp.status_code == 429:
                delay = retry_after_seconds(resp.headers, resp.content)
                self._count("rate_limited")
                self.log.warning("discord_rate_limited", target=self.target, retry_after_s=delay)
                wait(delay)
                continue
            if resp.status_code >= 500:
                wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                continue
            self.log.error("discord_refused", target=self.target, status=resp.status_code,
                           detail=self._scrub(resp.text[:200]))
            return False
        self.log.error("discord_gave_up", target=self.target, tries=self.max_tries)
        return False
