"""Discord summaries: the exact seed text, the 2000-character split, 429 waits, URL redaction."""
from __future__ import annotations

import pytest

from services.views.discord import (
    DEFAULT_RETRY_AFTER_S,
    DISCORD_LIMIT,
    MAX_RETRY_AFTER_S,
    cycle_messages,
    cycle_summary,
    redact_webhook,
    retry_after_seconds,
    split_message,
)
from services.views.status import BookClone, build_status
from tests.support.builders import book, clone

JAN_1_2026 = 1_767_225_600_000


def known_clone(journal_seq: int = 5) -> BookClone:
    """Spot: momentum 1000 -> 1100 (0.01 BTC bought at 40k, now 60k), rsi 1000 -> 950;
    Deribit 1000 -> 1050 (options worth 150 over 900 cash); IBKR 2000 -> 1900."""
    books = {
        "momentum-btc": book("momentum-btc", "spot", 500.0, 1000.0, {"BTC/USDT": (0.01, 40_000.0)}),
        "rsi-eth": book("rsi-eth", "spot", 950.0, 1000.0),
        "deribit-vol-btc": book("deribit-vol-btc", "deribit", 900.0, 1000.0, option_value=150.0),
        "ibkr-strangle-mbt": book("ibkr-strangle-mbt", "ibkr", 1900.0, 2000.0),
    }
    return clone(books, {"BTC/USDT": 60_000.0}, JAN_1_2026, journal_seq=journal_seq)


def known_status() -> dict:
    return build_status(known_clone(), 12, {"ok": True})


FILL = {"seq": 5, "strategy_id": "momentum-btc", "side": "buy", "quantity": 0.01, "instrument": "BTC/USDT",
        "price": 60_000.0, "fee": 0.6}

EXPECTED = """**go-trader** cycle 12 at 2026-01-01T00:00:00+00:00
Spot: **$2,000.00 → $2,050.00** (+$50.00 / +2.50%)
• momentum-btc (+10.0%)
• rsi-eth (-5.0%)
Deribit: **$1,000.00 → $1,050.00** (+$50.00 / +5.00%)
• deribit-vol-btc (+5.0%)
IBKR: **$2,000.00 → $1,900.00** (-$100.00 / -5.00%)
• ibkr-strangle-mbt (-5.0%)
Total: **$5,000.00 → $5,000.00** (+$0.00 / +0.00%)
Trades (1):
• momentum-btc: BUY 0.01 BTC/USDT @ $60,000.00 (fee $0.60)"""


def test_cycle_summary_is_the_seed_text_for_a_known_portfolio():
    assert cycle_summary(known_status(), [FILL], cycle=12) == EXPECTED


def test_cycle_summary_without_trades_has_no_trade_section():
    text = cycle_summary(known_status(), [], cycle=12)
    assert "Trades" not in text
    assert text.splitlines()[-1] == "Total: **$5,000.00 → $5,000.00** (+$0.00 / +0.00%)"


def test_a_loss_too_small_for_the_percent_keeps_its_minus_sign():
    books = {
        "momentum-btc": book("momentum-btc", "spot", 500.0, 1000.0, {"BTC/USDT": (0.01, 40_000.0)}),
        "rsi-eth": book("rsi-eth", "spot", 950.0 - 0.004, 1000.0),  # rounds away in money, stays 0.00% +$0.00
        "deribit-vol-btc": book("deribit-vol-btc", "deribit", 900.0, 1000.0, option_value=150.0),
        "ibkr-strangle-mbt": book("ibkr-strangle-mbt", "ibkr", 1900.0 + 84.66, 2000.0),  # -$15.34: -0.77%
    }
    status = build_status(clone(books, {"BTC/USDT": 60_000.0}, JAN_1_2026), 12, {"ok": True})
    lines = cycle_summary(status, [], cycle=12).splitlines()
    assert "IBKR: **$2,000.00 → $1,984.66** (-$15.34 / -0.77%)" in lines
    assert lines[-1] == "Total: **$5,000.00 → $5,084.66** (+$84.66 / +1.69%)"
    big = build_status(clone({"a": book("a", "spot", 9_999_984.66, 10_000_000.0)}, {}, JAN_1_2026), 1, {"ok": True})
    assert "Spot: **$10,000,000.00 → $9,999,984.66** (-$15.34 / -0.00%)" in cycle_summary(big, [], cycle=1)


def test_a_short_summary_is_one_message():
    assert cycle_messages(known_status(), [FILL], cycle=12) == [EXPECTED]


def test_a_long_summary_splits_on_line_ends_within_the_limit():
    fills = [{**FILL, "seq": i, "quantity": 0.001 * i} for i in range(1, 301)]
    text = cycle_summary(known_status(), fills, cycle=12)
    pieces = cycle_messages(known_status(), fills, cycle=12)
    assert len(text) > 3 * DISCORD_LIMIT
    assert len(pieces) >= 4
    assert all(0 < len(p) <= DISCORD_LIMIT for p in pieces)
    assert "\n".join(pieces) == text  # nothing lost, nothing reordered, every cut at a line end


def test_split_fills_each_piece_as_far_as_whole_lines_allow():
    lines = ["x" * 9] * 10  # 10 lines of 9 chars: "9\n9" = 19 fits, a third line (29) does not
    assert split_message("\n".join(lines), limit=20) == ["x" * 9 + "\n" + "x" * 9] * 5


def test_split_cuts_a_single_overlong_line_inside():
    assert split_message("ab\n" + "y" * 25 + "\ncd", limit=10) == ["ab", "y" * 10, "y" * 10, "y" * 5 + "\ncd"]


def test_split_of_blank_text_is_nothing():
    assert split_message("\n\n  \n") == []


def test_split_rejects_a_limit_below_one():
    with pytest.raises(ValueError, match="limit must be >= 1"):
        split_message("x", limit=0)


@pytest.mark.parametrize("headers, body, expected", [
    ({}, b'{"message": "You are being rate limited.", "retry_after": 0.25, "global": false}', 0.25),
    ({"Retry-After": "2"}, b"", 2.0),
    ({"retry-after": "3"}, None, 3.0),
    ({"Retry-After": "9"}, {"retry_after": 1.5}, 1.5),  # the body's finer value wins
    ({}, b"not json", DEFAULT_RETRY_AFTER_S),
    ({"Retry-After": "soon"}, {"retry_after": "later"}, DEFAULT_RETRY_AFTER_S),
    ({"Retry-After": "-4"}, None, DEFAULT_RETRY_AFTER_S),
    ({}, {"retry_after": 86_400}, MAX_RETRY_AFTER_S),
])
def test_retry_after_reads_body_then_header(headers, body, expected):
    assert retry_after_seconds(headers, body) == expected


def test_redacted_webhook_keeps_only_scheme_and_host():
    url = "https://discord.com/api/webhooks/1234567890/SECRET-token_value"
    assert redact_webhook(url) == "https://discord.com/***"
    assert redact_webhook("http://127.0.0.1:8123/hook/abc") == "http://127.0.0.1:8123/***"
    assert "SECRET" not in redact_webhook(url)
    assert redact_webhook("https://user:pw@example.com/x?token=1") == "https://example.com/***"
    assert redact_webhook("not a url with SECRET") == "***"
