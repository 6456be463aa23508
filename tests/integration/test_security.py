"""Security: everything binds loopback by default, and secrets from the environment never
reach a log, the state or the journal."""
from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from config.settings import load_config
from tests.support.http_thread import serve_in_thread
from tests.support.stack import PROGRAMS, REPO, Stack, stack_config

pytestmark = pytest.mark.timeout(180)
CANARY = "CANARY-7f3e9b1d-do-not-log"


@pytest.mark.parametrize("name", ["default.json", "live.json"])
def test_shipped_configs_bind_only_loopback(name):
    cfg = load_config(REPO / "config" / name)
    for service, eps in cfg.endpoints.items():
        for endpoint in (eps.pub, eps.rep):
            assert endpoint.startswith("tcp://127.0.0.1:") or endpoint.startswith("ipc://"), (service, endpoint)
    assert cfg.gateway.host == "127.0.0.1" and cfg.gateway.allow_remote is False


def listening_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP sockets ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                hex_ip = local.split(":")[0]
                if width == 8:
                    ip = ".".join(str(int(hex_ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    ip = "::1" if hex_ip == "0" * 24 + "01000000" else hex_ip
                found.append(ip)
    return found


class WebhookSink(ThreadingHTTPServer):
    """A Discord stand-in on 127.0.0.1 whose URL path carries the canary secret."""

    def __init__(self) -> None:
        self.posts: list[bytes] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return

            def do_POST(self):
                sink.posts.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(204)
                self.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)


def test_sockets_bind_loopback_and_the_canary_secret_appears_nowhere(tmp_path):
    sink = WebhookSink()
    serve_in_thread(sink)
    webhook = f"http://127.0.0.1:{sink.server_address[1]}/api/webhooks/{CANARY}"
    env = {"DISCORD_WEBHOOK_URL": webhook, "GO_TRADER_TOKEN": CANARY, "BINANCE_API_SECRET": CANARY}
    try:
        with Stack(tmp_path, stack_config(), env=env) as stack:
            stack.wait_for(lambda: sum(v["trade_count"] for v in stack.status()["strategies"].values()) > 5,
                           60, "trades")
            stack.wait_for(lambda: sink.posts, 30, "a Discord summary posted to the local webhook")
            for program in PROGRAMS:
                addresses = listening_addresses(stack.pid(program))
                assert addresses and set(addresses) <= {"127.0.0.1", "::1"}, (program, addresses)
            code, _ = stack.http("/status")
            assert code == 200
    finally:
        sink.shutdown()
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()
              and p.name != "config.json"]
    assert leaked == [], f"the secret leaked into {leaked}"
    assert CANARY not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
