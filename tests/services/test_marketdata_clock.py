"""Market time only moves forward across restarts: a damaged clock file falls back to its .bak,
neither usable refuses to start (never a silent rewind to the feed's start), the portfolio's own
market time is a floor, and one marketdata owns the clock file."""
from __future__ import annotations

import io
import json

import pytest

from common.dir_lock import LockHeld, StateDirMissing
from common.log import EventLog
from common.state_store import save_state
from config.settings import parse_config
from services.marketdata import ClockFileError, MarketDataService
from services.runtime import ServiceRuntime
from tests.support.stack import config_in, stack_config

HOUR = 3_600_000


@pytest.fixture
def runtime():
    rt = ServiceRuntime("marketdata-test")
    yield rt
    rt.close()


def clock_at(svc: MarketDataService, market_ts: int) -> dict:
    return {"version": 1, "feed": svc._identity(), "market_ts": market_ts}


def first_run(cfg, rt, market_ts: int) -> None:
    """A run that saved its clock twice (so a .bak exists) and stopped at ``market_ts``."""
    svc = MarketDataService(cfg, rt)
    save_state(svc.clock_file, clock_at(svc, market_ts - HOUR))
    save_state(svc.clock_file, clock_at(svc, market_ts))
    svc.lock.release()


def test_first_start_begins_at_the_feed_start_and_a_restart_resumes(tmp_path, runtime):
    cfg = config_in(tmp_path)
    svc = MarketDataService(cfg, runtime)
    assert svc.feed.now_ts == cfg.feed.start_ms
    svc.stop()
    first_run(cfg, runtime, cfg.feed.start_ms + 30 * HOUR)
    svc = MarketDataService(cfg, runtime)
    try:
        assert svc.feed.now_ts == cfg.feed.start_ms + 30 * HOUR
    finally:
        svc.stop()


@pytest.mark.parametrize("damage", [b"{\"version\": 1, \"market", b"", b"\xff\xfe",
                                    b'{"version": 1, "market_ts": "x"}'])
def test_a_damaged_clock_file_falls_back_to_its_bak(tmp_path, runtime, damage):
    runtime.log = EventLog("marketdata-test", stream=io.StringIO())
    cfg = config_in(tmp_path)
    first_run(cfg, runtime, cfg.feed.start_ms + 30 * HOUR)
    (tmp_path / "marketdata.clock.json").write_bytes(damage)
    svc = MarketDataService(cfg, runtime)
    try:
        assert svc.feed.now_ts == cfg.feed.start_ms + 29 * HOUR  # the .bak: one save older, not day one
    finally:
        svc.stop()
    logged = [json.loads(line) for line in runtime.log.stream.getvalue().splitlines()]
    restored = [r for r in logged if r.get("event") == "clock_file_restored_from_bak"]
    assert restored and "marketdata.clock.json" in restored[0]["detail"]


def test_a_deleted_clock_file_with_a_bak_resumes_from_the_bak(tmp_path, runtime):
    cfg = config_in(tmp_path)
    first_run(cfg, runtime, cfg.feed.start_ms + 30 * HOUR)
    (tmp_path / "marketdata.clock.json").unlink()
    svc = MarketDataService(cfg, runtime)
    try:
        assert svc.feed.now_ts == cfg.feed.start_ms + 29 * HOUR
    finally:
        svc.stop()


def test_clock_and_bak_both_unusable_refuse_to_start_and_leave_the_files_alone(tmp_path, runtime):
    cfg = config_in(tmp_path)
    first_run(cfg, runtime, cfg.feed.start_ms + 30 * HOUR)
    (tmp_path / "marketdata.clock.json").write_bytes(b"garbage")
    (tmp_path / "marketdata.clock.json.bak").write_bytes(b"")
    with pytest.raises(ClockFileError) as err:
        MarketDataService(cfg, runtime)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'marketdata.clock.json'}: no usable market clock")
    assert "invalid JSON" in message and "the file is empty" in message
    assert "Restore the file (or its .bak)" in message and "delete both" in message
    assert (tmp_path / "marketdata.clock.json").read_bytes() == b"garbage"
    assert (tmp_path / "marketdata.clock.json.bak").read_bytes() == b""


def test_the_portfolios_market_time_is_a_floor_for_a_lagging_clock(tmp_path, runtime):
    cfg = config_in(tmp_path)
    first_run(cfg, runtime, cfg.feed.start_ms + 30 * HOUR)
    save_state(tmp_path / "state.json", {"market_ts": cfg.feed.start_ms + 32 * HOUR, "strategies": {}})
    svc = MarketDataService(cfg, runtime)
    try:
        assert svc.feed.now_ts == cfg.feed.start_ms + 32 * HOUR
    finally:
        svc.stop()


def test_another_feed_in_the_config_starts_its_own_clock(tmp_path, runtime):
    cfg = config_in(tmp_path)
    first_run(cfg, runtime, cfg.feed.start_ms + 30 * HOUR)
    raw = stack_config()
    raw["state_file"] = str(tmp_path / "state.json")
    raw["feed"]["seed"] = cfg.feed.seed + 1
    svc = MarketDataService(parse_config(raw), runtime)
    try:
        assert svc.feed.now_ts == cfg.feed.start_ms
    finally:
        svc.stop()


def test_one_marketdata_per_clock_file_and_none_in_a_missing_dir(tmp_path, runtime):
    cfg = config_in(tmp_path)
    svc = MarketDataService(cfg, runtime)
    try:
        with pytest.raises(LockHeld, match="marketdata.lock is locked by PID"):
            MarketDataService(cfg, runtime)
    finally:
        svc.stop()
    with pytest.raises(StateDirMissing, match="does not exist"):
        MarketDataService(config_in(tmp_path / "unmounted"), runtime)
    assert not (tmp_path / "unmounted").exists()
