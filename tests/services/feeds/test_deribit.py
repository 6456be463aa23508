"""The Deribit client and the live mark source against a replay server on 127.0.0.1.

Bodies: the real 2020-05-14 BTC chain snapshot (get_instruments / ticker / book summary rows
built from its records), the recorded 2026 FastMM frames (get_instruments trimmed to 3
options, the BTC-25DEC26-76000-C production ticker, the invalid-params error), each in Deribit's
REST envelope. No test touches the internet.
"""
from __future__ import annotations

import pytest

from options.contracts import ContractError, parse_instrument_name
from options.venues import DERIBIT
from services.feeds.deribit import DeribitMarkSource, DeribitRequestError, DeribitUnavailable
from tests.support.replay_server import Fault

SNAPSHOT_TS = 1_589_434_896_486  # 2020-05-14 05:41:36 UTC, when the chain was recorded
HOUR = 3_600_000
INDEX_2020 = 9350.67
BOOK = "/api/v2/public/get_book_summary_by_currency"


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.records.append((event, fields))

    info = warning

    def events(self, name: str) -> list[dict]:
        return [f for e, f in self.records if e == name]


def test_index_price_and_the_seed_helpers_read_the_real_chain(deribit):
    _, _, client = deribit
    assert client.get_index_price("BTC") == INDEX_2020
    expiries = client.fetch_available_expiries("BTC", 0, 30, now_ts=SNAPSHOT_TS)
    assert [DERIBIT.expiry_date(e).isoformat() for e in expiries] == [
        "2020-05-14", "2020-05-15", "2020-05-22", "2020-05-29"]
    assert client.fetch_available_expiries("BTC", 30, 200, now_ts=SNAPSHOT_TS) == [1_593_158_400_000, 1_601_020_800_000]
    assert client.find_closest_expiry("BTC", 10, now_ts=SNAPSHOT_TS) == 1_590_134_400_000  # 22MAY20, 8.1 days
    strikes = client.fetch_available_strikes("BTC", 1_590_134_400_000, now_ts=SNAPSHOT_TS)
    assert strikes[0] == 6000 and strikes[-1] == 13000 and 9250 in strikes and len(strikes) == 29
    assert client.find_closest_strike("BTC", 1_590_134_400_000, True, 9420, now_ts=SNAPSHOT_TS) == 9500
    assert client.find_closest_strike("BTC", 1_590_134_400_000, False, 9375, now_ts=SNAPSHOT_TS) == 9250  # tie: lower


def test_instruments_are_cached_for_a_while(deribit):
    _, server, client = deribit
    client.get_instruments("BTC", SNAPSHOT_TS)
    client.get_instruments("BTC", SNAPSHOT_TS + 60_000)
    assert server.hits("/api/v2/public/get_instruments") == 1
    client.get_instruments("BTC", SNAPSHOT_TS + 11 * 60_000)
    assert server.hits("/api/v2/public/get_instruments") == 2


def test_ticker_decodes_mark_iv_greeks_from_the_recorded_production_frame(deribit):
    _, _, client = deribit
    t = client.ticker("BTC-25DEC26-76000-C")
    assert (t.quote.mark_coin, t.quote.mark_iv, t.index_price) == (0.1296, 0.3825, 83250.78)
    assert (t.best_bid, t.best_ask, t.quote.underlying_price) == (0.1255, 0.133, 84222.23)
    assert t.greeks["delta"] == 0.74092 and t.greeks["vega"] == 132.3649


def test_recorded_2026_instruments_list_the_daily_and_monthly(deribit):
    replay, _, client = deribit
    replay.use_2026 = True
    listed = client.get_instruments("BTC", 1_789_347_085_459)
    assert [o.name for o in listed] == ["BTC-15SEP26-77000-C", "BTC-15SEP26-77000-P", "BTC-25DEC26-78000-C"]
    assert listed[0].expiry_ts == 1_789_459_200_000 and listed[0].is_call and not listed[1].is_call


def test_json_rpc_error_is_a_request_error_with_its_code(deribit):
    _, _, client = deribit
    with pytest.raises(DeribitRequestError, match=r"get_instruments: error -32602: Invalid params") as err:
        client.call("get_instruments", currency="BTC", kind="bogus")
    assert err.value.code == -32602


@pytest.mark.parametrize("fault, message", [
    (Fault("delay", seconds=1.0), "ReadTimeout"),
    (Fault("status", status=429, retry_after=7), "HTTP 429"),
    (Fault("status", status=502), "HTTP 502"),
    (Fault("truncate"), "body is not JSON"),
])
def test_transport_faults_are_temporary(deribit, fault, message):
    _, server, client = deribit
    server.inject("/api/v2/public/get_index_price", fault)
    with pytest.raises(DeribitUnavailable, match=message) as err:
        client.get_index_price("BTC")
    if fault.retry_after:
        assert err.value.retry_after == 7


@pytest.mark.parametrize("price", [float("nan"), -9350.0, 0.0, "9350"])
def test_impossible_index_price_is_rejected(deribit, price):
    _, server, client = deribit
    server.inject("/api/v2/public/get_index_price",
                  Fault("rewrite", rewrite=lambda d: {**d, "result": {**d["result"], "index_price": price}}))
    with pytest.raises(DeribitUnavailable, match="index_price: expected a finite number > 0"):
        client.get_index_price("BTC")


