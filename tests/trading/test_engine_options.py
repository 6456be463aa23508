"""evaluate_options: decide -> score -> risk -> one order per structure, never on stale data."""
from types import SimpleNamespace

import numpy as np
import pytest

from common.ohlcv import OHLCV
from common.timeframes import DAY_MS
from config.settings import parse_config
from options.chain import build_chain
from options.params import OPTIONS_PARAMS
from options.risk import OptionsRiskLimits
from options.strategies import strategy_params
from options.venues import DERIBIT, IBKR_CME
from trading.book_view import BookView
from trading.engine import evaluate_options, options_params, options_strategy, reason_kind
from trading.option_inputs import IvReading, OptionsMarket
from trading.portfolio import Portfolio, StrategyMeta, strategy_metas
from trading.risk import RiskLimits

TS = 1_767_225_600_000 + 12 * 3_600_000  # 2026-01-01 12:00 UTC
SPOT = 90_000.0


def daily(n=30, last_close=SPOT) -> OHLCV:
    ts = TS - TS % DAY_MS - np.arange(n, 0, -1, dtype=np.int64) * DAY_MS
    close = np.full(n, last_close)
    return OHLCV.from_rows([[int(t), c, c, c, c, 1.0] for t, c in zip(ts, close)])


def book(capital=50_000.0, positions=(), value=None, peak=None):
    return BookView("s", TS, capital, capital, value or capital, peak or capital, tuple(positions))


def evaluate(strategy, venue, params, closes, chain, atm_iv, iv_history, b):
    s = options_strategy("s", strategy, venue.name, "BTC", "1d", params, min_score=0.3, limits=OptionsRiskLimits())
    market = OptionsMarket({("BTC", venue.name): chain}, {"BTC": IvReading(atm_iv, np.array(iv_history))})
    return evaluate_options(s, market, b, closes, TS)


def run(strategy, venue=DERIBIT, iv_history=(0.4, 0.6), atm_iv=0.5, chain_ts=TS, b=None, params=None):
    chain = build_chain(venue, "BTC", SPOT, chain_ts, atm_iv, horizon_days=100)
    return evaluate(strategy, venue, params or {}, daily(), chain, atm_iv, iv_history, b or book())


def test_wheel_sells_one_scored_put_as_one_order():
    decision = run("wheel")
    [action] = decision.actions
    [order] = decision.orders
    assert action["action"] == "open" and action["side"] == -1 and action["contract"].endswith("-P")
    assert action["score"] >= 0.3 and action["score_parts"]["strike_distance"] == 0.4
    assert order.order_id == f"s:{TS}:open-{action['contract']}" and len(order.legs) == 1
    assert order.legs[0].score == action["score"]


def test_straddle_is_risk_checked_as_a_whole_structure():
    # IV rank 0 (current below the history): buy a straddle; its call leg alone would breach the
    # delta limit at this size, the structure does not.
    decision = run("vol_mean_reversion", iv_history=(0.6, 0.9), atm_iv=0.5, params={"alloc_fraction": 0.25})
    assert [a["contract"][-1] for a in decision.actions] == ["C", "P"] and decision.refused == []
    [order] = decision.orders
    assert order.order_id == f"s:{TS}:open-straddle" and len(order.legs) == 2


def test_cme_orders_carry_the_micro_multiplier():
    [action] = run("wheel", venue=IBKR_CME).actions
    assert action["multiplier"] == 0.1 and action["contract"].startswith("MBT-")
    assert action["premium_usd_per_contract"] == pytest.approx(action["premium_usd"] * 0.1)


def test_stale_chain_or_bars_are_never_traded():
    assert run("wheel", chain_ts=TS - DAY_MS).skipped.startswith("stale chain")
    old = evaluate("wheel", DERIBIT, {}, OHLCV.empty(), build_chain(DERIBIT, "BTC", SPOT, TS, 0.5), 0.5, [0.5],
                   book())
    assert old.skipped == "no BTC 1d bars yet" and old.orders == []


def test_drawdown_blocks_openings():
    b = book(value=39_000.0, peak=50_000.0)
    decision = run("wheel", b=b)
    assert decision.orders == [] and "drawdown 22.0%" in decision.refused[0]


def test_theta_harvest_becomes_exit_params_but_the_wheel_holds_to_expiry():
    th = SimpleNamespace(enabled=True, profit_target_pct=50, stop_loss_pct=150, min_dte_close=2)
    assert options_params("covered_calls", {}, th) == {"take_profit_pct": 50, "stop_loss_pct": 150, "close_dte": 2}
    assert options_params("wheel", {"take_profit_pct": 1000}, th) == {"take_profit_pct": 1000, "stop_loss_pct": 150}
    assert options_params("wheel", {}, SimpleNamespace(enabled=False)) == {}


def rising_daily(pct=8.0):
    bars = daily()
    close = bars.close.copy()
    close[:-1] = SPOT / (1 + pct / 100)
    return OHLCV(bars.ts, close, close, close, close, bars.volume)


