"""The text exposition writer, read back by prometheus-client's own parser."""
from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.views.metrics import Metric, render, summary


def parsed(families: list[Metric]) -> dict[str, tuple[str, str, list]]:
    return {f.name: (f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(render(families).decode())}


def test_gauge_counter_and_summary_read_back_with_their_suffixes():
    gauge = Metric("g_equity", "Equity.", "gauge", ("strategy",))
    gauge.add_metric(["rsi-btc"], 1_012.5)
    counter = Metric("g_trades", "Trades.", "counter", ("strategy",))
    counter.add_metric(["rsi-btc"], 3)
    out = parsed([gauge, counter, summary("cycle", "Cycles.", 2, 0.5)])
    assert out["g_equity"] == ("gauge", "Equity.", [("g_equity", {"strategy": "rsi-btc"}, 1_012.5)])
    assert out["g_trades"] == ("counter", "Trades.", [("g_trades_total", {"strategy": "rsi-btc"}, 3.0)])
    assert out["gotrader_cycle"][2] == [("gotrader_cycle_count", {}, 2.0), ("gotrader_cycle_sum", {}, 0.5)]


def test_label_values_and_help_are_escaped_and_non_finite_values_written_as_the_format_spells_them():
    family = Metric("g_odd", 'Help with a \\ and a\nnewline.', "gauge", ("name",))
    family.add_metric(['quote " back\\slash\nline'], math.inf)
    family.add_metric(["minus"], -math.inf)
    family.add_metric(["nan"], math.nan)
    text = render([family]).decode()
    assert "# HELP g_odd Help with a \\\\ and a\\nnewline." in text and "+Inf" in text and "-Inf" in text
    _type, doc, samples = parsed([family])["g_odd"]
    assert doc == "Help with a \\ and a\nnewline."
    assert samples[0] == ("g_odd", {"name": 'quote " back\\slash\nline'}, math.inf)
    assert samples[1][2] == -math.inf and math.isnan(samples[2][2])


def test_an_empty_family_still_declares_itself():
    assert render([Metric("g_none", "Nothing yet.", "counter")]) == (
        b"# HELP g_none_total Nothing yet.\n# TYPE g_none_total counter\n")


def test_label_values_must_match_the_family_labels():
    family = Metric("g_equity", "Equity.", "gauge", ("strategy", "category"))
    with pytest.raises(ValueError, match=r"g_equity: 1 label values for labels \('strategy', 'category'\)"):
        family.add_metric(["rsi-btc"], 1.0)
