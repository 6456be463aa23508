"""Property-based bad-input corpus: whatever arrives, the answer is a clear error or a
dropped message with a counter, never a crash and never a corrupted file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.bars import Bar, sanitize_bars
from common.bus import BadMessage, BusStats, Replier, decode_envelope, encode_envelope
from common.model import RecordError, SpotOrder
from common.ohlcv import OHLCV, BadBarError
from common.state_store import StateFileError, load_state
from config.settings import ConfigError, parse_config
from trading.portfolio import Portfolio

REPO = Path(__file__).resolve().parents[2]
DEFAULT = json.loads((REPO / "config" / "default.json").read_text())
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


# --- bus ---------------------------------------------------------------------------------------
def dispatcher(handlers) -> Replier:
    """A Replier's dispatch without its socket."""
    rep = Replier.__new__(Replier)
    rep.source, rep.handlers, rep.on_error, rep.stats = "test", handlers, None, BusStats()
    return rep


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes_decode_to_an_envelope_or_a_bad_message(raw):
    try:
        env = decode_envelope(raw)
    except BadMessage as exc:
        assert str(exc)
    else:
        assert isinstance(env.type, str) and isinstance(env.seq, int)


@FAST
@given(json_values)
def test_any_msgpack_value_is_judged_not_crashed_on(value):
    try:
        decode_envelope(msgpack.packb(value))
    except BadMessage as exc:
        assert str(exc)


@FAST
@given(st.binary(max_size=512) | json_values.map(lambda v: msgpack.packb(v)))
def test_a_replier_answers_anything_with_a_valid_reply(raw):
    rep = dispatcher({"echo": lambda body: body})
    reply = decode_envelope(rep.answer(raw))
    assert reply.type == "reply" and isinstance(reply.body["ok"], bool)


@FAST
@given(json_values)
def test_handler_bodies_of_any_shape_get_an_answer(body):
    rep = dispatcher({"order": lambda b: SpotOrder.from_dict(b).to_dict()})
    reply = decode_envelope(rep.answer(encode_envelope("order", body, "client")))
    if not reply.body["ok"]:
        assert reply.body["error"]["message"]


# --- config --------------------------------------------------------------------------------
def mutate(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def all_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from all_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from all_paths(v, prefix + (i,))


DEFAULT_PATHS = [p for p in all_paths(DEFAULT) if p]


@FAST
@given(st.sampled_from(DEFAULT_PATHS), json_values)
def test_config_with_any_value_anywhere_loads_or_names_its_errors(path, value):
    doc = mutate(json.loads(json.dumps(DEFAULT)), path, value)
    try:
        parse_config(doc, "fuzz.json")
    except ConfigError as exc:
        assert exc.errors and all(":" in e for e in exc.errors)


@FAST
@given(json_values)
def test_config_of_any_shape_is_a_config_error_at_worst(doc):
    try:
        parse_config(doc, "fuzz.json")
    except ConfigError as exc:
        assert exc.errors


# --- state -------------------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=1024))
def test_state_file_of_random_bytes_is_rejected_and_left_untouched(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("state") / "state.json"
    path.write_bytes(raw)
    try:
        state = load_state(path)
    except StateFileError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(state, dict)
    assert path.read_bytes() == raw


@FAST
@given(json_values)
def test_state_of_the_wrong_schema_names_the_bad_key(strategies):
    portfolio = Portfolio([], fee_rate=0.001, slippage_rate=0.0)
    try:
        portfolio.load_state({"version": 1, "journal_seq": 0, "strategies": strategies})
    except RecordError as exc:
        assert "strategies" in str(exc)


# --- market data ----------------------------------------------------------------------------
bar_values = st.floats(-1e6, 1e6) | st.sampled_from([0.0, math.nan, math.inf, -math.inf, -1.0])


@FAST
@given(st.lists(st.tuples(st.integers(0, 50), bar_values, bar_values, bar_values, bar_values, bar_values),
                min_size=1, max_size=30))
def test_bad_bars_are_dropped_with_a_reason_and_what_remains_is_sound(rows):
    ohlcv = OHLCV.from_rows([[t * 3_600_000, o, h, lo, c, v] for t, o, h, lo, c, v in rows])
    clean, problems = sanitize_bars(ohlcv)
    assert len(clean) + len(problems) == len(ohlcv)
    assert all("dropped" in p for p in problems)
    clean.validate("clean")  # raises BadBarError if anything bad survived
    if problems:
        with pytest.raises(BadBarError):
            ohlcv.validate("raw")


@FAST
@given(st.dictionaries(st.sampled_from(["symbol", "timeframe", "ts_open", "open", "high", "low", "close", "volume"]),
                       json_values, max_size=8))
def test_bar_messages_of_any_shape_are_a_record_error_or_a_bar(body):
    try:
        bar = Bar.from_dict(body)
    except (RecordError, ValueError) as exc:
        assert str(exc)
    else:
        assert math.isfinite(bar.close) and bar.close > 0
