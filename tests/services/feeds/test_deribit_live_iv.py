"""Live implied vol from Deribit against the loopback replay server: DVOL history paged through
``continuation`` and cached beside the state, the ATM vol and chains from the real 2020-05-14
chain, greeks at Deribit's mark_iv, and what happens when Deribit's vol cannot be read (no
trade, marks kept and labelled stale, the pricer's ``deribit_iv`` problem, one log line).
DVOL: the real BTC index 2022-11-06 .. 2024-08-31 (shared/data), served in the documented
``{data: [[ts, open, high, low, close], ...], continuation}`` shape.
"""
from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest

from common.bus import RequestError
from common.timeframes import DAY_MS
from config.settings import load_config
from options.atm_iv import YEAR_MS, atm_iv_at
from options.black_scholes import bs_greeks
from options.contracts import parse_instrument_name
from options.iv_history import LiveIvUnavailable
from options.venues import DERIBIT, IBKR_CME
from options.vol_surface import iv_rank
from services.feeds.deribit import DvolHistory, LiveDeribitSource
from services.pricer import PricerService
from tests.support.replay_server import Fault

SNAPSHOT_TS = 1_589_434_896_486  # 2020-05-14 05:41:36 UTC, when the chain was recorded
INDEX_2020 = 9350.67
FIRST_DAY = 1_667_692_800_000  # 2022-11-06, the DVOL file's first day
LAST_DAY = 1_725_062_400_000  # 2024-08-31, its last
NOW = LAST_DAY + DAY_MS + 3_600_000  # 2024-09-01 01:00: every day of the file has closed
DVOL = "/api/v2/public/get_volatility_index_data"
DVOL_CSV = "deribit/btc_dvol_1d_2022-11-06_2024-08-31.csv"


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.records.append((event, fields))

    info = error = warning

    def events(self, name: str) -> list[dict]:
        return [f for e, f in self.records if e == name]


class Runtime:
    def __init__(self, log: Recorder) -> None:
        self.log = log
        self.problems: dict[str, str] = {}


def dvol_rows(shared_data) -> list[tuple[int, float]]:
    with (shared_data / DVOL_CSV).open() as f:
        return [(int(r["timestamp_ms"]), float(r["dvol_close"])) for r in csv.DictReader(f)]


def live_source(client, folder, log=None, window=365):
    return LiveDeribitSource(client, DvolHistory(client, folder, window, log), log)


# --- DVOL history ------------------------------------------------------------------------------

def test_dvol_is_read_page_by_page_through_continuation(deribit, shared_data):
    replay, server, client = deribit
    replay.dvol_page_size = 100  # 665 days: 7 pages, newest first
    rows = client.fetch_dvol("BTC", FIRST_DAY, NOW)
    expected = dvol_rows(shared_data)
    assert server.hits(DVOL) == 7
    assert rows[:, 0].astype(np.int64).tolist() == [t for t, _ in expected]
    assert rows[:, 4].tolist() == [c for _, c in expected]
    ends = [int(q["end_timestamp"]) for p, q in server.requests if p == DVOL]
    assert ends[0] == NOW and all(b < a for a, b in zip(ends, ends[1:]))  # each page's continuation


def test_iv_history_is_the_last_365_closed_days_fetched_once_and_cached_beside_the_state(deribit, shared_data,
                                                                                          tmp_path):
    replay, server, client = deribit
    replay.dvol_page_size = 200
    source = live_source(client, tmp_path)
    history = source.iv_history("BTC", NOW, 365)
    closes = [c / 100 for _, c in dvol_rows(shared_data)]
    assert history.tolist() == pytest.approx(closes[-365:])
    cached = (tmp_path / "dvol_btc.csv").read_text().splitlines()
    assert cached[0] == "timestamp_ms,dvol_close" and len(cached) == 1 + 366  # the window and the day before
    assert cached[-1] == f"{LAST_DAY},{dvol_rows(shared_data)[-1][1]:.10g}"
    hits = server.hits(DVOL)
    assert source.iv_history("BTC", NOW + 3_600_000, 30).tolist() == pytest.approx(closes[-30:])
    assert server.hits(DVOL) == hits  # current until the next day closes: no request
    restarted = live_source(client, tmp_path)  # a restart reads the cache, asks nothing
    assert restarted.iv_history("BTC", NOW, 365).tolist() == history.tolist() and server.hits(DVOL) == hits


