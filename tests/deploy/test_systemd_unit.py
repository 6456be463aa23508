"""deploy/go-trader.service runs the live config, checks it before starting, stops through
`go-trader stop`, and its comment's switch to the simulator names a config that exists."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys

from tests.support.stack import REPO

UNIT = REPO / "deploy" / "go-trader.service"
ROOT = "/opt/go-trader"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(re.sub(r"^#.*\n", "", UNIT.read_text(), flags=re.M))
    return parser


def test_the_unit_runs_the_live_config_and_checks_it_first():
    service = unit()["Service"]
    assert service["Environment"] == f"GO_TRADER_CONFIG={ROOT}/config/live.json"
    pre = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith("ExecStartPre=")]
    assert f"{ROOT}/.venv/bin/python -m config.settings --check ${{GO_TRADER_CONFIG}}" in pre
    assert f"{ROOT}/.venv/bin/python -m services.keys --config ${{GO_TRADER_CONFIG}}" in pre  # the bus keys
    assert service["ExecStop"] == f"{ROOT}/go-trader stop --config ${{GO_TRADER_CONFIG}}"
    assert (REPO / "go-trader").exists()
    live = subprocess.run([sys.executable, "-m", "config.settings", "--check", str(REPO / "config" / "live.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert live.returncode == 0 and "feed live" in live.stdout, live.stderr


def test_the_comment_says_how_to_switch_to_the_simulator():
    text = UNIT.read_text()
    assert f"#   Environment=GO_TRADER_CONFIG={ROOT}/config/default.json" in text
    assert "systemctl edit go-trader" in text and (REPO / "config" / "default.json").exists()
