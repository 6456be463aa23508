"""The portfolio service in this process, as the one writer that journals before it acks: every
step of an order is recorded as it happens (the journal append and its fsync, the booking, the
fill's publication, the answer), so the order of work is seen, not assumed. A fill is on disk,
fsynced, before it is booked or acknowledged; a batch journals all its fills before any ack; a
refused order writes nothing; a journal that cannot be written answers retry and changes
nothing; and a restart from the journal gives back the same books."""
from __future__ import annotations

import errno
import os
import shutil

import pytest

from common.model import ORDER_RETRY
from tests.support.builders import books, journal, portfolio_service, spot_order, tick
from tests.support.stack import stack_config

PRICES = {"BTC/USDT": 50_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0}
HOUR = 3_600_000


@pytest.fixture
def raw(tmp_path) -> dict:
    doc = stack_config()
    doc["state_file"] = str(tmp_path / "state" / "state.json")
    return doc


@pytest.fixture
def svc(raw, tmp_path):
    with portfolio_service(raw, tmp_path) as service:
        service.portfolio.mark(PRICES, service.cfg.feed.start_ms)
        yield service


def market_at(svc, ts: int, prices: dict[str, float] = PRICES) -> None:
    """marketdata's ticks of every symbol at ``ts``: the prices orders of that time fill at."""
    for symbol, price in prices.items():
        tick(svc, symbol, price, ts)


def order_for(svc, sid: str, ts: int, signal: int = 1) -> dict:
    symbol = next(sc.symbol for sc in svc.cfg.spot_strategies() if sc.id == sid)
    return spot_order(sid, symbol, PRICES[symbol], ts, signal)


def batch(*orders: dict) -> dict:
    return {"orders": [{"type": "order", "order": o} for o in orders]}


@pytest.fixture
def steps(svc, monkeypatch) -> list[tuple]:
    """Every step of the order path as it happens: ("append", seqs) and ("appended",) around the
    journal write, ("fsync",) inside it, ("booked", seqs, journal seqs on disk at that moment),
    ("published", topic)."""
    seen: list[tuple] = []
    real_append, real_commit, real_publish, real_fsync = (svc.journal.append, svc.portfolio.commit,
                                                          svc.rt.publisher.publish, os.fsync)

    def append(records):
        seen.append(("append", [r["seq"] for r in records]))
        real_append(records)
        seen.append(("appended",))

    def commit(records):
        seen.append(("booked", [r.seq for r in records], [line["seq"] for line in journal(svc)]))
        return real_commit(records)

    def publish(topic, kind, body):
        seen.append(("published", topic))
        return real_publish(topic, kind, body)

    def fsync(fd):
        seen.append(("fsync",))
        return real_fsync(fd)

    monkeypatch.setattr(svc.journal, "append", append)
    monkeypatch.setattr(svc.portfolio, "commit", commit)
    monkeypatch.setattr(svc.rt.publisher, "publish", publish)
    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_an_orders_fill_is_on_disk_and_fsynced_before_it_is_booked_and_acked(svc, steps) -> None:
    ts = svc.cfg.feed.start_ms
    market_at(svc, ts)
    ack = svc.on_order(order_for(svc, "momentum-btc", ts))
    steps.append(("acked", ack["status"]))
    assert steps == [("append", [1]), ("fsync",), ("appended",), ("booked", [1], [1]),
                     ("published", "fill.momentum-btc"), ("acked", "filled")]
    assert journal(svc) == [ack["fill"]]  # the fill acknowledged is the fill journaled, field for field
    assert ack["fill"]["order_id"] == f"momentum-btc:{ts}" and ack["fill"]["price"] == 50_000.0


def test_a_batch_journals_every_fill_in_one_fsynced_append_before_any_ack(svc, steps) -> None:
    ts = svc.cfg.feed.start_ms
    market_at(svc, ts)
    sids = ("momentum-btc", "rsi-eth", "volume-sol")
    reply = svc.on_orders(batch(*(order_for(svc, sid, ts) for sid in sids)))
    steps.append(("acked", [a["status"] for a in reply["acks"]]))
    assert steps == [("append", [1, 2, 3]), ("fsync",), ("appended",), ("booked", [1, 2, 3], [1, 2, 3]),
                     ("published", "fill.momentum-btc"), ("published", "fill.rsi-eth"),
                     ("published", "fill.volume-sol"), ("acked", ["filled"] * 3)]
    on_disk = journal(svc)
    assert [a["fill"] for a in reply["acks"]] == [{k: v for k, v in line.items() if k != "more"} for line in on_disk]
    assert [line.get("more", False) for line in on_disk] == [True, True, False]  # one append: torn, it goes whole
    assert [line["strategy_id"] for line in on_disk] == list(sids)