def test_iv_rank_by_hand_from_the_real_dvol_matches_the_live_history_and_the_backtest(deribit, shared_data,
                                                                                     tmp_path):
    from backtest.options import OptionsBacktest, atm_vol_input
    from common.csv_bars import load_ohlcv_csv

    _, _, client = deribit
    rows = dvol_rows(shared_data)
    day = 1_719_792_000_000  # 2024-07-01: the day whose close the rank is taken at
    at = day + DAY_MS  # its close
    window = [c for t, c in rows if at - 365 * DAY_MS < t + DAY_MS <= at - DAY_MS]  # the 364 days before
    current = dict(rows)[day]
    low, high = min(window + [current]), max(window + [current])
    by_hand = (current - low) / (high - low) * 100
    assert 0 < by_hand < 100

    history = live_source(client, tmp_path).dvol.history("BTC", at, 365)
    assert iv_rank(history[:-1], current / 100) == pytest.approx(by_hand)  # the live path's numbers

    bars = load_ohlcv_csv(shared_data / "ohlcv/daily/BTC_USD-1d_2022-11-06_2024-08-31.csv")
    vol = atm_vol_input(bars, "1d", shared_data / DVOL_CSV, 30.0)
    bt = OptionsBacktest("BTC", bars, "1d", vol.atm_iv, strategies=[("s", "vol_mean_reversion", "deribit", None)],
                         capital=1000.0, iv_rank_days=364)
    i = int(np.flatnonzero(bt.close_ts == at)[0])
    assert bt.atm_iv[i] == pytest.approx(current / 100)
    assert iv_rank(bt.iv_history(at), bt.atm_iv[i]) == pytest.approx(by_hand)  # what the engine ranks


# --- bad DVOL replies: a log line, no trade, nothing stored lost ---------------------------------

def _never_ending():
    state = {"end": NOW}

    def rewrite(doc):
        state["end"] -= 1
        return {**doc, "result": {"data": [], "continuation": state["end"]}}
    return rewrite


def _nan_close(doc):
    rows = doc["result"]["data"]
    rows[-1][4] = math.nan
    return doc


