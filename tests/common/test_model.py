"""The records that cross process boundaries: each ``to_dict`` (built by hand, off asdict's deep
copy) carries every field, in field order, and reads back to the same record."""
from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from common.bars import Bar
from common.model import MAX_TS_MS, Fill, RecordError, Signal, SpotOrder, read_number, read_object, read_ts

RECORDS = [
    Bar("BTC/USDT", "1h", 3_600_000, 50_000.0, 50_200.5, 49_900.0, 50_123.5, 12.5),
    Signal("rsi-btc", "rsi", "BTC/USDT", "1h", -1, 50_123.5, 3_600_000, 7_200_000, {"rsi": 71.25}),
    SpotOrder("rsi-btc:3600000", "rsi-btc", "BTC/USDT", -1, 50_123.5, 7_200_000),
    Fill(7, "rsi-btc:3600000", "rsi-btc", "spot", "BTC/USDT", "sell", 0.02, 50_073.4, 1.0, 1_000.4, 12.5,
         7_200_000, {"note": "x"}),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_to_dict_is_asdict_and_a_copy(record) -> None:
    got = record.to_dict()
    assert got == asdict(record) and list(got) == [f.name for f in fields(record)]
    for name in ("indicators", "extra"):
        if name in got:
            assert got[name] == getattr(record, name) and got[name] is not getattr(record, name)


@pytest.mark.parametrize("record", [RECORDS[0], *RECORDS[2:]], ids=lambda r: type(r).__name__)
def test_bars_orders_and_fills_read_back_from_their_dicts(record) -> None:
    assert type(record).from_dict(record.to_dict()) == record


@pytest.mark.parametrize(("value", "error"), [
    (None, r"order\.price: expected a number, got null"),
    (True, r"order\.price: expected a number, got true"),
    ("2", r"order\.price: expected a number, got \"2\""),
    (float("nan"), r"order\.price: must be a finite number, got nan"),
    (float("inf"), r"order\.price: must be a finite number, got inf"),
    (-1.0, r"order\.price: must be >= 0, got -1\.0"),
    (-1, r"order\.price: must be >= 0, got -1\.0"),
])
def test_read_number_names_every_kind_of_bad_number(value, error) -> None:
    with pytest.raises(RecordError, match=error):
        read_number({"price": value}, "price", "order", minimum=0.0)


def test_read_number_takes_floats_ints_and_float_subclasses_and_names_a_missing_field() -> None:
    import numpy as np

    got = [read_number({"price": v}, "price", "order", minimum=0.0) for v in (2.5, 3, np.float64(4.5), 0.0)]
    assert got == [2.5, 3.0, 4.5, 0.0] and all(type(v) is float for v in got)
    with pytest.raises(RecordError, match=r"order\.price: missing"):
        read_number({}, "price", "order")
    with pytest.raises(RecordError, match=r"order\.price: missing"):
        read_number(FrozenMapping(), "price", "order")


class FrozenMapping(dict):
    """A Mapping that is not exactly a dict: the readers take any mapping, not only dicts."""


def test_readers_take_any_mapping_and_name_what_is_not_one() -> None:
    assert read_number(FrozenMapping(price=2), "price", "order") == 2.0
    assert read_object(FrozenMapping(), "order") == {}
    with pytest.raises(RecordError, match=r"order\.legs\[0\]: expected an object, got \[1, 2\]"):
        read_object([1, 2], "order.legs[0]")
    with pytest.raises(RecordError, match=r"fill: expected an object, got \"x\""):
        read_number("x", "price", "fill")


def test_read_ts_takes_a_time_a_calendar_can_show_and_names_what_it_cannot():
    assert read_ts({"t": 0}, "t", "x") == 0 and read_ts({"t": MAX_TS_MS}, "t", "x") == MAX_TS_MS
    too_late = rf"^x\.t: must be at most {MAX_TS_MS} \(the year 9999\), got {MAX_TS_MS + 1}$"
    with pytest.raises(RecordError, match=too_late):
        read_ts({"t": MAX_TS_MS + 1}, "t", "x")
    with pytest.raises(RecordError, match=r"^x\.t: must be >= 0, got -1$"):
        read_ts({"t": -1}, "t", "x")
    with pytest.raises(RecordError, match=r"^x\.t: expected an integer, got true$"):
        read_ts({"t": True}, "t", "x")
