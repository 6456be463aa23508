"""The optional IBKR chain reader: off without ibkr.host, and a clear error when TWS is absent."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.ports import free_port
from config.settings import load_config
from options.contracts import parse_instrument_name
from services.feeds.ibkr import IbkrChainReader, IbkrSettings, IbkrUnavailable, build_chain_reader, listed_from_chain

REPO = Path(__file__).resolve().parents[3]


def test_no_host_means_no_reader_and_no_ib_async_import():
    sys.modules.pop("ib_async", None)
    cfg = load_config(REPO / "config" / "live.json")
    assert cfg.ibkr.host is None and build_chain_reader(cfg) is None
    assert "ib_async" not in sys.modules


def test_chain_parameters_become_cme_micro_contracts():
    listed = listed_from_chain("BTC", ["20261127"], [90000.0, 95000.0])
    assert [o.name for o in listed] == ["MBT-27NOV26-90000-C", "MBT-27NOV26-90000-P",
                                        "MBT-27NOV26-95000-C", "MBT-27NOV26-95000-P"]
    assert listed[0].expiry_ts == parse_instrument_name("MBT-27NOV26-90000-C").expiry_ts


def test_an_absent_gateway_is_a_clear_error_not_a_hang():
    reader = IbkrChainReader(IbkrSettings("127.0.0.1", free_port(), 17), timeout_s=2)
    with pytest.raises(IbkrUnavailable, match=r"ibkr 127\.0\.0\.1:\d+"):
        reader.read_chain("BTC")
    with pytest.raises(ValueError, match="ibkr underlying 'SOL'"):
        reader.read_chain("SOL")


class FakeReader:
    """Stands in for TWS: lists two real CME expiries and a few strikes, or is unreachable."""

    def __init__(self, listing, fail=False):
        self.listing, self.fail, self.calls = listing, fail, 0

    def read_chain(self, underlying):
        self.calls += 1
        if self.fail:
            raise IbkrUnavailable("ibkr 127.0.0.1:7497: ConnectionRefusedError")
        return self.listing


def test_ibkr_chains_hold_only_what_ibkr_lists_and_a_missing_gateway_falls_back_to_the_model():
    from options.marks import SimSurface
    from options.venues import DERIBIT, IBKR_CME
    from services.feeds.ibkr import IbkrListedSource, listed_from_chain

    ts = 1_767_225_600_000  # 2026-01-01
    model = SimSurface(7, ts - 120 * 86_400_000)
    full = model.chain(IBKR_CME, "BTC", 90_000.0, ts, 100)
    expiries = sorted(set(full.expiry_ts.tolist()))[:2]
    listing = listed_from_chain("BTC", [IBKR_CME.expiry_date(e).strftime("%Y%m%d") for e in expiries],
                                [89_000.0, 90_000.0, 91_000.0])
    reader = FakeReader(listing)
    source = IbkrListedSource(model, reader)
    chain = source.chain(IBKR_CME, "BTC", 90_000.0, ts, 100)
    assert len(chain) == 2 * 3 * 2 and set(chain.expiry_ts.tolist()) == set(expiries)
    assert set(chain.strike.tolist()) == {89_000.0, 90_000.0, 91_000.0}
    source.chain(IBKR_CME, "BTC", 90_000.0, ts + 60_000, 100)
    assert reader.calls == 1  # read once per underlying and market day
    assert len(source.chain(DERIBIT, "BTC", 90_000.0, ts, 100)) == len(model.chain(DERIBIT, "BTC", 90_000.0, ts, 100))
    assert source.atm_iv("BTC", ts) == model.atm_iv("BTC", ts)

    logged = []

    class Log:
        def warning(self, event, **fields):
            logged.append(event)

    down = IbkrListedSource(model, FakeReader(listing, fail=True), Log())
    assert len(down.chain(IBKR_CME, "BTC", 90_000.0, ts, 100)) == len(full)
    down.chain(IBKR_CME, "BTC", 90_000.0, ts, 100)
    assert logged == ["ibkr_chain_unavailable"]  # once, not an error loop
