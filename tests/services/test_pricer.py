"""The pricer's handlers, without sockets: chains, marks, IV history, and clear errors."""
import json
import math
from pathlib import Path

import msgpack
import numpy as np
import pytest

from common.bus import Envelope, RequestError
from common.timeframes import DAY_MS
from config.settings import load_config, parse_config
from options.black_scholes import bs_price
from options.chain import ChainReplyError, chain_from_dict
from options.marks import SimIvPath, SimSurface
from options.venues import DERIBIT, IBKR_CME
from options.vol_surface import iv_rank, simulate_atm_iv, smile_iv
from services.pricer import PricerService

REPO = Path(__file__).resolve().parents[2]
CFG = load_config(REPO / "config" / "default.json")
TS = CFG.feed.start_ms + 5 * DAY_MS


def tick(symbol: str, price: float, ts: int = TS) -> Envelope:
    return Envelope(1, "tick", "x", ts, "marketdata", 1, {"symbol": symbol, "price": price, "ts": ts})


@pytest.fixture
def pricer() -> PricerService:
    svc = PricerService(CFG, None)
    svc.on_message("tick.BTC/USDT", tick("BTC/USDT", 90_000.0))
    svc.on_message("tick.ETH/USDT", tick("ETH/USDT", 3_000.0))
    return svc


def test_chain_lists_venue_expiries_and_strikes_at_the_sim_vol(pricer):
    reply = msgpack.unpackb(msgpack.packb(pricer.on_chain({"underlying": "BTC", "venue": "ibkr", "horizon_days": 40})))
    chain = chain_from_dict(reply)
    assert set(chain.expiry_ts.tolist()) == set(IBKR_CME.listed_expiries(TS, 40))
    assert chain.strike.min() == 45_000.0 and chain.strike.max() == 135_000.0 and len(chain) == reply["size"]
    atm = pricer.source.atm_iv("BTC", TS)
    i = int(np.flatnonzero(chain.strike == 90_000.0)[0])
    assert chain.iv[i] == pytest.approx(atm)  # at the forward (r = 0) the smile is the ATM vol
    assert chain.multiplier == 0.1 and chain.is_call.dtype == np.bool_ and chain.expiry_ts.dtype == np.int64
    assert reply["source"] == "sim" and reply["spot"] == 90_000.0
    assert len(reply["columns"]["strike"]) == 8 * len(chain)  # raw float64, not a list of numbers


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.update(size=-1), r"chain reply.size: expected a row count >= 0, got -1"),
    (lambda r: r.update(size=True), r"chain reply.size: expected a row count >= 0, got True"),
    (lambda r: r.pop("columns"), r"chain reply.columns: expected an object, got NoneType"),
    (lambda r: r["columns"].pop("iv"), r"chain reply.columns.iv: expected \d+ x 8 bytes, got NoneType"),
    (lambda r: r["columns"].update(mark=r["columns"]["mark"][:-3]),
     r"chain reply.columns.mark: expected \d+ x 8 bytes, got \d+ bytes"),
    (lambda r: r["columns"].update(strike=[1.0, 2.0]), r"chain reply.columns.strike: expected \d+ x 8 bytes, got list"),
    (lambda r: r.update(venue="ftx"), r"chain reply: unknown venue 'ftx'"),
    (lambda r: r.pop("venue"), r"chain reply.venue: expected a name, got None"),
    (lambda r: r.update(underlying=7), r"chain reply.underlying: expected a name, got 7"),
    (lambda r: r.pop("spot"), r"chain reply: 'spot'"),
])
def test_a_chain_reply_that_is_not_a_chain_is_refused_naming_the_field(pricer, mutate, message):
    reply = pricer.on_chain({"underlying": "ETH", "venue": "deribit", "horizon_days": 10})
    reply["columns"] = dict(reply["columns"])
    mutate(reply)
    with pytest.raises(ChainReplyError, match=message):
        chain_from_dict(reply)
    with pytest.raises(ChainReplyError, match=r"chain reply: expected an object, got list"):
        chain_from_dict([reply])