def test_momentum_at_the_default_capital_is_sized_inside_the_delta_limit_not_refused():
    chain = build_chain(DERIBIT, "BTC", SPOT, TS, 0.5, horizon_days=100)
    decision = evaluate("momentum_options", DERIBIT, {"alloc_fraction": 0.1}, rising_daily(), chain, 0.5, [0.4, 0.6],
                        book())
    [action] = decision.actions
    assert decision.refused == [] and action["contract"].endswith("-C")
    assert action["quantity"] * action["greeks"]["delta"] * SPOT / 50_000.0 <= 1.0  # net delta x value <= limit 1
    assert decision.summary()["decision"] == "trade"


def test_a_strategy_that_does_nothing_says_why():
    decision = run("wheel", atm_iv=0.2)
    assert decision.orders == [] and decision.reasons[0].startswith("no signal: put premium")
    assert decision.summary() == {"decision": "no trade", "reason": "; ".join(decision.reasons)}
    small = run("wheel", b=book(capital=1_000.0))
    assert small.summary()["reason"].startswith("venue minimum: 0.1 contract(s) (0.1 BTC) of BTC-")
    assert reason_kind(small.reasons[0]) == "venue minimum"
    assert run("wheel", chain_ts=TS - DAY_MS).summary()["decision"] == "skipped"


def test_a_married_put_books_its_coins_in_the_strategys_spot_leg():
    portfolio = Portfolio([StrategyMeta("s", "options", "deribit", 50_000.0, RiskLimits(max_drawdown_pct=20.0),
                                        "protective_puts")], fee_rate=0.001, slippage_rate=0.0)
    portfolio.reconcile(TS)
    portfolio.mark({"BTC/USDT": SPOT}, TS)
    decision = run("protective_puts", b=portfolio.positions_view("s", "BTC/USDT"))
    [order] = decision.orders
    assert order.spot_quantity > 0 and order.spot_quantity == pytest.approx(order.legs[0].quantity)
    answer = portfolio.decide_options(order)
    assert answer.status == "filled"
    portfolio.commit(answer.fills)
    view = portfolio.positions_view("s", "BTC/USDT")
    assert view.spot_quantity == pytest.approx(order.spot_quantity)
    # Next decision: protected, so it holds; the coins it holds are the ones the put covers.
    again = run("protective_puts", b=portfolio.positions_view("s", "BTC/USDT"))
    assert again.orders == [] and again.reasons[0].startswith("holding: ")


def test_a_venue_with_a_lower_min_score_gets_its_orders_filled():
    # The engine selects at deribit's min_score 0.3; the portfolio must check that one, not the
    # global 0.95 (which would refuse every wheel put the engine sends).
    wheel = {"id": "w", "type": "options", "strategy": "wheel", "venue": "deribit", "underlying": "BTC",
             "capital": 50_000, "max_drawdown_pct": 20}
    cfg = parse_config({"strategies": [wheel],
                        "options": {"min_score": 0.95, "venues": {"deribit": {"min_score": 0.3}}}})
    venue = cfg.venue_options("deribit")
    [meta] = strategy_metas(cfg)
    assert (meta.min_option_score, meta.max_option_positions) == (venue.min_score, venue.max_positions) == (0.3, 4)
    portfolio = Portfolio([meta], fee_rate=0.001, slippage_rate=0.0)
    portfolio.reconcile(TS)
    portfolio.mark({"BTC/USDT": SPOT}, TS)
    chain = build_chain(DERIBIT, "BTC", SPOT, TS, 0.5, horizon_days=100)
    strategy = options_strategy("w", "wheel", "deribit", "BTC", "1d", {}, min_score=venue.min_score,
                                max_positions=venue.max_positions)
    market = OptionsMarket({("BTC", "deribit"): chain}, {"BTC": IvReading(0.5, np.array((0.4, 0.6)))})
    decision = evaluate_options(strategy, market, portfolio.positions_view("w", "BTC/USDT"), daily(), TS)
    [order] = decision.orders
    assert 0.3 <= order.legs[0].score < 0.95
    answer = portfolio.decide_options(order)
    assert answer.status == "filled", answer.reason
    assert cfg.venue_options("ibkr").min_score == 0.95
    with pytest.raises(ValueError, match='unknown options venue "cme"; the config has "deribit", "ibkr"'):
        cfg.venue_options("cme")


@pytest.mark.parametrize("name", sorted(OPTIONS_PARAMS))
def test_every_param_value_the_config_accepts_the_strategy_runs_with(name):
    """Config load (options.params) and the strategies (strategy_params) agree on each param at
    both ends of its range, theta-harvest exits merged in: a bad param is a ConfigError at load,
    never a ``strategy_failed`` every cycle."""
    for key, spec in OPTIONS_PARAMS[name].items():
        for bound in (spec.low, spec.high):
            params = {key: int(bound) if spec.integer else bound}
            if key in ("low_rank", "high_rank"):  # the rule low_rank < high_rank holds only with both ends
                params = {"low_rank": 0.0, "high_rank": 100.0}
            entry = {"id": "o", "type": "options", "strategy": name, "venue": "deribit", "underlying": "BTC",
                     "capital": 1000, "max_drawdown_pct": 20, "params": params, "theta_harvest": {"enabled": True}}
            sc = parse_config({"strategies": [entry]}).strategies[0]
            merged = strategy_params(name, options_params(name, sc.params, sc.theta_harvest))
            assert merged.items() >= params.items(), (name, key, bound)
