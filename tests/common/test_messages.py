"""The bus registry: docs/BUS.md is generated from it, every publish call in services/ names a
declared type on a declared topic, and message_problems names what a body does not match."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.bars import Bar
from common.messages import DOCS_PATH, MESSAGES, main, message_problems, message_type, render_markdown
from common.model import Fill, Signal

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("marketdata", "signals", "portfolio", "pricer")


def publish_calls() -> list[tuple[str, int, ast.expr, ast.expr]]:
    """(module, line, topic, type) of every ``.publish(topic, type, body)`` call in services/."""
    calls = []
    for path in sorted((REPO / "services").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "publish":
                assert len(node.args) == 3, f"{path.name}:{node.lineno}: publish(topic, type, body) expected"
                calls.append((path.stem, node.lineno, node.args[0], node.args[1]))
    return calls


def leading_text(topic: ast.expr) -> str:
    if isinstance(topic, ast.Constant):
        return topic.value
    assert isinstance(topic, ast.JoinedStr), ast.dump(topic)
    first = topic.values[0]
    return first.value if isinstance(first, ast.Constant) else ""


def test_docs_bus_md_is_generated_from_the_registry():
    assert DOCS_PATH.read_text(encoding="utf-8") == render_markdown(), \
        "docs/BUS.md is stale: run `python -m common.messages --docs`"


def test_every_publish_call_names_a_declared_type_on_its_declared_topic():
    calls = publish_calls()
    assert len(calls) >= 9
    published = set()
    for module, line, topic, type_node in calls:
        where = f"services/{module}.py:{line}"
        assert isinstance(type_node, ast.Constant) and isinstance(type_node.value, str), \
            f"{where}: the envelope type must be a string literal, so it can be checked against common/messages.py"
        publishers = SERVICES if module == "runtime" else (module,)  # the runtime publishes every heartbeat
        lead = leading_text(topic)
        for publisher in publishers:
            declared = message_type(type_node.value, publisher)
            assert declared is not None, \
                f"{where}: type {type_node.value!r} of {publisher} is not in common/messages.py"
            assert lead and (declared.topic_prefix.startswith(lead) or lead.startswith(declared.topic_prefix)), \
                f"{where}: topic starting {lead!r} does not match the declared {declared.topic!r}"
            published.add((type_node.value, publisher))
    declared_only = {(m.type, m.publisher) for m in MESSAGES} - published
    assert not declared_only, f"declared in common/messages.py but never published: {sorted(declared_only)}"


def test_the_records_services_publish_match_their_declarations():
    bar = Bar("BTC/USDT", "1h", 0, 1.0, 2.0, 0.5, 1.5, 10.0)
    published = {**bar.to_dict(), "ts_close": bar.ts_close, "wall_due_ms": 1.0}  # as marketdata sends it
    assert message_problems("bar.BTC/USDT.1h", "bar", "marketdata", published) == []
    signal = Signal("momentum-btc", "momentum", "BTC/USDT", "1h", 1, 90_000.0, 0, 3_600_000, {"roc": 1.2})
    assert message_problems("signal.momentum-btc", "signal", "signals", signal.to_dict()) == []
    fill = Fill(1, "m:1", "momentum-btc", "spot", "BTC/USDT", "buy", 0.01, 90_000.0, 0.9, -900.9, 0.0, 1)
    assert message_problems("fill.momentum-btc", "fill", "portfolio", fill.to_dict()) == []


@pytest.mark.parametrize("topic, type_, source, body, problems", [
    ("tick.BTC/USDT", "tick", "marketdata", {"symbol": "BTC/USDT", "price": 1.0, "ts": 1, "bid": 0.9},
     ["tick.body.bid: not declared in common/messages.py"]),
    ("tick.BTC/USDT", "tick", "marketdata", {"symbol": "BTC/USDT", "ts": 1}, ["tick.body.price: declared but missing"]),
    ("tick.BTC/USDT", "tick", "marketdata", [1, 2], ["tick.body: expected a map, got list"]),
    ("clock", "tick", "marketdata", {"symbol": "BTC/USDT", "price": 1.0, "ts": 1},
     ["tick: topic 'clock' does not match 'tick.<symbol>'"]),
    ("x", "quote", "marketdata", {},
     ["type 'quote' from 'marketdata' (topic 'x') is not declared in common/messages.py"]),
    ("tick.X", "tick", "pricer", {},
     ["type 'tick' from 'pricer' (topic 'tick.X') is not declared in common/messages.py"]),
    ("signal.d", "options_signal", "signals",
     {"strategy_id": "d", "strategy": "wheel", "venue": "deribit", "underlying": "BTC", "ts_event": 1,
      "actions": [{"action": "open"}], "refused": []},
     ["options_signal.body.actions[0].contract: declared but missing"]),
])
def test_message_problems_name_the_key_and_what_is_wrong(topic, type_, source, body, problems):
    assert message_problems(topic, type_, source, body)[:len(problems)] == problems


def test_optional_keys_may_be_absent_and_null_records_are_not_walked():
    beat = message_type("heartbeat", "signals")
    body = {f.name: 0 for f in beat.fields}
    body.update(bus={"sent": 0, "received": 0, "dropped": {}, "dropped_total": 0, "missed": {}},
                strategies={"a": {"status": "ok", "ts": 1}, "b": {"status": "ok", "ts": 1, "signal": 1}})
    assert message_problems("heartbeat.signals-spot", "heartbeat", "signals-spot", body) == []
    body["strategies"]["c"] = {"status": "ok"}
    assert message_problems("heartbeat.signals-spot", "heartbeat", "signals-spot", body) == [
        "heartbeat.body.strategies['c'].ts: declared but missing"]


def test_docs_cli_writes_the_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "BUS.md"
    monkeypatch.setattr("common.messages.DOCS_PATH", target)
    assert main(["--docs"]) == 0
    assert target.read_text() == render_markdown() and "options_signal" in target.read_text()
    assert capsys.readouterr().out == f"wrote {target}\n"