def test_a_refused_order_journals_nothing_and_books_nothing(svc, steps) -> None:
    ts = svc.cfg.feed.start_ms
    market_at(svc, ts)
    before = books(svc)
    far = spot_order("momentum-btc", "BTC/USDT", 10_000.0, ts)  # 80% under the portfolio's own tick
    ack = svc.on_order(far)
    assert ack["status"] == "rejected" and ack["fill"] is None and "from the portfolio's mark" in ack["reason"]
    unknown = svc.on_orders(batch(spot_order("nobody", "BTC/USDT", 50_000.0, ts)))["acks"]
    assert unknown[0]["code"] == "unknown_strategy"
    assert steps == [] and journal(svc) == [] and svc.portfolio.journal_seq == 0
    assert books(svc) == before


def test_a_refused_order_in_a_batch_leaves_only_the_others_fills_in_the_journal(svc) -> None:
    ts = svc.cfg.feed.start_ms
    market_at(svc, ts)
    good = order_for(svc, "momentum-eth", ts)
    reply = svc.on_orders(batch(spot_order("momentum-btc", "BTC/USDT", 10_000.0, ts), good))
    assert [a["status"] for a in reply["acks"]] == ["rejected", "filled"]
    assert [(line["seq"], line["order_id"]) for line in journal(svc)] == [(1, good["order_id"])]


@pytest.mark.parametrize("request_kind", ["order", "orders"])
def test_a_journal_that_cannot_be_written_answers_retry_and_changes_no_state(svc, monkeypatch,
                                                                             request_kind) -> None:
    ts = svc.cfg.feed.start_ms
    market_at(svc, ts)
    orders = [order_for(svc, sid, ts) for sid in ("momentum-btc", "rsi-eth")]
    state, fills_made = svc.portfolio.to_state(), svc.fills_made
    published, working = [], svc.journal.append
    monkeypatch.setattr(svc.rt.publisher, "publish", lambda *a: published.append(a))

    def broken(_records):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(svc.journal, "append", broken)
    if request_kind == "order":
        acks = [svc.on_order(orders[0])]
    else:
        acks = svc.on_orders(batch(*orders))["acks"]
    assert {a["status"] for a in acks} == {ORDER_RETRY}
    assert acks[0]["reason"] == "not journaled: [Errno 5] Input/output error" and acks[0]["fill"] is None
    assert svc.portfolio.to_state() == state and svc.fills_made == fills_made and published == []
    assert svc.rt.problems["persist"] == "cannot write journal.jsonl: EIO: Input/output error"
    assert journal(svc) == []
    monkeypatch.setattr(svc.journal, "append", working)
    resent = [svc.on_order(o) for o in orders[:len(acks)]]  # the engine resends what was answered retry
    assert [(a["status"], a["fill"]["seq"]) for a in resent] == [("filled", i + 1) for i in range(len(acks))]


def trade_two_hours(svc) -> None:
    """Entries across strategies in one hour, one exit and one more entry the next."""
    ts = svc.cfg.feed.start_ms
    market_at(svc, ts)
    svc.on_orders(batch(*(order_for(svc, sid, ts) for sid in ("momentum-btc", "rsi-eth", "volume-sol"))))
    svc.save()  # state.json as of the first hour: what a crash before the next save leaves
    later = {"BTC/USDT": 51_000.0, "ETH/USDT": 2_950.0, "SOL/USDT": 151.0}
    market_at(svc, ts + HOUR, later)
    sell = spot_order("momentum-btc", "BTC/USDT", 51_000.0, ts + HOUR, signal=-1)
    buy = spot_order("macd-eth", "ETH/USDT", 2_950.0, ts + HOUR)
    assert [a["status"] for a in svc.on_orders(batch(sell, buy))["acks"]] == ["filled", "filled"]


@pytest.mark.parametrize("state_json", ["behind the journal", "gone"])
def test_a_restart_from_the_journal_gives_back_the_same_books(raw, tmp_path, state_json) -> None:
    state_file = tmp_path / "state" / "state.json"
    with portfolio_service(raw, tmp_path) as svc:
        svc.portfolio.mark(PRICES, svc.cfg.feed.start_ms)
        trade_two_hours(svc)
        shutil.copy(state_file, tmp_path / "first-hour.json")
        ran, seq = books(svc), svc.portfolio.journal_seq
    assert seq == 5 and ran["momentum-btc"][2] == 2 and ran["momentum-btc"][1] == {}  # bought, then sold
    if state_json == "gone":
        state_file.unlink()
    else:
        shutil.copy(tmp_path / "first-hour.json", state_file)  # saved at seq 3: the last two fills only journaled
    with portfolio_service(raw, tmp_path) as svc:
        assert books(svc) == ran and svc.portfolio.journal_seq == seq
    with portfolio_service(raw, tmp_path) as svc:  # the rebuilt state is saved: nothing replayed twice
        assert books(svc) == ran and svc.portfolio.journal_seq == seq
