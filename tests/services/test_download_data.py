"""download-data against a Binance.US replay server (klines built from the real Binance.US 1h
CSV in Binance's own JSON shape): the files it writes are the real rows, the replay feed reads
them, a second run resumes, and venue faults are retried."""
from __future__ import annotations

import numpy as np
import pytest

from common.csv_bars import load_ohlcv_csv
from common.exchange_client import CcxtSpotClient
from common.feeds import ReplayFeed
from services.download_data import download_symbol, main, resume_from
from tests.support.replay_server import BinanceReplay, Fault, ReplayServer

H = 3_600_000
SINCE = "2022-05-01"
SINCE_MS = 1_651_363_200_000
UNTIL_MS = SINCE_MS + 50 * 24 * H  # 50 days: two klines pages of 1000


@pytest.fixture
def binance(shared_data):
    replay = BinanceReplay(shared_data, UNTIL_MS + 30 * 60_000, symbols=("BTC/USDT", "ETH/USDT"))
    with ReplayServer(replay.routes()) as server:
        yield replay, server


def real_rows(shared_data, name: str, lo: int, hi: int):
    bars = load_ohlcv_csv(shared_data / "ohlcv" / "binanceus" / name)
    return bars.slice(int(np.searchsorted(bars.ts, lo)), int(np.searchsorted(bars.ts, hi)))


def test_download_writes_the_real_rows_and_the_replay_feed_reads_them(binance, shared_data, tmp_path, capsys):
    _, server = binance
    code = main(["--symbols", "BTC/USDT,ETH/USDT", "--timeframe", "1h", "--since", SINCE,
                 "--until", "2022-06-20T00:00:00Z", "--out", str(tmp_path), "--api-url", server.url, "--no-progress"])
    assert code == 0
    btc = load_ohlcv_csv(tmp_path / "BTC_USDT-1h.csv")
    expected = real_rows(shared_data, "BTC_USDT-1h.csv", SINCE_MS, UNTIL_MS)
    assert len(btc) == len(expected) == 1200
    np.testing.assert_array_equal(btc.ts, expected.ts)
    np.testing.assert_array_equal(btc.close, expected.close)  # 8-decimal strings parse back exactly
    assert "BTC/USDT: 1200 bars appended" in capsys.readouterr().out
    feed = ReplayFeed({"BTC/USDT": tmp_path / "BTC_USDT-1h.csv", "ETH/USDT": tmp_path / "ETH_USDT-1h.csv"},
                      warmup_bars=100)
    assert feed.start() == SINCE_MS + 100 * H


def test_a_second_run_resumes_after_the_last_bar(binance, tmp_path):
    replay, server = binance
    path = tmp_path / "BTC_USDT-1h.csv"
    client = CcxtSpotClient("binanceus", server.url)
    assert download_symbol(client, "BTC/USDT", "1h", SINCE_MS, SINCE_MS + 10 * H, path, progress=False) == (10, 0)
    assert resume_from(path, SINCE_MS, H) == SINCE_MS + 10 * H
    first_requests = len(server.requests)
    assert download_symbol(client, "BTC/USDT", "1h", SINCE_MS, SINCE_MS + 15 * H, path, progress=False) == (5, 0)
    [(_, query)] = [r for r in server.requests[first_requests:] if r[0] == "/api/v3/klines"]
    assert int(query["startTime"]) == SINCE_MS + 10 * H
    bars = load_ohlcv_csv(path)
    assert len(bars) == 15 and np.all(np.diff(bars.ts) == H)
    assert download_symbol(client, "BTC/USDT", "1h", SINCE_MS, SINCE_MS + 15 * H, path, progress=False) == (0, 0)


def test_faults_are_retried_with_backoff_and_bad_rows_dropped(binance, tmp_path):
    _, server = binance
    waits: list[float] = []
    server.inject("/api/v3/klines", Fault("status", status=429, retry_after=3))
    server.inject("/api/v3/klines", Fault("status", status=503))

    def poison(rows):
        rows[2][4] = "NaN"
        return rows

    server.inject("/api/v3/klines", Fault("rewrite", rewrite=poison))
    path = tmp_path / "BTC_USDT-1h.csv"
    client = CcxtSpotClient("binanceus", server.url)
    written, dropped = download_symbol(client, "BTC/USDT", "1h", SINCE_MS, SINCE_MS + 10 * H, path,
                                       progress=False, sleep=waits.append)
    assert waits == [3.0, 2.0] and (written, dropped) == (9, 1)
    assert SINCE_MS + 2 * H not in load_ohlcv_csv(path).ts


def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys):
    assert main(["--symbols", "BTC/USDT", "--since", "yesterday", "--out", str(tmp_path)]) == 2
    assert "ISO 8601" in capsys.readouterr().err
    assert main(["--symbols", "BTC/USDT", "--timeframe", "7h", "--since", SINCE, "--out", str(tmp_path)]) == 2
    assert "unknown timeframe '7h'" in capsys.readouterr().err


def test_an_unreachable_exchange_fails_cleanly_and_says_how_to_resume(binance, tmp_path, capsys):
    _, server = binance
    code = main(["--symbols", "NOPE/USDT", "--since", SINCE, "--until", "2022-05-02T00:00:00Z",
                 "--out", str(tmp_path), "--api-url", server.url, "--no-progress"])
    assert code == 1 and "run the same command again to resume" in capsys.readouterr().err
