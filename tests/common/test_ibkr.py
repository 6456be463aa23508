"""The optional IBKR chain reader: off without ibkr.host, and a clear error when TWS is absent."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from common.config import load_config
from common.ibkr import IbkrChainReader, IbkrSettings, IbkrUnavailable, build_chain_reader, listed_from_chain
from options.contracts import parse_instrument_name
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


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
