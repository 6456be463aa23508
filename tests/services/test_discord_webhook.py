"""The Discord poster against a webhook server on 127.0.0.1: order, splitting, 429 waits,
giving up, a queue that never blocks, and a URL that never reaches the log."""
from __future__ import annotations

import io
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.log import EventLog
from services.discord_webhook import WebhookPoster
from services.views.discord import DISCORD_LIMIT, cycle_messages
from tests.services.views.test_discord import FILL, known_status
from tests.support.http_thread import serve_in_thread

SECRET_PATH = "/api/webhooks/42/very-secret-token"


class Webhook:
    """A fake Discord: answers from a script of (status, headers, body), then 204 forever."""

    def __init__(self, script=()):
        self.script = list(script)
        self.received: list[dict] = []
        self.times: list[float] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                return

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append({"path": self.path, "json": json.loads(body)})
                hook.times.append(time.monotonic())
                status, headers, payload = hook.script.pop(0) if hook.script else (204, {}, b"")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    def __enter__(self):
        serve_in_thread(self.server)
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def poster_for(url: str, **kw) -> tuple[WebhookPoster, io.StringIO]:
    stream = io.StringIO()
    return WebhookPoster(url, EventLog("gateway", stream), timeout_s=2.0, **kw), stream


def rate_limited(body: dict | None = None, headers: dict | None = None):
    return 429, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body or {}).encode()


def test_a_summary_arrives_as_discord_content_in_order():
    with Webhook() as hook:
        poster, _log = poster_for(hook.url)
        poster.start()
        messages = cycle_messages(known_status(), [{**FILL, "seq": i} for i in range(1, 200)], cycle=12)
        assert len(messages) > 1
        assert poster.submit(messages)
        poster.stop()
        assert [r["json"]["content"] for r in hook.received] == messages
        assert all(len(r["json"]["content"]) <= DISCORD_LIMIT for r in hook.received)
        assert hook.received[0]["path"] == SECRET_PATH
        assert poster.counts["posted"] == len(messages)


def test_a_429_is_waited_out_for_the_body_retry_after_then_resent():
    with Webhook([rate_limited({"retry_after": 0.3, "global": False})]) as hook:
        poster, _log = poster_for(hook.url)
        waits: list[float] = []
        assert poster.post("hello", wait=waits.append) is True
        assert waits == [0.3]
        assert [r["json"]["content"] for r in hook.received] == ["hello", "hello"]
        assert poster.counts["rate_limited"] == 1


def test_a_429_with_only_a_retry_after_header_is_honoured_in_real_time():
    with Webhook([rate_limited(headers={"Retry-After": "1"})]) as hook:
        poster, _log = poster_for(hook.url)
        assert poster.post("hi") is True
        assert hook.times[1] - hook.times[0] >= 0.95


def test_a_server_error_is_retried_and_a_refusal_is_not():
    answers = [(502, {}, b"bad gateway"), (204, {}, b""), (400, {}, b'{"message": "Cannot send an empty message"}')]
    with Webhook(answers) as hook:
        poster, log = poster_for(hook.url)
        waits: list[float] = []
        assert poster.post("one", wait=waits.append) is True
        assert poster.post("two", wait=waits.append) is False
        assert len(hook.received) == 3 and waits == [1.0]
        assert "discord_refused" in log.getvalue()


def test_unreachable_webhook_gives_up_and_never_logs_the_url():
    with Webhook() as hook:
        url = hook.url
    poster, log = poster_for(url, max_tries=2)  # the server is gone: connection refused
    assert poster.post("hello", wait=lambda _s: None) is False
    text = log.getvalue()
    assert "discord_gave_up" in text and "discord_error" in text
    assert "very-secret-token" not in text and "/api/webhooks" not in text
    assert "very-secret-token" not in repr(poster)


def test_submit_never_blocks_when_the_queue_is_full():
    poster, log = poster_for("http://127.0.0.1:9/hook", queue_batches=1)  # not started: nothing drains
    assert poster.submit(["a"]) is True
    started = time.monotonic()
    assert poster.submit(["b"]) is False
    assert time.monotonic() - started < 0.05
    assert poster.counts["dropped"] == 1
    assert "discord_dropped" in log.getvalue()


def test_a_poster_refuses_a_url_that_is_not_http():
    with pytest.raises(ValueError, match="expected an http"):
        WebhookPoster("discord.com/api/webhooks/1/x", EventLog("gateway", io.StringIO()))
