"""The portfolio is the one writer of its state directory, refuses a missing one, and tells the
truth when it cannot persist: problems["persist"] while writes fail, 'retry' instead of an ack
for an order it cannot journal, and the flag cleared by the next good save."""
from __future__ import annotations

import errno
import json

import pytest

from common.dir_lock import DirLock, LockHeld, StateDirMissing
from common.model import ORDER_RETRY
from services import portfolio as portfolio_module
from services.portfolio import LOCK_NAME, PortfolioService
from services.runtime import ServiceRuntime
from tests.support import disk
from tests.support.builders import spot_order
from tests.support.stack import config_in, stack_config, stack_security

SYMBOL, PRICE = "BTC/USDT", 50_000.0


@pytest.fixture
def runtime(tmp_path):
    raw = stack_config()
    rt = ServiceRuntime("portfolio-test", stack_security(raw, tmp_path / "keys-home", "portfolio"))
    rt.bind_publisher(raw["endpoints"]["portfolio"]["pub"])
    yield rt
    rt.close()


def spot_strategy(cfg) -> str:
    return next(sc.id for sc in cfg.spot_strategies() if sc.symbol == SYMBOL)


def order(sid: str, ts: int, signal: int = 1) -> dict:
    return spot_order(sid, SYMBOL, PRICE, ts, signal)


def start(cfg, rt) -> PortfolioService:
    svc = PortfolioService(cfg, rt)
    svc.portfolio.mark({SYMBOL: PRICE}, cfg.feed.start_ms)
    return svc


def test_a_second_portfolio_on_the_same_state_dir_is_refused_naming_the_lock_and_pid(tmp_path, runtime):
    cfg = config_in(tmp_path)
    svc = start(cfg, runtime)
    try:
        assert (tmp_path / LOCK_NAME).read_text().strip().isdigit()
        before = (tmp_path / "state.json").read_bytes()
        with pytest.raises(LockHeld, match=rf"{tmp_path / LOCK_NAME} is locked by PID \d+"):
            PortfolioService(config_in(tmp_path), runtime)
        assert (tmp_path / "state.json").read_bytes() == before  # the refused copy touched nothing
    finally:
        svc.stop()
    DirLock(tmp_path / LOCK_NAME).acquire().release()  # stop released it


def test_missing_state_dir_is_refused_unless_the_config_creates_it(tmp_path, runtime):
    with pytest.raises(StateDirMissing, match="does not exist.*create_state_dir"):
        PortfolioService(config_in(tmp_path / "unmounted"), runtime)
    assert not (tmp_path / "unmounted").exists()
    svc = PortfolioService(config_in(tmp_path / "new", create_state_dir=True), runtime)
    svc.stop()
    assert json.loads((tmp_path / "new" / "state.json").read_text())["journal_seq"] == 0


def test_a_journal_that_cannot_be_written_answers_retry_and_books_nothing(tmp_path, runtime, monkeypatch):
    cfg = config_in(tmp_path)
    svc = start(cfg, runtime)
    on_order = svc.on_order
    sid = spot_strategy(cfg)
    try:
        def read_only(_fills):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(svc.journal, "append", read_only)
        cash = svc.portfolio.books[sid].cash
        reply = on_order(order(sid, cfg.feed.start_ms))
        assert reply == {"order_id": f"{sid}:{cfg.feed.start_ms}", "status": ORDER_RETRY,
                         "reason": "not journaled: [Errno 30] Read-only file system", "fill": None, "fills": []}
        assert runtime.problems == {"persist": "cannot write journal.jsonl: EROFS: Read-only file system"}
        assert svc.portfolio.books[sid].cash == cash and svc.portfolio.journal_seq == 0
        monkeypatch.undo()
        svc.save()  # the next save probes the disk: good again, the flag clears
        assert runtime.problems == {}
        reply = on_order(order(sid, cfg.feed.start_ms))  # the same order, resent: now it fills
        assert reply["status"] == "filled" and reply["fill"]["seq"] == 1
    finally:
        svc.stop()
    assert [json.loads(line)["seq"] for line in (tmp_path / "journal.jsonl").read_text().splitlines()] == [1]


def test_a_failed_save_keeps_the_state_dirty_and_flags_it_until_a_save_succeeds(tmp_path, runtime, monkeypatch):
    svc = start(config_in(tmp_path), runtime)
    try:
        def denied(_path, _state):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(portfolio_module, "save_state", denied)
        svc.dirty = True
        svc.save()
        svc.save()
        assert svc.dirty and runtime.problems == {"persist": "cannot write state.json: EACCES: Permission denied"}
        monkeypatch.undo()
        svc.save()
        assert not svc.dirty and runtime.problems == {}
    finally:
        svc.stop()


def test_a_deleted_lock_file_is_taken_again_and_a_stolen_one_stops_every_write(tmp_path, runtime):
    cfg = config_in(tmp_path)
    svc = start(cfg, runtime)
    sid = spot_strategy(cfg)
    on_order = svc.on_order
    thief = None
    try:
        (tmp_path / LOCK_NAME).unlink()
        svc.dirty = True
        svc.save()  # lost and free: taken again
        assert svc.lock.still_held() and runtime.problems == {}
        (tmp_path / LOCK_NAME).unlink()
        thief = DirLock(tmp_path / LOCK_NAME).acquire()  # another writer got there first
        before = (tmp_path / "state.json").read_bytes()
        svc.dirty = True
        svc.save()
        assert (tmp_path / "state.json").read_bytes() == before
        assert runtime.problems["persist"].startswith(f"cannot write state.json: {tmp_path / LOCK_NAME} is locked")
        assert on_order(order(sid, cfg.feed.start_ms))["status"] == ORDER_RETRY
        assert not (tmp_path / "journal.jsonl").read_text()
    finally:
        if thief is not None:
            thief.release()
        svc.stop()


@pytest.mark.skipif(not disk.can_mount(), reason="needs root to mount a small tmpfs")
def test_a_full_disk_flags_persist_refuses_fills_with_retry_and_recovers(tmp_path, runtime):
    state_dir = tmp_path / "state"
    with disk.small_tmpfs(state_dir, size_kb=512):
        cfg = config_in(state_dir)
        svc = start(cfg, runtime)
        sid = spot_strategy(cfg)
        on_order = svc.on_order
        try:
            disk.fill(state_dir)
            reply = on_order(order(sid, cfg.feed.start_ms))
            assert reply["status"] == ORDER_RETRY and "No space left on device" in reply["reason"]
            assert runtime.problems["persist"] == "cannot write journal.jsonl: ENOSPC: No space left on device"
            svc.save()
            assert "persist" in runtime.problems and json.loads((state_dir / "state.json").read_text())
            assert not list(state_dir.glob("*.tmp"))  # a failed save leaves no temp file behind
            disk.free(state_dir)
            svc.save()
            assert runtime.problems == {}
            assert on_order(order(sid, cfg.feed.start_ms))["status"] == "filled"
        finally:
            svc.stop()
        lines = (state_dir / "journal.jsonl").read_text().splitlines()
        assert [json.loads(line)["seq"] for line in lines] == [1]