def test_mark_prices_deribit_and_cme_on_one_surface_and_expired_at_intrinsic(pricer):
    expiry = DERIBIT.listed_expiries(TS, 30)[-1]
    contract = {"venue": "deribit", "underlying": "BTC", "expiry_ts": expiry, "strike": 80_000.0,
                "is_call": False, "multiplier": 1.0}
    cme = dict(contract, venue="ibkr", multiplier=0.1)
    expired = dict(contract, expiry_ts=TS - DAY_MS, strike=100_000.0)
    reply = pricer.on_mark({"positions": [{"contract": contract}, cme, expired]})
    marks = reply["marks"]
    T = (expiry - TS) / DAY_MS / 365.0
    iv = float(smile_iv(pricer.source.atm_iv("BTC", TS), 80_000.0, 90_000.0))
    expected = float(bs_price(90_000.0, 80_000.0, T, 0.0, iv, False))
    deribit_name = [n for n in marks if n.startswith("BTC-") and n.endswith("80000-P")][0]
    cme_name = [n for n in marks if n.startswith("MBT-")][0]
    assert marks[deribit_name]["mark_usd"] == pytest.approx(expected, rel=1e-12)
    assert marks[cme_name]["mark_usd"] == marks[deribit_name]["mark_usd"]  # per coin: Deribit is the proxy
    assert (marks[deribit_name]["source"], marks[cme_name]["source"]) == ("sim", "sim:deribit-proxy")
    expired_name = [n for n in marks if n.endswith("100000-P")][0]
    assert marks[expired_name] | {} == {"mark_usd": 10_000.0, "iv": 0.0, "delta": -1.0, "gamma": 0.0, "theta": 0.0,
                                        "vega": 0.0, "source": "intrinsic"}
    assert marks[deribit_name]["delta"] < 0 and marks[deribit_name]["vega"] > 0
    assert pricer.on_price({"contracts": [deribit_name]})["marks"][deribit_name] == marks[deribit_name]


def test_each_venue_is_priced_at_its_own_risk_free_rate(tmp_path):
    raw = json.loads((REPO / "config" / "default.json").read_text())
    raw["options"] = {"risk_free_rate": 0.0, "venues": {"ibkr": {"risk_free_rate": 0.05}}}
    svc = PricerService(parse_config(raw, base_dir=tmp_path), None)
    svc.on_message("tick.BTC/USDT", tick("BTC/USDT", 90_000.0))
    expiry = IBKR_CME.listed_expiries(TS, 40)[-1]
    put = {"venue": "ibkr", "underlying": "BTC", "expiry_ts": expiry, "strike": 80_000.0, "is_call": False,
           "multiplier": 0.1}
    marks = svc.on_mark({"positions": [put, dict(put, venue="deribit", multiplier=1.0)]})["marks"]
    [cme] = [m for n, m in marks.items() if n.startswith("MBT-")]
    [deribit] = [m for n, m in marks.items() if n.startswith("BTC-")]
    S, K, r, T = 90_000.0, 80_000.0, 0.05, (expiry - TS) / DAY_MS / 365.0
    sigma = float(smile_iv(svc.source.atm_iv("BTC", TS), K, S * math.exp(r * T)))
    d1 = (math.log(S / K) + (r + sigma ** 2 / 2) * T) / (sigma * math.sqrt(T))
    d2 = d1 - sigma * math.sqrt(T)
    def cdf(x: float) -> float:
        return (1 + math.erf(x / math.sqrt(2))) / 2

    assert cme["mark_usd"] == pytest.approx(K * math.exp(-r * T) * cdf(-d2) - S * cdf(-d1), rel=1e-9)
    assert cme["iv"] == pytest.approx(sigma, rel=1e-12)
    sigma0 = float(smile_iv(svc.source.atm_iv("BTC", TS), K, S))
    assert deribit["mark_usd"] == pytest.approx(float(bs_price(S, K, T, 0.0, sigma0, False)), rel=1e-12)
    assert cme["mark_usd"] < deribit["mark_usd"]  # a put is worth less at a higher rate
    chain = chain_from_dict(svc.on_chain({"underlying": "BTC", "venue": "ibkr", "horizon_days": 40}))
    i = int(np.flatnonzero((chain.strike == K) & (chain.expiry_ts == expiry) & ~chain.is_call)[0])
    assert chain.mark[i] == pytest.approx(cme["mark_usd"], rel=1e-12)