BAD_REPLIES = {
    "nan": (Fault("rewrite", rewrite=_nan_close), 1, "data[0] close", "got nan"),
    "empty": (Fault("rewrite", rewrite=lambda d: {**d, "result": {"data": [], "continuation": None}}), 1,
              "no DVOL close for 2024-08-31", ""),
    "endless": (Fault("rewrite", rewrite=_never_ending()), 25, "continuation never ends", ""),
    "429": (Fault("status", status=429, retry_after=2), 1, "HTTP 429", ""),
    "5xx": (Fault("status", status=503), 1, "HTTP 503", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_a_bad_dvol_reply_is_logged_once_refuses_trading_and_keeps_the_stored_days(deribit, tmp_path, case):
    _, server, client = deribit
    fault, times, message, also = BAD_REPLIES[case]
    log = Recorder()
    source = live_source(client, tmp_path, log)
    source.iv_history("BTC", NOW - DAY_MS, 365)  # stored up to 2024-08-30
    cache = tmp_path / "dvol_btc.csv"
    stored = cache.read_bytes()
    server.inject(DVOL, fault, times=times)
    with pytest.raises(LiveIvUnavailable, match=re.escape(message)):
        source.iv_history("BTC", NOW, 365)
    assert cache.read_bytes() == stored  # nothing already stored is lost
    [line] = log.events("dvol_unavailable")
    assert message in line["detail"] and also in line["detail"] and line["kept_days"] == 366
    assert len(log.events("live_iv_unavailable")) == 1

    pricer = PricerService(load_config("config/default.json"), Runtime(log), source=source)
    pricer.spot["BTC"], pricer.market_ts = 59_000.0, NOW + 1_000
    with pytest.raises(RequestError) as err:  # what the signal engine gets: no IV, so no trade
        pricer.on_iv({"underlying": "BTC"})
    assert err.value.code == "no_live_iv" and "no live IV" in str(err.value)
    assert "BTC" in pricer.rt.problems["deribit_iv"]
    assert len(log.events("live_iv_unavailable")) == 1  # once per outage, not per request
    assert source.dvol.series("BTC")[0].size == 366  # the stored days are still held


def test_an_unreadable_cache_is_never_overwritten(deribit, tmp_path):
    _, _, client = deribit
    cache = tmp_path / "dvol_btc.csv"
    cache.write_text("date,iv\n2024-01-01,0.5\n")
    log = Recorder()
    history = live_source(client, tmp_path, log).iv_history("BTC", NOW, 30)
    assert history.size == 30  # fetched and served from memory
    assert cache.read_text() == "date,iv\n2024-01-01,0.5\n"
    assert "timestamp_ms,dvol_close" in log.events("dvol_cache_unreadable")[0]["detail"]


# --- ATM vol, chains and greeks from the live chain ------------------------------------------------

def chain_columns(shared_data):
    chain = json.loads((shared_data / "deribit/btc_option_chain_2020-05-14.json").read_text())
    return chain, ([r["expiration_timestamp"] for r in chain], [r["strike"] for r in chain],
                   [(r["mark_iv"] or math.nan) / 100 for r in chain], [r["underlying_price"] for r in chain])


def test_live_atm_iv_is_read_off_deribits_chain(deribit, shared_data, tmp_path):
    _, server, client = deribit
    _, columns = chain_columns(shared_data)
    source = live_source(client, tmp_path)
    got = source.atm_iv("BTC", SNAPSHOT_TS, 30.0)
    assert got == pytest.approx(atm_iv_at(*columns, SNAPSHOT_TS, SNAPSHOT_TS + 30 * DAY_MS), rel=1e-12)
    assert 0.76 < got < 0.84  # between the 29MAY20 and 26JUN20 ATM vols of that morning
    assert source.atm_iv("BTC", SNAPSHOT_TS + 1_000, 45.0) != got  # another target, same read
    assert server.hits("/api/v2/public/get_book_summary_by_currency") == 1


def test_live_chain_is_deribits_listing_with_greeks_at_its_mark_iv(deribit, tmp_path):
    _, server, client = deribit
    source = live_source(client, tmp_path)
    chain = source.chain(DERIBIT, "BTC", INDEX_2020, SNAPSHOT_TS, 60)
    quotes, _ = client.book_summary("BTC")
    i = chain.lookup(parse_instrument_name("BTC-22MAY20-9000-P"))
    q = quotes["BTC-22MAY20-9000-P"]
    assert chain.mark[i] == pytest.approx(q.mark_coin * INDEX_2020) and chain.iv[i] == q.mark_iv
    T = (chain.expiry_ts[i] - SNAPSHOT_TS) / YEAR_MS
    g = bs_greeks(q.underlying_price, 9000.0, T, 0.0, q.mark_iv, False)
    assert (chain.delta[i], chain.vega[i]) == (pytest.approx(g.delta), pytest.approx(g.vega))
    assert chain.expiry_ts.max() <= SNAPSHOT_TS + 60 * DAY_MS and len(chain) > 100
    cme = source.chain(IBKR_CME, "BTC", INDEX_2020, SNAPSHOT_TS, 60)  # the proxy: CME strikes on Deribit's surface
    assert len(cme) > 0 and np.all((cme.iv > 0.7) & (cme.iv < 2.2))
    server.inject("/api/v2/public/get_index_price", Fault("status", status=503))
    with pytest.raises(LiveIvUnavailable, match="no live IV for BTC: deribit chain: deribit get_index_price: HTTP 503"):
        source.chain(DERIBIT, "BTC", INDEX_2020, SNAPSHOT_TS + 10_000, 60)


def test_live_marks_carry_deribits_greeks_then_stay_stale_and_say_so_in_an_outage(deribit, tmp_path):
    _, server, client = deribit
    log = Recorder()
    source = live_source(client, tmp_path, log)
    put, unlisted = parse_instrument_name("BTC-22MAY20-9250-P"), parse_instrument_name("BTC-22MAY20-123000-C")
    cme = parse_instrument_name("MBT-29MAY20-9000-C")
    marks = source.marks([put, unlisted, cme], {"BTC": INDEX_2020}, SNAPSHOT_TS)
    live = marks[put.name]
    assert live["source"] == "deribit:exact" and live["mark_usd"] == pytest.approx(0.04010621 * INDEX_2020)
    ticker = client.ticker(put.name).greeks  # the greeks Deribit published for that instrument
    assert live["iv"] == pytest.approx(0.7687) and live["delta"] == pytest.approx(ticker["delta"], abs=5e-5)
    assert live["vega"] == pytest.approx(ticker["vega"], rel=5e-4)
    assert unlisted.name not in marks  # never marked by Deribit: missing, never a sim number
    assert marks[cme.name]["source"] == "deribit:exact" and marks[cme.name]["delta"] > 0  # IBKR proxy
    server.inject("/api/v2/public/get_index_price", Fault("status", status=503))
    stale = source.marks([put], {"BTC": INDEX_2020}, SNAPSHOT_TS + 1_000)[put.name]
    assert stale == {**live, "source": "stale:deribit-unavailable"}
    assert source.problem() is not None and "deribit BTC" in source.problem()


def test_pricer_shows_a_chain_outage_as_its_problem_once_and_clears_it(deribit, tmp_path):
    _, server, client = deribit
    log = Recorder()
    pricer = PricerService(load_config("config/default.json"), Runtime(log), source=live_source(client, tmp_path, log))
    pricer.spot["BTC"], pricer.market_ts = INDEX_2020, SNAPSHOT_TS
    server.inject("/api/v2/public/get_index_price", Fault("status", status=429, retry_after=1), times=2)
    for dt in (0, 200):  # the second request falls inside the backoff: Deribit is not asked again
        pricer.market_ts = SNAPSHOT_TS + dt
        with pytest.raises(RequestError) as err:
            pricer.on_chain({"underlying": "BTC", "venue": "deribit"})
        assert err.value.code == "no_live_iv" and "HTTP 429" in str(err.value)
    assert server.hits("/api/v2/public/get_index_price") == 1
    assert pricer.rt.problems["deribit_iv"].startswith("chain BTC: deribit chain: deribit get_index_price: HTTP 429")
    [line] = log.events("live_iv_unavailable")
    assert line["feed"] == "chain" and line["underlying"] == "BTC"
    pricer.market_ts = SNAPSHOT_TS + 1_500
    pricer.retry_live_iv()  # the periodic re-read: Deribit answers again (its 2nd 429 was consumed here)
    assert "deribit_iv" in pricer.rt.problems
    pricer.market_ts = SNAPSHOT_TS + 10_000
    pricer.retry_live_iv()
    assert "chain BTC" not in pricer.rt.problems.get("deribit_iv", "")
    assert len(log.events("live_iv_recovered")) == 1
    reply = pricer.on_chain({"underlying": "BTC", "venue": "deribit"})
    assert reply["source"] == "deribit-live" and reply["size"] > 100
