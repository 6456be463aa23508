"""`make once`: the real services start, every strategy runs exactly one cycle, the summary is
printed, and everything stops with the state saved."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
