"""The journal alone rebuilds every book, nothing is ever dropped on replay, the journal is
checked against the state it must belong to, and a state that could not be loaded back is
never produced."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.model import RecordError, SpotOrder
from common.state_store import Journal
from options.contracts import OptionContract
from options.venues import DERIBIT
from trading.ledger import book_to_dict
from trading.option_book import OptionLeg, OptionOrder
from trading.portfolio import Portfolio, RiskRecord, StrategyMeta, journal_fills, journal_record, parse_state
from trading.risk import RiskLimits

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
EXPIRY = next(e for e in DERIBIT.listed_expiries(T0, 10) if e > T0 + 3 * DAY)
SPOT_LIMITS = RiskLimits(max_drawdown_pct=20.0, max_position_pct=95.0, max_consecutive_losses=2,
                         circuit_breaker_ms=DAY, daily_loss_pct=15.0)
OPTION_LIMITS = RiskLimits(max_drawdown_pct=50.0, max_position_pct=95.0, max_consecutive_losses=5,
                           circuit_breaker_ms=DAY, daily_loss_pct=50.0)
METAS = [
    StrategyMeta("mom", "spot", "spot", 1_000.0, SPOT_LIMITS, "momentum"),
    StrategyMeta("wheel", "options", "deribit", 50_000.0, OPTION_LIMITS, "wheel"),
    StrategyMeta("vol", "options", "deribit", 50_000.0, OPTION_LIMITS, "vol_mean_reversion"),
]
PUT = OptionContract("deribit", "BTC", EXPIRY, 85_000.0, False, 1.0)
CALL = OptionContract("deribit", "BTC", DERIBIT.listed_expiries(T0, 40)[-1], 95_000.0, True, 1.0)
# What the pricer writes into a position; marks are not journaled, a rebuild re-marks.
MARK_FIELDS = {"current_mark", "marked_ts", "mark_source", "greeks", "current_value_usd", "unrealized_pnl"}


def new_portfolio(metas=METAS) -> Portfolio:
    p = Portfolio(metas, fee_rate=0.001, slippage_rate=0.0005)
    p.reconcile(T0)
    return p


class Run:
    """The portfolio service's order of work without its sockets: decide, journal, commit."""

    def __init__(self, journal: Journal, metas=METAS) -> None:
        self.p = new_portfolio(metas)
        self.journal = journal

    def book(self, records) -> None:
        self.journal.append([r.to_dict() for r in records])
        self.p.commit(records)

    def spot(self, sid: str, signal: int, price: float, ts: int) -> str:
        self.p.record_tick("BTC/USDT", price, ts)  # the tick of the order's bar, which fills it
        decision = self.p.decide_spot(SpotOrder(f"{sid}:{ts}", sid, "BTC/USDT", signal, price, ts))
        if decision.fill is not None:
            self.book([decision.fill])
        else:
            self.p.record_no_fill(sid, f"{sid}:{ts}")
        return decision.status

    def option(self, sid: str, legs: tuple[OptionLeg, ...], ts: int, label: str) -> None:
        decision = self.p.decide_options(OptionOrder(f"{sid}:{ts}:{label}", sid, ts, 90_000.0, legs))
        assert decision.status == "filled", decision.reason
        self.book(list(decision.fills))

    def mark(self, btc: float, ts: int) -> list[str]:
        events, fills = self.p.mark({"BTC/USDT": btc}, ts)
        self.book(fills)
        self.book(self.p.risk_records(self.p.journal_seq + 1))
        return events


