"""The dashboard as a person sees it: headless Debian Chromium (driven by playwright, which
downloads no browser of its own) opens the page of a running sim stack, waits for live data,
checks the strategies table and the equity charts carry real numbers, and saves a screenshot.
It follows the gateway's event stream, and polls when the stream is refused.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.support.stack import Stack, stack_config

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MONEY = re.compile(r"^[+-]?-?\$[\d,]+\.\d\d$")


def money(text: str) -> float:
    if not MONEY.match(text):
        raise ValueError(f"not a dollar amount: {text!r}")
    return float(text.replace("$", "").replace(",", "").replace("+", ""))


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed in the venv")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def test_dashboard_shows_live_strategies_and_equity_charts(chromium, tmp_path):
    with Stack(tmp_path, stack_config()) as stack:
        stack.wait_for(lambda: len(stack.http("/api/equity")[1]["ts"]) >= 3
                       and any(v["trade_count"] for v in stack.status()["strategies"].values()),
                       timeout=60, what="a few equity points and a first trade")
        page = chromium.new_page(viewport={"width": 1440, "height": 2000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        outside: list[str] = []
        page.on("request", lambda req: None if req.url.startswith(stack.gateway_url) else outside.append(req.url))
        page.goto(stack.gateway_url + "/")

        count = len(stack.status()["strategies"])
        page.wait_for_function(f"document.querySelectorAll('#strategies tbody tr[data-strategy]').length === {count}",
                               timeout=20_000)
        page.wait_for_function("document.querySelectorAll('#category-charts path.line').length >= 2", timeout=20_000)

        # the rows and the document they were drawn from, read in one synchronous step
        shown = page.evaluate("""() => ({
            status: state.status,
            rows: [...document.querySelectorAll('#strategies tbody tr[data-strategy]')]
                .map(r => [r.dataset.strategy, ...[...r.cells].map(c => c.textContent)]),
        })""")
        rows, drawn = shown["rows"], shown["status"]
        status = stack.status()
        assert set(drawn["strategies"]) == set(status["strategies"])
        assert drawn["market_ts"] <= status["market_ts"]
        for sid, _id, _category, start, value, pnl, _pct, trades, *_rest in rows:
            view = drawn["strategies"][sid]
            assert money(start) == pytest.approx(view["initial_capital"], abs=0.005)
            assert money(value) == pytest.approx(view["portfolio_value"], abs=0.005)
            assert money(pnl) == pytest.approx(view["pnl"], abs=0.005)
            assert int(trades) == view["trade_count"]
        shown_pnl = [money(r[5]) for r in rows]
        assert shown_pnl == sorted(shown_pnl, reverse=True)  # sorted by P&L, best first
        assert len(rows) == len(status["strategies"])
        assert any(int(r[7]) > 0 for r in rows), "no strategy has traded yet on the dashboard"

        cards = page.eval_on_selector_all("#totals .card", "cs => cs.map(c => c.dataset.category)")
        assert cards == ["spot", "deribit", "ibkr", "total"]

        paths = page.eval_on_selector_all("#category-charts path.line, #strategy-chart path.line",
                                          "ps => ps.map(p => p.getAttribute('d'))")
        coords = [float(v) for d in paths for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
        assert len(paths) >= 3 and len(coords) >= 6 and len(set(coords)) > 2
        assert page.locator("#strategies svg.spark path.line").count() >= 1

        updates = int(page.evaluate("document.body.dataset.updates"))
        page.wait_for_function(f"Number(document.body.dataset.updates) >= {updates + 2}", timeout=10_000)
        assert page.evaluate("document.body.dataset.transport") == "stream"
        # marketdata, portfolio, pricer and the two signal engines (spot, options): the gateway's own row is not one
        assert page.locator("#services tbody tr[data-service]").count() == 5
        assert page.eval_on_selector_all("#services td.problems", "cs => cs.map(c => c.textContent)") == ["none"] * 5
        assert page.text_content("#health-badge") == "all services up", \
            page.evaluate("JSON.stringify(state.status.health)")

        feed = r"feed: sim( · clock slipped \d+× \(stalls\))? · last tick \d+\.\d s ago"
        assert re.fullmatch(feed, page.text_content("#feed"))
        stack.freeze("marketdata", 0.5)  # five bar periods at 36,000x: its clock moves on, and the page says so
        slipped = "/ · clock slipped [1-9]\\d*× \\(stalls\\) · /.test(document.getElementById('feed').textContent)"
        page.wait_for_function(slipped, timeout=10_000)

        page.click("#strategies th[data-key='id']")
        ids = page.eval_on_selector_all("#strategies tbody tr[data-strategy]", "rs => rs.map(r => r.dataset.strategy)")
        assert ids == sorted(ids)

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        kept = shutil.copy(shot, ARTIFACTS / "dashboard.png")
        print(f"dashboard screenshot: {kept}")
        assert shot.stat().st_size > 20_000
        assert errors == [] and outside == []
        page.close()

        # the stream refused (as when every subscriber slot is taken): the page polls instead
        polled = chromium.new_page()
        polled.route("**/api/stream", lambda route: route.fulfill(status=503, content_type="application/json",
                                                                  body='{"error": "stream full"}'))
        polled.goto(stack.gateway_url + "/")
        polled.wait_for_function("document.body.dataset.transport === 'poll'"
                                 " && Number(document.body.dataset.updates) >= 3",
                                 timeout=20_000)
        assert polled.evaluate("document.body.dataset.pollReason") == "stream refused"
        assert polled.locator("#strategies tbody tr[data-strategy]").count() == count
        polled.close()
