"""`make once`: the real services start, every strategy runs exactly one cycle, the summary is
printed, and everything stops with the state saved."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from common.model import ORDER_RETRY, SpotOrder
from config.settings import parse_config
from services.once import settle_orders
from services.runtime import ServiceRuntime
from services.signals import SignalEngine
from tests.services.test_signals_outbox import RecordingPublisher, ScriptedPortfolio
from tests.support.stack import REPO, stack_config

pytestmark = pytest.mark.timeout(180)


def test_once_runs_every_strategy_once_prints_the_summary_and_saves_state(tmp_path):
    cfg = stack_config()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "services.once", "--config", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=150,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for header in ("Spot: $14,000.00 → ", "Deribit: ", "IBKR: ", "Total: "):
        assert header in out
    lines = out.split("Strategies:")[1].strip().splitlines()
    assert [line.split(":")[0].strip() for line in lines] == [s["id"] for s in cfg["strategies"]]
    assert all(":" in line and "error" not in line for line in lines)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert len(state["strategies"]) == 34
    journal = (tmp_path / "state" / "journal.jsonl").read_text().splitlines()
    assert sum(b["trade_count"] for b in state["strategies"].values()) == len(journal)
    if journal:
        assert "Trades (" in out


NO_TICK_YET = {"status": ORDER_RETRY, "reason": "no price for ETH/USDT from the feed yet"}


@pytest.fixture
def engine():
    rt = ServiceRuntime("once-test")
    rt.publisher = RecordingPublisher([])
    engine = SignalEngine(parse_config(stack_config()), rt)
    engine.outbox["pairs-eth-sol:1"] = SpotOrder("pairs-eth-sol:1", "pairs-eth-sol", "ETH/USDT", 1, 3_000.0, 1)
    yield engine
    rt.close()


def test_an_order_the_portfolio_cannot_price_yet_is_resent_until_it_is_answered(engine):
    """A portfolio just started may lack the order's tick ('retry'): once resends after the
    backoff instead of giving up on the cycle's first answer."""
    engine.portfolio = portfolio = ScriptedPortfolio(NO_TICK_YET, NO_TICK_YET, {"status": "filled"})
    settle_orders(engine, 5.0)
    assert not engine.outbox and len(portfolio.sent) == 3


def test_an_order_still_refused_at_the_deadline_stays_in_the_outbox(engine):
    engine.portfolio = portfolio = ScriptedPortfolio(*[NO_TICK_YET] * 50)
    began = time.monotonic()
    settle_orders(engine, 0.2)
    assert list(engine.outbox) == ["pairs-eth-sol:1"]
    assert 0.2 <= time.monotonic() - began < 1.0
    assert 3 <= len(portfolio.sent) < 10  # resent after a growing backoff, not in a busy loop
