from __future__ import annotations

import numpy as np
import pytest

from common.bars import BarAggregator
from common.market_sim import DEFAULT_SPECS, MarketSim, SymbolSpec, correlation_matrix

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
ORIGIN = 1_735_689_600_000  # 2025-01-01 00:00 UTC
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def sim(seed: int = 7, **kw) -> MarketSim:
    return MarketSim(SYMBOLS, seed=seed, origin_ts=ORIGIN, **kw)


def hourly(steps) -> dict:
    return {s: BarAggregator(s, ["1h"], MIN).add(b)["1h"] for s, b in steps.items()}


def same(a, b) -> bool:
    return all(np.array_equal(getattr(a, c), getattr(b, c)) for c in COLUMNS)


def test_same_seed_same_path_other_seed_other_path():
    a = sim(7).steps(ORIGIN, ORIGIN + 2 * DAY)
    b = sim(7).steps(ORIGIN, ORIGIN + 2 * DAY)
    c = sim(8).steps(ORIGIN, ORIGIN + 2 * DAY)
    for s in SYMBOLS:
        assert len(a[s]) == 2 * 1440
        assert same(a[s], b[s])
        assert not np.array_equal(a[s].close, c[s].close)


def test_path_does_not_depend_on_how_it_was_requested():
    whole = sim().steps(ORIGIN, ORIGIN + 3 * DAY)
    pieces = sim()
    cuts = [ORIGIN, ORIGIN + 1, ORIGIN + 7 * MIN + 5, ORIGIN + DAY - MIN, ORIGIN + DAY + 13 * MIN, ORIGIN + 3 * DAY]
    got = {s: [] for s in SYMBOLS}
    for a, b in zip(cuts, cuts[1:]):
        for s, bars in pieces.steps(a - (a - ORIGIN) % MIN, b).items():
            got[s].append(bars)
    for s in SYMBOLS:
        for c in COLUMNS:
            assert np.array_equal(np.concatenate([getattr(p, c) for p in got[s]]), getattr(whole[s], c)), (s, c)


def test_going_back_in_time_regenerates_the_same_days():
    m = sim()
    late = m.steps(ORIGIN + 4 * DAY, ORIGIN + 5 * DAY)
    early = m.steps(ORIGIN + DAY, ORIGIN + 2 * DAY)
    fresh = sim().steps(ORIGIN, ORIGIN + 5 * DAY)
    for s in SYMBOLS:
        assert np.array_equal(early[s].close, fresh[s].close[1440:2880])
        assert np.array_equal(late[s].close, fresh[s].close[4 * 1440:])


