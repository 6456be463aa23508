"""A state file and journal written under the ids an earlier version used (``*-protective-*``,
``*-covered-*``) come back under the seed's ids (``*-puts-*``, ``*-calls-*``) with every book,
position and trade, on the real portfolio service in this process; the journal records the
renames, so a rebuild from the journal alone gives the same books."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.bus_auth import generate_keys
from common.state_store import JournalError
from config.settings import Config, parse_config
from options.contracts import OptionContract
from options.venues import DERIBIT, IBKR_CME
from tests.support.builders import HOUR, T0, journal_path, trade
from tests.support.builders import InProcessPortfolio as Portfolio
from tests.support.builders import log_events as events
from tests.support.builders import mark_at as tick
from tests.support.stack import stack_config
from trading.option_book import OptionLeg, OptionOrder
from trading.portfolio import SEED_RENAMES

pytestmark = pytest.mark.timeout(120)

OLD_IDS = {new: old for old, new in SEED_RENAMES.items()}


def configs(tmp_path: Path) -> tuple[Config, Config]:
    """The default config (the seed's ids) and the same one under the old ids, one state dir."""
    new = stack_config()
    old = json.loads(json.dumps(new))
    for s in old["strategies"]:
        s["id"] = OLD_IDS.get(s["id"], s["id"])
    pair = (parse_config(old, "old.json", base_dir=tmp_path), parse_config(new, "new.json", base_dir=tmp_path))
    generate_keys(pair[0].bus.keys_dir)  # one state dir, one key dir: as `make run` makes them
    return pair


def option_order(sid: str, ts: int, spot: float, label: str, side: int = -1, action: str = "open") -> dict:
    venue = IBKR_CME if sid.startswith("ibkr") else DERIBIT
    coin = "BTC" if sid.endswith("btc") else "ETH"
    strike = round(spot * 0.9 / 1000) * 1000 if coin == "BTC" else round(spot * 0.9 / 50) * 50
    multiplier = venue.underlying(coin).multiplier
    contract = OptionContract(venue.name, coin, venue.listed_expiries(ts, 40)[-1], float(strike), "calls" in sid
                              or "covered" in sid, multiplier)
    leg = OptionLeg(contract, side, 1.0, spot * 0.02, {"delta": -0.3}, 0.8, "test", action)
    return OptionOrder(f"{sid}:{ts}:{label}", sid, ts, spot, (leg,)).to_dict()


def book_option(svc, order: dict) -> str:
    """Book an option order on the books' own rules (decide, journal, commit), as the portfolio
    does once the pricer has listed and priced it: this test is about the ids, not the market."""
    decision = svc.portfolio.decide_options(OptionOrder.from_dict(order))
    svc.book_fills(list(decision.fills))
    return decision.status


def run_under_old_ids(cfg: Config) -> None:
    """Spot trades and a kill switch (test_recovery's run), and an option position in each of
    the eight renamed books, one of them opened and closed again (a realized trade)."""
    with Portfolio(cfg) as svc:
        trade(svc, range(10))
        ts = T0 + 10 * HOUR
        for sid in SEED_RENAMES:
            spot = svc.portfolio.prices["BTC/USDT" if sid.endswith("btc") else "ETH/USDT"]
            assert book_option(svc, option_order(sid, ts, spot, "open")) == "filled", sid
        spot = svc.portfolio.prices["BTC/USDT"]
        closing = option_order("deribit-protective-btc", ts + HOUR, spot, "close", +1, "close")
        assert book_option(svc, closing) == "filled"
        tick(svc, {"BTC/USDT": spot}, ts + 2 * HOUR)


def books(svc) -> dict[str, tuple]:
    return {sid: (b.strategy_id, b.kind, b.initial_capital, b.cash, b.positions, b.option_positions, b.trade_count,
                  b.recent_trades, b.recent_order_ids, b.risk.to_dict())
            for sid, b in svc.portfolio.books.items()}


def money(books: dict[str, tuple]) -> dict[str, tuple]:
    """What a rebuild from the journal reproduces: all but the marks (the drawdown peak, the
    day's start value) and the orders answered without a fill, which are not journaled."""
    flags = ("kill_switch", "kill_reason", "consecutive_losses", "circuit_breaker_until", "daily_loss_tripped")
    return {sid: (*b[:8], *(b[9][f] for f in flags)) for sid, b in books.items()}


def under_new_ids(old_books: dict[str, tuple]) -> dict[str, tuple]:
    renamed = {}
    for sid, (_, kind, capital, cash, positions, options, count, trades, order_ids, risk) in old_books.items():
        new = SEED_RENAMES.get(sid, sid)
        trades = [{**t, "strategy_id": new} for t in trades]
        renamed[new] = (new, kind, capital, cash, positions, options, count, trades, order_ids, risk)
    return renamed


def test_a_state_under_the_old_ids_comes_back_under_the_seed_ids_with_everything(tmp_path, capsys):
    old_cfg, new_cfg = configs(tmp_path)
    run_under_old_ids(old_cfg)
    with Portfolio(old_cfg) as svc:
        before = books(svc)
    assert all(before[sid][5] for sid in SEED_RENAMES if sid != "deribit-protective-btc")
    assert before["deribit-protective-btc"][5] == {} and before["deribit-protective-btc"][6] == 2
    journal_before = journal_path(new_cfg).read_text()
    capsys.readouterr()

    with Portfolio(new_cfg) as svc:
        migrated = books(svc)
        seq = svc.portfolio.journal_seq
    assert migrated == under_new_ids(before)
    assert not set(migrated) & set(SEED_RENAMES)
    out = capsys.readouterr().out
    assert sorted((e["old_id"], e["new_id"]) for e in events(out, "strategy_renamed")) == sorted(SEED_RENAMES.items())
    [loaded] = events(out, "state_loaded")
    assert loaded["created"] == [] and loaded["retired"] == []

    # The journal keeps its history and gains one rename record per book, after it.
    journal = journal_path(new_cfg).read_text()
    assert journal.startswith(journal_before)
    added = [json.loads(line) for line in journal[len(journal_before):].splitlines()]
    assert [(r["type"], r["old_id"], r["new_id"]) for r in added] == [("rename", o, n) for o, n in
                                                                       sorted(SEED_RENAMES.items())]
    assert added[-1]["seq"] == seq

    # A restart renames nothing again; a rebuild from the journal alone gives the same books.
    with Portfolio(new_cfg) as svc:
        assert books(svc) == migrated and svc.portfolio.journal_seq == seq
    assert not events(capsys.readouterr().out, "strategy_renamed")
    away = tmp_path / "away"
    away.mkdir()
    Path(new_cfg.state_file).rename(away / "state.json")
    with Portfolio(new_cfg) as svc:
        assert money(books(svc)) == money(migrated) and svc.portfolio.journal_seq == seq


def test_a_journal_of_the_old_ids_alone_rebuilds_under_the_seed_ids_and_records_the_renames(tmp_path):
    old_cfg, new_cfg = configs(tmp_path)
    run_under_old_ids(old_cfg)
    with Portfolio(old_cfg) as svc:
        before = books(svc)
    Path(old_cfg.state_file).unlink()
    with Portfolio(new_cfg) as svc:
        rebuilt = books(svc)
    assert money(rebuilt) == money(under_new_ids(before))
    renames = [json.loads(line) for line in journal_path(new_cfg).read_text().splitlines()
               if '"rename"' in line]
    assert sorted((r["old_id"], r["new_id"]) for r in renames) == sorted(SEED_RENAMES.items())


def test_a_book_of_the_new_id_beside_the_old_one_keeps_both(tmp_path, capsys):
    old_cfg, new_cfg = configs(tmp_path)
    both = json.loads(json.dumps(stack_config()))
    both["strategies"].append({**next(s for s in both["strategies"] if s["id"] == "deribit-puts-btc"),
                               "id": "deribit-protective-btc"})
    with Portfolio(parse_config(both, "both.json", base_dir=tmp_path)):
        pass
    capsys.readouterr()
    with Portfolio(new_cfg) as svc:
        assert {"deribit-puts-btc", "deribit-protective-btc"} <= set(svc.portfolio.books)
    [skipped] = events(capsys.readouterr().out, "strategy_rename_skipped")
    assert skipped["old_id"] == "deribit-protective-btc" and skipped["new_id"] == "deribit-puts-btc"


def test_a_rename_record_that_names_one_id_twice_is_refused(tmp_path):
    _, new_cfg = configs(tmp_path)
    path = journal_path(new_cfg)
    path.parent.mkdir(parents=True, exist_ok=True)  # the key directory may already sit in it
    record = {"seq": 1, "type": "rename", "old_id": "x", "new_id": "x", "ts_event": T0}
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(JournalError, match="must be two different ids"):
        Portfolio(new_cfg)
