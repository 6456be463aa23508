"""A bus anyone can tap: on a live stack, every message of every publisher matches docs/BUS.md
(common/messages.py), and the README's tap example runs and prints both kinds of signal."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter

import msgpack
import pytest
import zmq

from common.messages import ENVELOPE, MESSAGES, message_problems
from tests.support.stack import REPO, Stack, stack_config

pytestmark = pytest.mark.timeout(180)

SPEED = 72_000  # twice the stack's default sim clock: the same 200 market hours in half the wall time
TAP_SECONDS = 10.0
SERVICES = ("marketdata", "portfolio", "pricer")  # and every signal engine (config `engines`)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("bus"), stack_config(speed=SPEED)) as running:
        yield running


def readme_tap_example() -> str:
    """The README's python block that taps the signal stream."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    [block] = [b for b in blocks if "sub.recv_multipart()" in b]
    return block


def test_every_message_on_the_bus_is_in_docs_bus_md(stack):
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    security = stack.security()  # the read-only key, each endpoint's server key pinned
    for service in SERVICES:
        security.connect(sub, stack.config["endpoints"][service]["pub"])
    for engine in stack.config["engines"].values():
        security.connect(sub, engine["pub"])
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    seen: Counter = Counter()
    problems: dict[str, str] = {}
    deadline = time.monotonic() + TAP_SECONDS
    try:
        while time.monotonic() < deadline:
            if not sub.poll(200):
                continue
            topic, raw = sub.recv_multipart()
            env = msgpack.unpackb(raw)
            assert sorted(env) == sorted(f.name for f in ENVELOPE), env
            engine = env["source"].startswith("signals-")  # signals-spot, signals-options: declared as signals
            seen[(env["type"], "signals" if engine else env["source"])] += 1
            for problem in message_problems(topic.decode(), env["type"], env["source"], env["body"]):
                problems.setdefault(problem, topic.decode())
    finally:
        sub.close()
        ctx.term()
    assert not problems, "\n".join(f"{p} (first on {t})" for p, t in problems.items())
    declared = {(m.type, m.publisher) for m in MESSAGES}
    assert set(seen) == declared, f"not seen in {TAP_SECONDS:g} s: {sorted(declared - set(seen))}"
    assert seen[("options_signal", "signals")] >= 1 and seen[("signal", "signals")] >= 10


def test_the_readme_tap_example_prints_spot_and_options_signals(stack, tmp_path):
    code = readme_tap_example()
    assert code.count('"tcp://127.0.0.1:5562"') == code.count('"tcp://127.0.0.1:5568"') == 1
    script = tmp_path / "tap.py"
    engines = stack.config["engines"]
    keys = stack.security().directory  # the README reads run/keys, the default key directory
    script.write_text(code.replace('"tcp://127.0.0.1:5562"', repr(engines["spot"]["pub"]))
                      .replace('"tcp://127.0.0.1:5568"', repr(engines["options"]["pub"]))
                      .replace('"run/keys/', f'"{keys}/'))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()

    def kinds() -> set[str]:
        return {"options" if line.split()[2] in ("deribit", "ibkr") else "spot" for line in list(lines) if line.strip()}

    deadline = time.monotonic() + 60
    try:
        while kinds() != {"spot", "options"} and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(10)
        reader.join(5)
    assert kinds() == {"spot", "options"}, (lines[:5], proc.stderr.read())
    spot = next(line.split() for line in lines if line.split()[2] not in ("deribit", "ibkr"))
    assert spot[0].startswith("signal.") and spot[3] in ("-1", "0", "1") and float(spot[4]) > 0
    options = next(line for line in lines if line.split()[2] in ("deribit", "ibkr"))
    assert options.split()[3] in ("BTC", "ETH") and options.rstrip().endswith("]")
