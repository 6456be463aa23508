"""``go-trader reset-risk`` re-arms a tripped strategy through the real portfolio process: the
reset is journaled (a rebuild from the journal alone keeps it), logged, and shown in the
snapshot /status serves; with the portfolio down the command says what it tried."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from common.bus import Requester, RequestFailed
from common.bus_auth import READER
from config.settings import Config
from services.runtime import bus_security
from tests.support.builders import InProcessPortfolio as Portfolio
from tests.support.builders import journal_path, run_and_stop
from tests.support.builders import portfolio_config as config
from tests.support.stack import REPO

pytestmark = pytest.mark.timeout(120)


def go_trader(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.go_trader", *args,
                           "--config", str(tmp_path / "config.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def request(cfg: Config, kind: str) -> dict:
    """A read of the portfolio's, with the read-only key of the tap and the CLIs."""
    ctx = zmq.Context()
    req = Requester(ctx, cfg.endpoints["portfolio"].rep, "test", timeout_ms=500, retries=1,
                    security=bus_security(cfg, READER))
    try:
        return req.request(kind)
    finally:
        req.close()
        ctx.term()


def wait_answering(cfg: Config, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            request(cfg, "status")
            return
        except RequestFailed:
            if time.monotonic() > deadline:
                raise


def test_reset_risk_re_arms_a_killed_strategy_journaled_logged_and_shown(tmp_path):
    cfg = config(tmp_path)
    ran = run_and_stop(cfg)
    assert ran["momentum-sol"][4] is True  # test_recovery's run trips its kill switch (and daily loss)
    endpoint = cfg.endpoints["portfolio"].rep
    proc = subprocess.Popen([sys.executable, "-m", "services.portfolio", "--config", str(tmp_path / "config.json")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        wait_answering(cfg)
        done = go_trader(tmp_path, "reset-risk", "momentum-sol")
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        assert reply["reset"] is True and [c.split(" ")[0] for c in reply["cleared"]] == ["kill_switch", "daily_loss"]
        market_ts = request(cfg, "status")["market_ts"]
        risk = request(cfg, "snapshot")["strategies"]["momentum-sol"]["risk_state"]
        assert risk["kill_switch"] is False and risk["daily_loss_tripped"] is False and risk["kill_reason"] == ""
        assert risk["resets"] == 1 and risk["last_reset_ts"] == market_ts == reply["risk_state"]["last_reset_ts"]

        again = go_trader(tmp_path, "reset-risk", "momentum-sol")  # nothing tripped: nothing changes
        assert again.returncode == 0 and json.loads(again.stdout)["reset"] is False
        unknown = go_trader(tmp_path, "reset-risk", "no-such-id")
        assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
        assert f"the portfolio at {endpoint} refused: reset_risk.strategy_id: no configured strategy 'no-such-id'" \
            in unknown.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    [logged] = [json.loads(line) for line in out.splitlines() if '"risk_reset"' in line]
    assert logged["strategy"] == "momentum-sol" and len(logged["cleared"]) == 2

    records = [json.loads(line) for line in journal_path(cfg).read_text().splitlines()]
    assert records[-1]["type"] == "risk" and records[-1]["strategy_id"] == "momentum-sol"
    assert records[-1]["risk"]["resets"] == 1 and records[-1]["risk"]["kill_switch"] is False
    Path(cfg.state_file).rename(tmp_path / "moved-away.json")  # the journal alone keeps the reset
    with Portfolio(cfg) as svc:
        rebuilt = svc.portfolio.books["momentum-sol"].risk
        assert (rebuilt.kill_switch, rebuilt.daily_loss_tripped, rebuilt.resets) == (False, False, 1)


def test_reset_risk_with_the_portfolio_down_names_the_endpoint_and_what_to_do(tmp_path):
    cfg = config(tmp_path)
    done = go_trader(tmp_path, "reset-risk", "momentum-sol")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (
        f"go-trader: reset-risk: the portfolio at {cfg.endpoints['portfolio'].rep} (endpoints.portfolio.rep in "
        f"{tmp_path / 'config.json'}) did not answer; start the stack (`go-trader start`) and try again")
    assert go_trader(tmp_path, "reset-risk").stderr.startswith("go-trader: reset-risk: name a strategy id")