def run_every_kind_of_fill(journal: Journal) -> Run:
    """Spot round trips into a circuit breaker and a kill-switch liquidation, a wheel put
    assigned at expiry, an option bought and partly closed, a daily-loss trip and its clearing."""
    run = Run(journal)
    run.mark(90_000.0, T0)
    assert run.spot("mom", 1, 90_000.0, T0 + HOUR) == "filled"
    assert run.spot("mom", -1, 89_000.0, T0 + 2 * HOUR) == "filled"  # loss 1
    assert run.spot("mom", 1, 89_000.0, T0 + 3 * HOUR) == "filled"
    assert run.spot("mom", -1, 88_500.0, T0 + 4 * HOUR) == "filled"  # loss 2: circuit breaker
    assert run.spot("mom", 1, 88_500.0, T0 + 5 * HOUR) == "rejected"  # paused by the breaker
    run.option("wheel", (OptionLeg(PUT, -1, 0.1, 2_000.0, {"delta": -0.3}, 0.7, "wheel", "open"),), T0 + HOUR, "put")
    run.option("vol", (OptionLeg(CALL, 1, 0.3, 1_500.0, {"delta": 0.4}, 0.8, "cheap vol", "open"),), T0 + HOUR, "c")
    run.option("vol", (OptionLeg(CALL, -1, 0.1, 1_800.0, {"delta": 0.45}, 0.8, "take profit", "close"),),
               T0 + 2 * HOUR, "close")
    run.p.mark_options({CALL.name: {"mark_usd": 1_700.0, "delta": 0.42, "source": "sim"}}, T0 + 2 * HOUR)
    assert run.spot("mom", 1, 88_000.0, T0 + DAY + 5 * HOUR) == "filled"  # the breaker has expired
    run.mark(88_000.0, T0 + DAY + 5 * HOUR)  # the day's first mark: its start value
    assert any("daily_loss" in e for e in run.mark(74_000.0, T0 + DAY + 6 * HOUR))  # -15.9% today
    assert any("daily_loss: cleared" in e for e in run.mark(84_000.0, T0 + 2 * DAY + HOUR))
    assert any("kill_switch" in e for e in run.mark(60_000.0, T0 + 2 * DAY + 2 * HOUR))  # -> liquidated
    run.mark(80_000.0, EXPIRY + 60_000)  # the wheel's put expires in the money: assigned
    book = run.p.books["mom"]
    assert book.risk.kill_switch and book.positions == {} and book.trade_count == 6
    assert "BTC/USDT" in run.p.books["wheel"].positions and run.p.books["wheel"].option_positions == {}
    assert list(run.p.books["vol"].option_positions) == [CALL.name]
    return run


def rebuild(path) -> Portfolio:
    rebuilt = new_portfolio()
    with Journal(path) as journal:
        rebuilt.replay(journal.read())
    return rebuilt


def _unmarked(positions: dict) -> dict:
    """Option positions without what the last mark wrote into them."""
    return {n: {k: v for k, v in p.to_dict().items() if k not in MARK_FIELDS} for n, p in positions.items()}


def _realized(book) -> float:
    return sum(t["realized_pnl"] for t in book.recent_trades)


def assert_same_books(rebuilt: Portfolio, run: Portfolio) -> None:
    """Field by field: everything fills and risk records decide is identical."""
    assert rebuilt.journal_seq == run.journal_seq
    assert set(rebuilt.books) == set(run.books)
    for sid, book in run.books.items():
        mine = rebuilt.books[sid]
        for field in ("kind", "initial_capital", "cash", "positions", "trade_count", "recent_trades", "last_ts"):
            assert getattr(mine, field) == getattr(book, field), (sid, field)
        assert {k: v for k, v in mine.recent_order_ids.items() if v} == \
            {k: v for k, v in book.recent_order_ids.items() if v}, sid  # orders answered without a fill: not journaled
        assert _unmarked(mine.option_positions) == _unmarked(book.option_positions), sid
        for field in ("kill_switch", "kill_reason", "consecutive_losses", "circuit_breaker_until",
                      "daily_loss_tripped"):
            assert getattr(mine.risk, field) == getattr(book.risk, field), (sid, field)
        assert _realized(mine) == _realized(book)


def test_the_journal_alone_rebuilds_every_book_of_the_run(tmp_path):
    with Journal(tmp_path / "journal.jsonl") as journal:
        run = run_every_kind_of_fill(journal)
    records = Journal(tmp_path / "journal.jsonl").read()
    kinds = [r.get("type") or r["kind"] for r in records]
    assert {"spot", "option", "settlement", "liquidation", "risk"} <= set(kinds)
    rebuilt = rebuild(tmp_path / "journal.jsonl")
    assert_same_books(rebuilt, run.p)
    assert rebuilt.books["mom"].risk == run.p.books["mom"].risk  # its last change was a risk record: all of it
    assert rebuilt.books["mom"].risk.kill_switch and rebuilt.decide_spot(
        SpotOrder("mom:x", "mom", "BTC/USDT", 1, 60_000.0, EXPIRY + HOUR)).status == "rejected"


