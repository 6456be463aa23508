"""Every recovery step the README gives, performed on the real portfolio service: it runs in
this process with a ServiceRuntime on test ports (its request handlers and mark loop called
directly), and once as a subprocess for the exit code. Each test checks the refusal it expects
or that every book comes back exactly, and that no file it should not touch was touched."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.state_store import JournalError, StateFileError
from config.settings import Config
from tests.support.builders import T0, books, journal_path, run_and_stop, trade
from tests.support.builders import InProcessPortfolio as Portfolio
from tests.support.builders import portfolio_config as config
from tests.support.stack import REPO

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cfg(tmp_path) -> Config:
    return config(tmp_path)


def test_a_run_fills_spot_orders_and_a_kill_switch_liquidation(cfg):
    ran = run_and_stop(cfg)
    records = [json.loads(line) for line in journal_path(cfg).read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert {r.get("type") or r["kind"] for r in records} == {"spot", "liquidation", "risk"}
    assert ran["momentum-sol"][4] is True and ran["momentum-sol"][1] == {}  # killed and liquidated
    assert sum(b[2] for b in ran.values()) >= 25


# --- README: "move state.json away": every book is rebuilt from the journal ---------------------
def test_moving_state_json_away_rebuilds_every_book_from_the_journal(cfg, tmp_path, capsys):
    ran = run_and_stop(cfg)
    state = Path(cfg.state_file)
    away = tmp_path / "away"
    away.mkdir()
    state.rename(away / "state.json")
    capsys.readouterr()
    with Portfolio(cfg) as svc:
        assert books(svc) == ran
        seq = svc.portfolio.journal_seq
    loaded = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"state_loaded"' in line]
    assert loaded[-1]["existed"] is False and loaded[-1]["journal_replayed"] == seq
    with Portfolio(cfg) as svc:  # a normal restart after the rebuild replays nothing twice
        assert books(svc) == ran and svc.portfolio.journal_seq == seq
    assert json.loads(state.read_text())["journal_seq"] == seq


# --- README: "restore state.json.bak (or an older .bak.N)" ---------------------------------------
@pytest.mark.parametrize("backup", ["state.json.bak", "state.json.bak.1"])
def test_restoring_a_backup_over_a_damaged_state_brings_back_every_book(cfg, backup):
    state = Path(cfg.state_file)
    with Portfolio(cfg) as svc:
        trade(svc, range(5))
        svc.dirty = True
        svc.save()  # a periodic save: the next one keeps this state as .bak
        trade(svc, range(5, 10))
        ran = books(svc)
    older = json.loads((state.parent / backup).read_text())["journal_seq"]
    assert older < json.loads(state.read_text())["journal_seq"]
    state.write_bytes(b'{"version": 1, "strategies": {"momentum-btc": ')  # damaged
    with pytest.raises(StateFileError) as info:
        Portfolio(cfg)
    assert f"{state}: invalid JSON" in str(info.value) and "state.json.bak" in str(info.value)
    assert state.read_bytes() == b'{"version": 1, "strategies": {"momentum-btc": '  # never overwritten
    shutil.copyfile(state.parent / backup, state)
    with Portfolio(cfg) as svc:
        assert books(svc) == ran  # the backup plus the journal's tail it had not seen


def test_a_state_with_junk_values_is_refused_naming_the_key_and_no_backup_is_touched(cfg):
    run_and_stop(cfg)
    state = Path(cfg.state_file)
    doc = json.loads(state.read_text())
    doc["strategies"]["rsi-eth"]["cash"] = 1.5e308
    state.write_text(json.dumps(doc))
    before = {p.name: p.read_bytes() for p in state.parent.iterdir()}
    with pytest.raises(StateFileError, match=r"state\.strategies\.rsi-eth\.cash: 1\.5e\+308 is out of range"):
        Portfolio(cfg)
    assert {p.name: p.read_bytes() for p in state.parent.iterdir()} == before


def test_a_directory_in_place_of_state_json_is_refused(cfg):
    Path(cfg.state_file).mkdir(parents=True)
    with pytest.raises(StateFileError, match="is a directory"):
        Portfolio(cfg)


def test_temp_files_of_a_crashed_save_are_removed_on_start(cfg):
    run_and_stop(cfg, range(3))
    litter = Path(cfg.state_file).parent / ".state.json.k2j4h1.tmp"
    litter.write_text('{"version": 1, "strat')
    with Portfolio(cfg):
        assert not litter.exists()


# --- README: a damaged journal line stops the portfolio, naming the line --------------------------
@pytest.mark.parametrize("line", [3, -1])
def test_a_damaged_journal_line_is_refused_and_never_deleted(cfg, line):
    ran = run_and_stop(cfg)
    path = journal_path(cfg)
    good = path.read_bytes()
    lines = good.split(b"\n")[:-1]
    number = line if line > 0 else len(lines)
    damaged = b"\n".join(lines[:number - 1] + [lines[number - 1][:25]] + lines[number:]) + b"\n"
    path.write_bytes(damaged)
    state_before = Path(cfg.state_file).read_bytes()
    with pytest.raises(JournalError) as info:
        Portfolio(cfg)
    assert f"{path}:{number}: not valid JSON" in str(info.value) and f"Repair line {number}" in str(info.value)
    assert path.read_bytes() == damaged and Path(cfg.state_file).read_bytes() == state_before
    path.write_bytes(good)  # repaired from a copy
    with Portfolio(cfg) as svc:
        assert books(svc) == ran


def test_a_torn_last_line_without_its_newline_was_never_acknowledged_and_is_cut(cfg):
    ran = run_and_stop(cfg)
    path = journal_path(cfg)
    good = path.read_bytes()
    path.write_bytes(good + b'{"seq": 999, "order_id": "momentum-btc:1767')
    with Portfolio(cfg) as svc:
        assert books(svc) == ran
    assert path.read_bytes() == good


# --- README: a missing or shortened journal stops the portfolio ----------------------------------
def test_a_missing_journal_is_refused_until_it_is_restored(cfg, tmp_path):
    ran = run_and_stop(cfg)
    path = journal_path(cfg)
    seq = json.loads(Path(cfg.state_file).read_text())["journal_seq"]
    path.rename(tmp_path / "journal.copy")
    with pytest.raises(JournalError, match=rf"state.json has seen the journal up to seq {seq} but the journal is "
                                           rf"empty or missing.*Restore the journal"):
        Portfolio(cfg)
    (tmp_path / "journal.copy").rename(path)
    with Portfolio(cfg) as svc:
        assert books(svc) == ran


def test_a_shortened_journal_is_refused_naming_the_seqs_it_would_reuse(cfg):
    run_and_stop(cfg)
    path = journal_path(cfg)
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"\n".join(lines[:-2]) + b"\n")
    n = len(lines)
    with pytest.raises(JournalError, match=rf"ends at seq {n - 2}: .* reuse seqs {n - 1}..{n}"):
        Portfolio(cfg)


def test_a_journal_of_another_run_is_refused(cfg, tmp_path):
    run_and_stop(cfg)
    (tmp_path / "other").mkdir()
    other = config(tmp_path / "other")
    run_and_stop(other, range(1, 14))  # longer, and other prices at each seq
    shutil.copyfile(journal_path(other), journal_path(cfg))
    with pytest.raises(JournalError, match=r"journal.jsonl: line \d+: the journal's seq \d+ is not the fill"):
        Portfolio(cfg)


# --- strategies leaving the config ---------------------------------------------------------------
def test_a_strategy_removed_from_the_config_keeps_its_book(cfg, tmp_path):
    ran = run_and_stop(cfg)
    fewer = config(tmp_path, drop="rsi-eth")
    with Portfolio(fewer) as svc:
        assert books(svc) == ran
    assert "rsi-eth" in json.loads(Path(cfg.state_file).read_text())["strategies"]


def test_rebuilding_without_the_strategy_in_the_config_is_refused_until_it_is_back(cfg, tmp_path):
    ran = run_and_stop(cfg)
    Path(cfg.state_file).rename(tmp_path / "state.away")
    fewer = config(tmp_path, drop="rsi-eth")
    with pytest.raises(JournalError, match=r"seq \d+: a record of strategy 'rsi-eth', .* Add it back to the config"):
        Portfolio(fewer)
    assert not Path(cfg.state_file).exists()  # nothing saved: the fills stay replayable
    with Portfolio(config(tmp_path)) as svc:
        assert books(svc) == ran


# --- the real process: refusals exit 2 with the message ------------------------------------------
def test_the_portfolio_process_exits_2_naming_the_damaged_journal_line(cfg, tmp_path):
    run_and_stop(cfg, range(4))
    path = journal_path(cfg)
    lines = path.read_bytes().split(b"\n")[:-1]
    lines[1] = b"\x00\x00\x00"
    path.write_bytes(b"\n".join(lines) + b"\n")
    proc = subprocess.run([sys.executable, "-m", "services.portfolio", "--config", str(tmp_path / "config.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:2: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("record, problem", [
    ({"seq": 1, "order_id": "momentum-btc:1", "strategy_id": "momentum-btc", "kind": "spot", "instrument": "BTC/USDT",
      "side": "sell", "quantity": 0.01, "price": 90_000.0, "fee": 0.9, "cash_delta": 899.1, "realized_pnl": 0.0,
      "ts_event": T0}, "sells BTC/USDT but momentum-btc holds none"),
    ({"seq": 1, "type": "risk", "strategy_id": "momentum-btc", "ts_event": T0}, "seq 1.risk: expected an object"),
])
def test_a_journal_record_that_does_not_fit_its_book_is_refused(cfg, record, problem):
    path = journal_path(cfg)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(JournalError, match=problem):
        Portfolio(cfg)
    assert not Path(cfg.state_file).exists() and path.read_text() == json.dumps(record) + "\n"
