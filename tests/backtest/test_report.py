"""Reports: every file written, the HTML self-contained, and its plots render in Chromium."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from backtest.report import spot_report_data, write_report
from backtest.spot import run_spot_backtest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


@pytest.fixture(scope="module")
def report(btc_1h, tmp_path_factory):
    result = run_spot_backtest("sma-btc", "sma_crossover", "BTC/USDT", "1h", btc_1h.tail(3000), None)
    out = tmp_path_factory.mktemp("report")
    return result, write_report(spot_report_data(result), out)


def distinct_colours(path: Path) -> int:
    """Colours in a PNG (Pillow comes with matplotlib)."""
    from PIL import Image

    with Image.open(path) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24))


def test_every_file_is_written(report):
    result, paths = report
    metrics = json.loads(paths["metrics.json"].read_text())
    assert metrics["fills"] == len(result.fills) and metrics["trades"] == result.metrics["trades"]
    trades = list(csv.DictReader(paths["trades.csv"].open()))
    assert len(trades) == sum(1 for f in result.fills if f.side == "sell") + (result.fills[-1].side == "buy")
    fills = list(csv.DictReader(paths["fills.csv"].open()))
    assert [float(f["price"]) for f in fills] == [f.price for f in result.fills]
    equity = np.loadtxt(paths["equity.csv"], delimiter=",", skiprows=1)
    assert np.array_equal(equity[:, 1], result.equity)
    assert paths["report.png"].read_bytes()[:8] == PNG_SIGNATURE
    assert distinct_colours(paths["report.png"]) > 20


def test_html_is_self_contained_with_the_sections(report):
    _, paths = report
    page = paths["report.html"].read_text()
    assert "data:image/png;base64," in page
    for section in ("Metrics", "Monthly returns", "Trades", "max_drawdown_pct", "profit_factor"):
        assert section in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_report_renders_in_headless_chromium(report, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs it)")
    _, paths = report
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                    paths["report.html"].resolve().as_uri()],
                   check=True, capture_output=True, timeout=90)
    assert shot.stat().st_size > 50_000  # a blank page is a few kB
    assert distinct_colours(shot) > 50  # price line, green/red markers, drawdown fill, table shading
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
