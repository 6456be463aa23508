"""Engines on other hosts by endpoint configuration alone: two supervisord instances, each with
its own run directory and config file, stand for two hosts on loopback. Host A runs marketdata,
the portfolio, the pricer, the gateway and the options engine; host B runs only the spot engine.
Spot trades decided on host B are filled and journaled on host A, and /status on host A shows
both engines' cycles."""
from __future__ import annotations

import shutil

import pytest

from config.settings import parse_config
from tests.support.stack import Stack, acked_fill_ids, stack_config
from trading.portfolio import journal_fills

pytestmark = pytest.mark.timeout(240)


def spot_trades(status: dict) -> int:
    return sum(v["trade_count"] for v in status["strategies"].values() if v["type"] == "spot")


def both_engines_cycling(status: dict) -> bool:
    services = status["health"]["services"]
    return all(services[name]["alive"] and (services[name]["cycle_count"] or 0) > 0
               for name in ("signals-spot", "signals-options"))


def test_engines_on_two_hosts_by_endpoint_configuration_alone(tmp_path):
    config = stack_config()
    host_a = Stack(tmp_path / "host-a", config, engines=("options",))
    host_b = Stack(tmp_path / "host-b", config, core=(), engines=("spot",))
    host_a.security()  # the bus keys, made on host A and copied to host B as an operator would
    keys = parse_config(config, base_dir=host_a.dir).bus.keys_dir
    shutil.copytree(keys, host_b.dir / keys.relative_to(host_a.dir))
    with host_a, host_b:
        assert host_a.states() == {name: "RUNNING" for name in
                                   ("marketdata", "portfolio", "pricer", "gateway", "signals-options")}
        assert host_b.states() == {"signals-spot": "RUNNING"}
        status = host_a.wait_for(lambda: (s := host_a.status()) and spot_trades(s) >= 3 and both_engines_cycling(s)
                                 and s, 90, "spot trades from host B and cycles of both engines on host A")
        services = status["health"]["services"]
        assert services["signals-spot"]["pid"] == host_b.pid("signals-spot")
        assert services["signals-options"]["pid"] == host_a.pid("signals-options")
        assert status["cycle_count"] >= services["signals-spot"]["cycle_count"] + 1
    assert (host_a.dir / "config.json").exists() and (host_b.dir / "config.json").exists()
    assert not (host_b.dir / "state" / "state.json").exists()  # host B keeps no portfolio state
    acked = acked_fill_ids(host_b)
    journaled = {f.order_id for f in journal_fills(host_a.journal())}
    assert acked and set(acked) <= journaled, f"acked on host B but not journaled on host A: {set(acked) - journaled}"
    assert not any(log.name.startswith("signals-spot") for log in (host_a.dir / "run" / "logs").iterdir())