def test_a_rebuild_from_any_saved_state_plus_the_journal_tail_equals_the_run(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        run = run_every_kind_of_fill(journal)
        records = journal.read()
    for cut in range(0, len(records) + 1, 3):  # a state saved after `cut` records, then the tail
        partial = new_portfolio()
        partial.replay(records[:cut])
        restarted = new_portfolio()
        restarted.load_state(copy.deepcopy(partial.to_state()))
        restarted.replay(records)  # records it has seen are skipped by seq
        assert_same_books(restarted, run.p)


def test_risk_records_round_trip_and_journal_lines_parse_to_their_record():
    p = new_portfolio()
    p.books["mom"].risk.kill_switch = True
    record = RiskRecord(7, "mom", T0, p.books["mom"].risk)
    assert journal_record(record.to_dict(), "line 7") == record
    assert record.to_dict()["type"] == "risk"
    assert journal_fills([record.to_dict()]) == []
    with pytest.raises(RecordError, match=r"line 7\.risk\.kill_switch: expected true or false"):
        journal_record({**record.to_dict(), "risk": {**record.to_dict()["risk"], "kill_switch": 1}}, "line 7")


def test_a_mark_that_trips_nothing_journals_no_risk_record():
    p = new_portfolio()
    p.mark({"BTC/USDT": 90_000.0}, T0)
    p.mark({"BTC/USDT": 91_000.0}, T0 + DAY)  # a new peak, a new day: followed by the marks
    assert p.risk_records(1) == []


def test_a_risk_record_is_offered_until_it_is_committed():
    p = new_portfolio()
    p.books["mom"].cash = 700.0
    events, _ = p.mark({"BTC/USDT": 90_000.0}, T0 + HOUR)
    assert any("kill_switch" in e for e in events)
    first = p.risk_records(1)
    assert [r.strategy_id for r in first] == ["mom"] and p.risk_records(1) == first  # journaling failed: again
    p.commit(first)
    assert p.risk_records(2) == [] and p.journal_seq == 1


# --- nothing is dropped ------------------------------------------------------------------------
def test_a_fill_of_a_strategy_with_no_book_is_refused_naming_its_seq(tmp_path):
    with Journal(tmp_path / "journal.jsonl") as journal:
        run = Run(journal)
        run.spot("mom", 1, 90_000.0, T0)
        records = journal.read()
    only_vol = new_portfolio([m for m in METAS if m.strategy_id != "mom"])
    with pytest.raises(RecordError, match=r"seq 1: a record of strategy 'mom', which has no book .* Add it back"):
        only_vol.replay(records)
    assert only_vol.journal_seq == 0
    with pytest.raises(RecordError, match="no book for strategy 'mom'"):
        only_vol.commit(journal_fills(records))


def test_a_book_whose_strategy_left_the_config_is_kept_with_its_money():
    p = new_portfolio()
    p.books["mom"].cash = 1_234.5
    state = p.to_state()
    later = Portfolio(METAS[1:], fee_rate=0.001, slippage_rate=0.0)
    later.load_state(state)
    rec = later.reconcile(T0)
    assert rec.retired == ("mom",) and rec.created == () and rec.kept == ("vol", "wheel")
    assert later.books["mom"].cash == 1_234.5 and later.to_state()["strategies"]["mom"]["cash"] == 1_234.5
    later.mark({"BTC/USDT": 1.0}, T0 + HOUR)  # not marked for risk: no meta
    assert later.risk_records(1) == [] and not later.books["mom"].risk.kill_switch
    with pytest.raises(KeyError):
        later.decide_spot(SpotOrder("mom:1", "mom", "BTC/USDT", 1, 1.0, T0 + HOUR))  # never traded
    back = new_portfolio()
    back.load_state(later.to_state())
    assert back.reconcile(T0).created == () and back.books["mom"].cash == 1_234.5


# --- journal and state agree -------------------------------------------------------------------
def _state_after(records, n):
    p = new_portfolio()
    p.replay(records[:n])
    return p


def test_a_journal_that_matches_the_state_is_accepted(tmp_path):
    with Journal(tmp_path / "journal.jsonl") as journal:
        run_every_kind_of_fill(journal)
        records = journal.read()
    for n in (0, 5, len(records)):
        p = _state_after(records, n)
        seen = p.last_seen_fill()
        tail = records[seen["seq"] - 1:] if seen else records[n:]
        assert p.journal_disagreement(len(records), tail) is None


def test_a_shortened_or_missing_journal_is_named_with_the_seqs_it_would_reuse(tmp_path):
    with Journal(tmp_path / "journal.jsonl") as journal:
        run = run_every_kind_of_fill(journal)
    n = run.p.journal_seq
    problem = run.p.journal_disagreement(n - 3, [])
    assert f"state.json has seen the journal up to seq {n} but the journal ends at seq {n - 3}" in problem
    assert f"reuse seqs {n - 2}..{n}" in problem and "Restore the journal" in problem
    assert "is empty or missing" in run.p.journal_disagreement(0, [])


def test_a_journal_of_another_run_is_refused_at_the_last_fill_the_state_saw(tmp_path):
    with Journal(tmp_path / "a.jsonl") as journal:
        run = Run(journal)
        run.spot("mom", 1, 90_000.0, T0)
        run.spot("mom", -1, 91_000.0, T0 + HOUR)
    with Journal(tmp_path / "b.jsonl") as other:
        run_b = Run(other)
        run_b.spot("mom", 1, 90_000.0, T0)
        run_b.spot("mom", -1, 92_000.0, T0 + HOUR)  # same seqs and order ids, other prices
        tail = other.read(after_seq=1)
    problem = run.p.journal_disagreement(2, tail)
    assert problem.startswith("line 2: the journal's seq 2 is not the fill state.json last saw there")
    assert "'mom:1767229200000'" in problem and "move state.json away" in problem
    assert run.p.journal_disagreement(2, []) is not None  # that fill is not in the journal at all


# --- state validation ------------------------------------------------------------------------
def _state_with(mutate) -> dict:
    p = new_portfolio()
    p.commit(p.decide_options(OptionOrder("vol:1:c", "vol", T0, 90_000.0, (
        OptionLeg(CALL, 1, 0.3, 1_500.0, {"delta": 0.4}, 0.8, "cheap vol", "open"),))).fills)
    p.mark({"BTC/USDT": 90_000.0}, T0)
    state = copy.deepcopy(p.to_state())
    mutate(state)
    return state


V = "state.strategies.vol.option_positions." + CALL.name


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s["strategies"]["mom"].update(cash=1.5e308), "state.strategies.mom.cash: 1.5e+308 is out of range"),
    (lambda s: s["strategies"]["mom"].update(cash=float("nan")), "state.strategies.mom.cash: must be a finite number"),
    (lambda s: s["strategies"]["mom"].update(initial_capital=-5), "initial_capital: must be > 0"),
    (lambda s: s["strategies"]["mom"].update(strategy_id="rsi"), "state.strategies.mom.strategy_id: 'rsi' does not"),
    (lambda s: s["strategies"]["mom"]["positions"].update(
        {"BTC/USDT": {"symbol": "BTC/USDT", "quantity": -1.0, "avg_price": 9.0, "opened_ts": 0}}),
     "state.strategies.mom.positions.BTC/USDT.quantity: must be > 0"),
    (lambda s: s["strategies"]["mom"]["positions"].update(
        {"BTC/USDT": {"symbol": "BTC/USDT", "quantity": 1e9, "avg_price": 1e9, "opened_ts": 0}}),
     "quantity x avg_price = 1e+18 USD is out of range"),
    (lambda s: s["strategies"]["mom"]["risk"].update(peak_value=1e300), "mom.risk.peak_value: 1e+300 is out of range"),
    (lambda s: s["strategies"]["vol"]["option_positions"].update(junk=5), "option_positions.junk: expected an object"),
    (lambda s: s["strategies"]["vol"]["option_positions"].update(junk={"quantity": 1}),
     "option_positions.junk.contract"),
    (lambda s: s["strategies"]["vol"]["option_positions"][CALL.name].update(current_mark=float("nan")),
     f"{V}.current_mark: must be a finite number"),
    (lambda s: s["strategies"]["vol"]["option_positions"][CALL.name].update(current_mark=-1.0),
     f"{V}.current_mark: must be >= 0"),
    (lambda s: s["strategies"]["vol"]["option_positions"][CALL.name].update(quantity=0),
     f"{V}.quantity: must not be 0"),
    (lambda s: s["strategies"]["vol"]["option_positions"][CALL.name].update(quantity=1e12),
     f"{V}.quantity: 1000000000000.0 contracts"),
    (lambda s: s["strategies"]["vol"]["option_positions"][CALL.name].update(multiplier=1000.0),
     f"{V}.multiplier: 1000.0 disagrees with the contract"),
    (lambda s: s["strategies"]["vol"]["option_positions"][CALL.name]["contract"].update(strike=1.0),
     f"{V}.contract: describes 'BTC-"),
    (lambda s: s["strategies"]["vol"]["option_positions"][CALL.name].update(greeks={"delta": "x"}),
     f"{V}.greeks.delta: expected a number"),
    (lambda s: s["strategies"]["vol"]["option_positions"][CALL.name].update(mark_source=[1]),
     f"{V}.mark_source: expected a string"),
    (lambda s: s.update(prices={"BTC/USDT": 0}), "state.prices.BTC/USDT: expected a price in (0, 1e+12]"),
    (lambda s: s.update(prices=[1]), "state.prices: expected an object"),
    (lambda s: s.update(market_ts=-1), "state.market_ts: must be >= 0"),
    (lambda s: s.update(journal_seq="3"), "state.journal_seq: expected an integer"),
])
def test_state_junk_is_refused_naming_its_key_path(mutate, message):
    state = _state_with(mutate)
    p = new_portfolio()
    before = copy.deepcopy(p.to_state())
    with pytest.raises(RecordError) as info:
        p.load_state(state)
    assert message in str(info.value)
    assert p.to_state() == before  # all or nothing