def test_iv_history_is_the_seeded_path_sampled_daily(pricer):
    reply = pricer.on_iv({"underlying": "ETH", "days": 10})
    surface: SimSurface = pricer.source
    path = SimIvPath(CFG.feed.seed + sum(map(ord, "ETH")), 0.70, surface.origin_ts)
    assert reply["atm_iv"] == path.at(TS)
    assert reply["history"] == [path.at(TS - k * DAY_MS) for k in range(10, 0, -1)]
    assert reply["iv_rank"] == iv_rank(reply["history"], reply["atm_iv"])


def test_sim_vol_path_matches_the_reference_process_on_its_grid():
    origin = 1_700_000_000_000
    path = SimIvPath(3, 0.5, origin)
    grid = origin + np.arange(100, dtype=np.int64) * 3_600_000
    reference = simulate_atm_iv(3, grid, 0.5)
    assert path.at(origin + 99 * 3_600_000 + 59_000) == reference[99]  # steps between grid points
    assert path.at(origin - 5) == reference[0] == 0.5
    assert np.array_equal(path.values(grid), reference)


def test_vol_path_visits_both_iv_rank_regimes_within_six_weeks_over_the_configured_window():
    surface = SimSurface(CFG.feed.seed, CFG.feed.start_ms - 120 * DAY_MS)
    days = CFG.options.iv_rank_days  # 365 by default: sim mode ranks over the live window
    for underlying in ("BTC", "ETH"):
        ranks = [iv_rank(surface.iv_history(underlying, t, days), surface.atm_iv(underlying, t))
                 for t in range(CFG.feed.start_ms, CFG.feed.start_ms + 42 * DAY_MS, 3_600_000)]
        assert max(ranks) > 75 and min(ranks) < 25, underlying


@pytest.mark.parametrize("handler, body, code, message", [
    ("on_chain", {"underlying": "SOL", "venue": "deribit"}, "bad_request", "unknown underlying 'SOL'"),
    ("on_chain", {"underlying": "BTC", "venue": "cboe"}, "bad_request", "unknown venue 'cboe'"),
    ("on_chain", {"underlying": "BTC", "horizon_days": 0}, "bad_request", "horizon_days"),
    ("on_mark", {"positions": [{"venue": "deribit"}]}, "bad_request", r"mark.positions\[0\].underlying: missing"),
    ("on_mark", {}, "bad_request", "mark.positions: expected a list"),
    ("on_price", {"contracts": ["BTC-1XYZ26-1-C"]}, "bad_request", "instrument name"),
    ("on_iv", {"underlying": "DOGE"}, "no_price", "no spot price for 'DOGE'"),
    ("on_iv", {"underlying": "BTC", "days": 0}, "bad_request", "days: expected an integer"),
    ("on_iv", {"underlying": "BTC", "target_days": "30"}, "bad_request", "target_days: expected a number"),
])
def test_bad_requests_get_named_errors(pricer, handler, body, code, message):
    with pytest.raises(RequestError, match=message) as err:
        getattr(pricer, handler)(body)
    assert err.value.code == code


def test_no_chain_before_the_first_tick():
    with pytest.raises(RequestError, match="no spot price") as err:
        PricerService(CFG, None).on_chain({"underlying": "BTC", "venue": "deribit"})
    assert err.value.code == "no_price"


def test_live_config_reads_everything_from_deribit_with_dvol_beside_the_state(tmp_path):
    import json

    from config.settings import load_config
    from services.feeds.deribit import LiveDeribitSource
    from services.pricer import build_mark_source

    live = json.loads((Path(__file__).resolve().parents[2] / "config" / "live.json").read_text())
    live["state_file"] = str(tmp_path / "run" / "state.json")
    path = tmp_path / "live.json"
    path.write_text(json.dumps(live))
    cfg = load_config(path)
    source = build_mark_source(cfg)  # building it makes no network call
    assert isinstance(source, LiveDeribitSource) and not hasattr(source, "model")  # no sim behind it
    assert source.dvol.path("BTC") == tmp_path / "run" / "dvol_btc.csv"
    assert source.dvol.window_days == cfg.options.iv_rank_days == 365
