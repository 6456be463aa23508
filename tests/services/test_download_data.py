"""download-data against a Binance.US replay server (klines built from the real Binance.US 1h
CSV in Binance's own JSON shape): the files it writes are the real rows, the replay feed reads
them, a second run resumes, and venue faults are retried."""
from __future__ import annotations

import numpy as np
import pytest

from common.csv_bars import load_ohlcv_csv
from services.download_data import download_symbol, main, resume_from
from services.feeds.exchange_client import CcxtSpotClient
from services.feeds.market import ReplayFeed
from tests.support.builders import binance_replay, deribit_replay
from tests.support.replay_server import Fault

H = 3_600_000
SINCE = "2022-05-01"
SINCE_MS = 1_651_363_200_000
UNTIL_MS = SINCE_MS + 50 * 24 * H  # 50 days: two klines pages of 1000


@pytest.fixture
def binance(shared_data):
    with binance_replay(shared_data, UNTIL_MS + 30 * 60_000) as served:
        yield served


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


# --- DVOL ------------------------------------------------------------------------------------------

DVOL_FIRST = 1_667_692_800_000  # 2022-11-06, the first day of the real DVOL file


@pytest.fixture
def deribit(shared_data):
    with deribit_replay(shared_data, dvol_page_size=200) as served:  # every 500-day chunk takes pages
        yield served


def test_dvol_download_writes_the_real_days_resumes_and_backtests_read_it(deribit, shared_data, tmp_path, capsys):
    from options.dvol_csv import read_dvol_csv

    _, server = deribit
    args = ["--dvol", "BTC", "--since", "2022-11-06", "--out", str(tmp_path), "--deribit-url", server.url + "/api/v2",
            "--no-progress"]
    assert main(args + ["--until", "2023-11-06T00:00:00Z"]) == 0
    path = tmp_path / "dvol_btc_1d.csv"
    assert "DVOL BTC: 365 days appended" in capsys.readouterr().out
    assert main(args + ["--until", "2024-09-01T00:00:00Z"]) == 0  # resumes after the last day
    assert "DVOL BTC: 300 days appended" in capsys.readouterr().out
    assert path.read_text().splitlines()[:2] == ["timestamp_ms,dvol_open,dvol_high,dvol_low,dvol_close",
                                                 f"{DVOL_FIRST},56.76,56.76,56.76,56.76"]
    got_ts, got = read_dvol_csv(path)
    want_ts, want = read_dvol_csv(shared_data / "deribit/btc_dvol_1d_2022-11-06_2024-08-31.csv")
    assert got_ts.tolist() == want_ts.tolist() and got.tolist() == want.tolist()


def test_dvol_download_retries_a_429_and_stops_cleanly_on_lasting_5xx(deribit, tmp_path, capsys, monkeypatch):
    import services.download_data as dd

    _, server = deribit
    monkeypatch.setattr(dd.time, "sleep", lambda s: None)
    args = ["--dvol", "BTC", "--since", "2022-11-06", "--until", "2022-12-06T00:00:00Z", "--out", str(tmp_path),
            "--deribit-url", server.url + "/api/v2", "--no-progress"]
    server.inject("/api/v2/public/get_volatility_index_data", Fault("status", status=429, retry_after=1))
    assert main(args) == 0
    assert "HTTP 429; retry 1/5" in capsys.readouterr().err
    server.inject("/api/v2/public/get_volatility_index_data", Fault("status", status=503), times=dd.MAX_ATTEMPTS)
    assert main(args[:5] + ["2023-01-06T00:00:00Z"] + args[6:]) == 1
    assert "HTTP 503, body is not JSON (58 bytes); run the same command again to resume" in capsys.readouterr().err
    assert len((tmp_path / "dvol_btc_1d.csv").read_text().splitlines()) == 1 + 30  # what was written stays


def test_dvol_download_refuses_an_unknown_coin(capsys):
    assert main(["--dvol", "SOL", "--since", "2024-01-01"]) == 2
    assert "expected coins among BTC,ETH" in capsys.readouterr().err
