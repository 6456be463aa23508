"""The event log: one JSON object per line, below-threshold records dropped, and values under
secret-looking keys redacted at any depth before anything is written."""
from __future__ import annotations

import io
import json

from common.log import REDACTED, EventLog, is_secret_key, redact


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_its_service_level_and_event() -> None:
    out = io.StringIO()
    log = EventLog("portfolio", stream=out)
    log.info("fill", seq=7, price=50_000.5, tags=("a", "b"))
    log.warning("risk_event", detail="multi\nline")
    assert out.getvalue().count("\n") == 2
    first, second = records(out)
    assert (first["service"], first["level"], first["event"]) == ("portfolio", "info", "fill")
    assert (first["seq"], first["price"], first["tags"]) == (7, 50_000.5, ["a", "b"])
    assert second["detail"] == "multi\nline" and first["ts"].endswith("Z")


def test_records_below_the_threshold_are_not_written() -> None:
    out = io.StringIO()
    log = EventLog("gateway", stream=out, level="warning")
    log.debug("noise")
    log.info("cycle", n=1)
    log.error("broken", why="x")
    assert [r["event"] for r in records(out)] == ["broken"]


def test_secrets_are_redacted_at_any_depth_and_nothing_else_is() -> None:
    fields = {"webhook_url": "https://discord.com/api/webhooks/1/SECRET", "Authorization": "Bearer SECRET",
              "price": 1.5, "config": {"api_key": "SECRET", "symbol": "BTC/USDT",
                                       "venues": [{"deribit_Secret": "SECRET", "name": "deribit"}]},
              "ids": ("token-free", 3)}
    assert redact(fields) == {"webhook_url": REDACTED, "Authorization": REDACTED, "price": 1.5,
                              "config": {"api_key": REDACTED, "symbol": "BTC/USDT",
                                         "venues": [{"deribit_Secret": REDACTED, "name": "deribit"}]},
                              "ids": ["token-free", 3]}  # a value is never a key: kept
    out = io.StringIO()
    EventLog("notify", stream=out).error("post_failed", **fields)
    assert "SECRET" not in out.getvalue()
    assert records(out)[0]["config"]["symbol"] == "BTC/USDT"


def test_a_secret_key_is_recognised_in_any_case_and_a_plain_one_is_not() -> None:
    assert all(is_secret_key(k) for k in ("TOKEN", "password", "myApiKey", "discord_webhook", "x-authorization"))
    assert not any(is_secret_key(k) for k in ("price", "symbol", "order_id", "venue"))