def test_book_summary_drops_bad_rows_and_keeps_the_chain(deribit):
    _, server, client = deribit

    def poison(doc):
        doc["result"][0]["mark_price"] = float("nan")
        doc["result"][1]["mark_price"] = -0.01
        return doc

    server.inject(BOOK, Fault("rewrite", rewrite=poison))
    quotes, problems = client.book_summary("BTC")
    assert len(quotes) == 308 and len(problems) == 2
    assert "book_summary[0].mark_price" in problems[0] and "got nan" in problems[0]


def test_empty_chain_gives_no_contract_to_trade(deribit):
    _, server, client = deribit
    server.inject("/api/v2/public/get_instruments", Fault("rewrite", rewrite=lambda d: {**d, "result": []}))
    with pytest.raises(ContractError, match="no listed option expiry .* \\(empty chain\\)"):
        client.find_closest_expiry("BTC", 10, now_ts=SNAPSHOT_TS)
    with pytest.raises(ContractError, match="no listed call"):
        client.find_closest_strike("BTC", 1_590_134_400_000, True, 9000, now_ts=SNAPSHOT_TS)


def test_bad_arguments_are_named(deribit):
    _, _, client = deribit
    with pytest.raises(ContractError, match="underlying 'SOL'"):
        client.get_index_price("SOL")
    with pytest.raises(ValueError, match="need 0 <= min_dte <= max_dte"):
        client.fetch_available_expiries("BTC", 10, 5, now_ts=SNAPSHOT_TS)


# --- the mark source --------------------------------------------------------------------------------

def test_mark_source_marks_exact_mapped_ibkr_and_expired_positions(deribit):
    replay, server, client = deribit
    replay.delivery_prices = [{"date": "2020-05-14", "delivery_price": 9500.0}]  # test input, not recorded
    log = Recorder()
    source = DeribitMarkSource(client, log)
    names = ["BTC-22MAY20-9250-P", "BTC-21MAY20-9250-P", "MBT-29MAY20-9000-C", "BTC-14MAY20-9000-C",
             "BTC-14MAY20-9750-C"]
    now = SNAPSHOT_TS + 3 * HOUR  # 08:41: the 14MAY20 expiry (08:00) has passed
    marks = source.marks([parse_instrument_name(n) for n in names], now)
    exact = marks["BTC-22MAY20-9250-P"]
    assert exact.source == "exact" and exact.mark_usd == pytest.approx(0.04010621 * INDEX_2020)
    assert exact.mark_iv == pytest.approx(0.7687)
    mapped = marks["BTC-21MAY20-9250-P"]
    assert (mapped.source, mapped.instrument, mapped.days_shift) == ("mapped", "BTC-22MAY20-9250-P", 1.0)
    cme = marks["MBT-29MAY20-9000-C"]
    assert cme.source == "exact" and cme.instrument == "BTC-29MAY20-9000-C"
    assert marks["BTC-14MAY20-9000-C"].source == "settled" and marks["BTC-14MAY20-9000-C"].mark_usd == 500.0
    assert marks["BTC-14MAY20-9750-C"].mark_usd == 0.0  # expired out of the money
    [logged] = log.events("live_mark_mapped")
    assert logged == {"position": "BTC-21MAY20-9250-P", "original_expiry": 1_590_048_000_000,
                      "mapped": "BTC-22MAY20-9250-P", "days_between": 1.0}
    source.marks([parse_instrument_name("BTC-21MAY20-9250-P")], now + 60_000)
    assert len(log.events("live_mark_mapped")) == 1  # once per position, not every cycle
    assert server.hits(BOOK) == 2


def test_mark_source_survives_an_outage_and_reports_it_once(deribit):
    _, server, client = deribit
    log = Recorder()
    source = DeribitMarkSource(client, log)
    contract = parse_instrument_name("BTC-22MAY20-9250-P")
    server.inject("/api/v2/public/get_index_price", Fault("status", status=503), times=2)
    assert source.marks([contract], SNAPSHOT_TS) == {}
    assert source.marks([contract], SNAPSHOT_TS + 500) == {}  # inside the backoff: not even asked
    assert source.marks([contract], SNAPSHOT_TS + 1_000) == {}
    assert len(log.events("live_marks_unavailable")) == 1 and source.stale_reasons()
    marks = source.marks([contract], SNAPSHOT_TS + 5_000)
    assert marks[contract.name].source == "exact" and not source.stale_reasons()
    assert len(log.events("live_marks_recovered")) == 1


def test_mark_source_with_an_empty_chain_marks_nothing_and_says_why(deribit):
    _, server, client = deribit
    log = Recorder()
    server.inject(BOOK, Fault("rewrite", rewrite=lambda d: {**d, "result": []}))
    assert DeribitMarkSource(client, log).marks([parse_instrument_name("BTC-22MAY20-9250-P")], SNAPSHOT_TS) == {}
    assert "no quote for BTC-22MAY20-9250-P" in log.events("live_mark_missing")[0]["detail"]