def test_step_bars_are_continuous_and_consistent():
    steps = sim().steps(ORIGIN, ORIGIN + 2 * DAY)
    for s, b in steps.items():
        b.validate(where=s)
        assert np.array_equal(b.open[1:], b.close[:-1])
        assert b.open[0] == pytest.approx(DEFAULT_SPECS[s].start_price, rel=1e-12)
        assert np.array_equal(b.ts, ORIGIN + np.arange(2 * 1440) * MIN)
        assert np.all(b.volume > 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_realized_vol_and_correlation_are_near_the_targets(seed):
    bars = hourly(sim(seed).steps(ORIGIN, ORIGIN + 60 * DAY))
    returns = {s: np.diff(np.log(b.close)) for s, b in bars.items()}
    for s, r in returns.items():
        annual = r.std(ddof=1) * np.sqrt(24 * 365)
        target = DEFAULT_SPECS[s].annual_vol
        assert 0.7 * target < annual < 1.3 * target, (s, annual)
    corr = np.corrcoef([returns[s] for s in SYMBOLS])
    for (i, j), target in {(0, 1): 0.80, (0, 2): 0.70, (1, 2): 0.75}.items():
        assert abs(corr[i, j] - target) < 0.15, (i, j, corr[i, j])


def test_price_levels_and_volumes_are_realistic_over_120_days():
    steps = sim(11).steps(ORIGIN, ORIGIN + 120 * DAY)
    bars = hourly(steps)
    for s, b in bars.items():
        start = DEFAULT_SPECS[s].start_price
        assert start / 3 < b.low.min() and b.high.max() < start * 3, s
    btc = bars["BTC/USDT"]
    assert 500 < np.median(btc.volume) < 1500
    # more volume in the hours that move more
    moves = np.abs(np.log(btc.close / btc.open))
    big = moves > np.quantile(moves, 0.9)
    small = moves < np.quantile(moves, 0.5)
    assert btc.volume[big].mean() > 1.2 * btc.volume[small].mean()


def sma(x: np.ndarray, n: int) -> np.ndarray:
    c = np.cumsum(np.r_[0.0, x])
    return (c[n:] - c[:-n]) / n


def test_momentum_crossovers_happen_within_hours_and_trends_and_ranges_both_occur():
    close = hourly(sim(5).steps(ORIGIN, ORIGIN + 10 * DAY))["BTC/USDT"].close
    fast, slow = sma(close, 5)[15:], sma(close, 20)
    crossings = np.flatnonzero(np.diff(np.sign(fast - slow)) != 0)
    assert len(crossings) >= 10  # at least one a day
    assert np.median(np.diff(crossings)) < 24
    # trend: some 12h windows move well beyond their noise; range: some stay tight
    moves = np.abs(np.log(close[12:] / close[:-12]))
    noise = DEFAULT_SPECS["BTC/USDT"].annual_vol * np.sqrt(12 / (24 * 365))
    assert moves.max() > 2.5 * noise
    assert np.quantile(moves, 0.2) < 0.5 * noise


def test_120_days_of_minutes_for_three_symbols_come_in_one_call():
    steps = sim(3).steps(ORIGIN, ORIGIN + 120 * DAY)
    assert {s: len(v) for s, v in steps.items()} == {s: 120 * 1440 for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")}


def test_custom_specs_and_step():
    specs = {"A": SymbolSpec(50.0, 0.3, 10.0), "B": SymbolSpec(5.0, 0.6, 100.0)}
    m = MarketSim(["A", "B"], seed=1, origin_ts=ORIGIN, specs=specs, correlations={("B", "A"): 0.5}, step_ms=5 * MIN)
    steps = m.steps(ORIGIN, ORIGIN + DAY)
    assert len(steps["A"]) == 288 and steps["B"].open[0] == pytest.approx(5.0)


def test_correlation_matrix_from_pairs():
    corr = correlation_matrix(["A", "B", "C"], {("A", "B"): 0.5, ("C", "A"): 0.2, ("B", "C"): -0.1})
    assert corr.tolist() == [[1.0, 0.5, 0.2], [0.5, 1.0, -0.1], [0.2, -0.1, 1.0]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"symbols": ["DOGE/USDT"]}, r"no simulation spec for symbol\(s\) \['DOGE/USDT'\]"),
        ({"symbols": []}, "symbols must be a non-empty list"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"origin_ts": ORIGIN + 1}, "origin_ts 1735689600001 is not a multiple of step_ms 60000"),
        ({"step_ms": 7 * MIN}, "step_ms must divide one hour"),
        ({"correlations": {("BTC/USDT", "ETH/USDT"): 0.8}},
         r"no correlation given for the pair \(BTC/USDT, SOL/USDT\)"),
        ({"correlations": {("BTC/USDT", "ETH/USDT"): 0.99, ("BTC/USDT", "SOL/USDT"): 0.99,
                           ("ETH/USDT", "SOL/USDT"): -0.99}}, "not a valid \\(positive definite\\) matrix"),
        ({"correlations": {("BTC/USDT", "ETH/USDT"): 1.0, ("BTC/USDT", "SOL/USDT"): 0.7,
                           ("ETH/USDT", "SOL/USDT"): 0.7}}, r"correlation \(BTC/USDT, ETH/USDT\) must be in \(-1, 1\)"),
        ({"specs": {**DEFAULT_SPECS, "SOL/USDT": SymbolSpec(140.0, 0.0, 1.0)}}, "spec for SOL/USDT needs"),
    ],
)
def test_bad_setup_is_named(kwargs, message):
    args = {"symbols": SYMBOLS, "seed": 1, "origin_ts": ORIGIN, **kwargs}
    symbols = args.pop("symbols")
    with pytest.raises(ValueError, match=message):
        MarketSim(symbols, **args)


def test_asking_before_the_origin_is_an_error():
    with pytest.raises(ValueError, match="from_ts 1735689540000 is before the simulation origin 1735689600000"):
        sim().steps(ORIGIN - MIN, ORIGIN + HOUR)


def test_sim_market_keeps_known_symbols_and_derives_others_from_their_name():
    from common.market_sim import DEFAULT_SPECS, sim_market

    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"] + [f"S{i:03d}/USDT" for i in range(40)]
    specs, corr = sim_market(symbols)
    assert specs["BTC/USDT"] == DEFAULT_SPECS["BTC/USDT"] and corr[("BTC/USDT", "ETH/USDT")] == 0.80
    assert corr[("BTC/USDT", "S000/USDT")] == corr[("S000/USDT", "S039/USDT")] == 0.5
    assert specs == sim_market(symbols)[0]  # the same names make the same market
    assert all(1.0 <= specs[s].start_price <= 10_000.0 and 0.5 <= specs[s].annual_vol <= 1.1 for s in symbols[3:])
    m = MarketSim(symbols, seed=3, origin_ts=ORIGIN, specs=specs, correlations=corr)  # positive definite
    assert len(m.steps(ORIGIN, ORIGIN + 60 * MIN)["S007/USDT"]) == 60