def test_a_good_state_loads_back_to_the_same_books_and_option_values():
    state = _state_with(lambda s: None)
    p = new_portfolio()
    p.load_state(copy.deepcopy(state))
    assert p.to_state() == state
    assert parse_state(state).books["vol"].option_positions[CALL.name].value_usd == pytest.approx(450.0)


def test_a_book_that_could_not_be_loaded_back_is_never_handed_to_a_save():
    p = new_portfolio()
    p.books["mom"].cash = 1e300
    with pytest.raises(RecordError, match=r"state\.strategies\.mom\.cash: 1e\+300 is out of range"):
        p.to_state()
    p.books["mom"].cash = 1_000.0
    assert book_to_dict(p.books["mom"])["cash"] == 1_000.0 and p.to_state()["strategies"]["mom"]["cash"] == 1_000.0


_json = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8)
_GOOD = _state_with(lambda s: None)
_POSITION = _GOOD["strategies"]["vol"]["option_positions"][CALL.name]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(_POSITION) + ["contract.strike", "contract.expiry_ts", "contract.is_call"]), _json)
def test_any_value_in_any_option_position_field_loads_or_is_refused_by_key_path(key, value):
    state = copy.deepcopy(_GOOD)
    position = state["strategies"]["vol"]["option_positions"][CALL.name]
    if key.startswith("contract."):
        position["contract"][key.split(".")[1]] = value
    else:
        position[key] = value
    p = new_portfolio()
    try:
        p.load_state(state)
    except RecordError as exc:
        assert "state.strategies.vol.option_positions" in str(exc)
    else:  # what loads saves, and loads back the same
        again = new_portfolio()
        again.load_state(copy.deepcopy(p.to_state()))
        assert again.to_state() == p.to_state()
