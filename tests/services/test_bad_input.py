"""Bad input never corrupts anything: a bad state file stops the portfolio with a clear error
and is left untouched; garbage on the bus gets an error reply and the service keeps serving."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import zmq

from common.bus import Requester, decode_envelope
from tests.support.stack import REPO, stack_config, stack_security

pytestmark = pytest.mark.timeout(120)


def write_config(tmp_path: Path) -> tuple[Path, dict]:
    cfg = stack_config()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path, cfg


def run_service(name: str, config: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"services.{name}", "--config", str(config)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("content, fragment", [
    (b'{"version": 1, "strategies": {', "invalid JSON at line 1 column 31"),
    (b"", "the file is empty"),
    (b"\x00\xff garbage", "not UTF-8"),
    (b'[1, 2, 3]', "top level"),
    (b'{"version": 99, "strategies": {}}', "newer"),
    (b'{"version": 1, "journal_seq": 0, "strategies": {"momentum-btc": {"cash": "lots"}}}', "strategies.momentum-btc"),
])
def test_unreadable_state_stops_the_portfolio_and_is_never_overwritten(tmp_path, content, fragment):
    config, cfg = write_config(tmp_path)
    state = tmp_path / "state" / "state.json"
    state.parent.mkdir()
    state.write_bytes(content)
    proc = run_service("portfolio", config, tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert str(state) in err and fragment.lower() in err.lower(), err
    assert state.read_bytes() == content


def test_garbage_requests_get_error_replies_and_the_service_keeps_serving(tmp_path):
    config, cfg = write_config(tmp_path)
    security = stack_security(cfg, tmp_path, "signals")  # the key that may order: garbage must get past auth
    procs = [run_service("marketdata", config, tmp_path), run_service("portfolio", config, tmp_path)]
    ctx = zmq.Context()
    try:
        for name in ("marketdata", "portfolio"):
            endpoint = cfg["endpoints"][name]["rep"]
            client = Requester(ctx, endpoint, "test", timeout_ms=1000, retries=30, security=security)
            assert client.request("status") is not None  # up
            for garbage in (b"\xc1\xc1\xc1", msgpack.packb([1, 2]), b"x" * 100_000,
                            msgpack.packb({"v": 7, "type": "status", "id": "a", "ts": 1, "source": "x", "seq": 0,
                                           "body": None})):
                raw = ctx.socket(zmq.REQ)
                raw.setsockopt(zmq.LINGER, 0)
                security.connect(raw, endpoint)
                raw.send(garbage)
                assert raw.poll(3000), f"{name} did not answer garbage"
                reply = decode_envelope(raw.recv())
                assert reply.body["ok"] is False and reply.body["error"]["code"] == "bad_request"
                raw.close()
            from common.bus import RemoteError
            with pytest.raises(RemoteError) as err:
                client.request("order" if name == "portfolio" else "history", {"nonsense": True})
            assert err.value.code in ("bad_order", "bad_request")
            assert client.request("status") is not None  # still serving
            client.close()
        assert all(p.poll() is None for p in procs)
    finally:
        ctx.term()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=30)
    assert [p.returncode for p in procs] == [0, 0]
