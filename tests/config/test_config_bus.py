"""The bus section of the config: nothing binds beyond loopback unless ``bus.allow_remote`` says
so, and the key directory sits beside the state unless it is named."""
from __future__ import annotations

from pathlib import Path

import pytest

from config.schema import endpoint_binds_beyond_loopback, local_alias
from config.settings import ConfigError, parse_config

STRATEGY = {"id": "momentum-btc", "type": "spot", "strategy": "momentum", "symbol": "BTC/USDT", "timeframe": "1h",
            "capital": 1000, "max_drawdown_pct": 60}


def raw_config(**top):
    return {"strategies": [STRATEGY], **top}


def errors_of(raw) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.errors


@pytest.mark.parametrize("endpoint, host", [
    ("tcp://127.0.0.1:5560", None),
    ("tcp://127.0.0.2:5560", None),
    ("tcp://localhost:5560", None),
    ("tcp://[::1]:5560", None),
    ("ipc:///tmp/go-trader-signals", None),
    ("tcp://0.0.0.0:5560", "0.0.0.0"),
    ("tcp://[::]:5560", "[::]"),
    ("tcp://eth0:5560", "eth0"),
    ("tcp://lo:5560", "lo"),  # interface names are refused, lo too: what one has is not in the config
    ("tcp://192.168.1.20:5560", "192.168.1.20"),
    ("tcp://[fe80::1]:5560", "[fe80::1]"),
    ("tcp://trader.example.com:5560", "trader.example.com"),
])
def test_which_endpoints_listen_beyond_loopback(endpoint, host):
    assert endpoint_binds_beyond_loopback(endpoint) == host


@pytest.mark.parametrize("endpoint, alias", [
    ("tcp://127.0.0.1:5565", "ipc://@go-trader-bus/127.0.0.1:5565"),
    ("tcp://127.0.0.2:5565", "ipc://@go-trader-bus/127.0.0.2:5565"),
    ("tcp://localhost:5565", "ipc://@go-trader-bus/localhost:5565"),
    ("tcp://[::1]:5565", "ipc://@go-trader-bus/[::1]:5565"),
    ("tcp://10.0.0.5:5565", None),  # another host's port: only tcp reaches it
    ("tcp://0.0.0.0:5565", None),
    ("tcp://eth0:5565", None),
    ("ipc:///tmp/go-trader-portfolio", None),
])
def test_a_loopback_endpoint_has_a_local_alias_named_after_its_host_and_port(endpoint, alias):
    assert local_alias(endpoint) == alias


def test_local_ipc_is_on_unless_turned_off():
    assert parse_config(raw_config()).bus.local_ipc is True
    assert parse_config(raw_config(bus={"local_ipc": False})).bus.local_ipc is False
    assert errors_of(raw_config(bus={"local_ipc": 1})) == ["bus.local_ipc: expected true or false, got 1"]


@pytest.mark.parametrize("endpoint, host", [
    ("tcp://0.0.0.0:5566", "0.0.0.0"),
    ("tcp://[::]:5566", "[::]"),
    ("tcp://eth0:5566", "eth0"),
    ("tcp://10.0.0.5:5566", "10.0.0.5"),
])
def test_a_bind_beyond_loopback_is_refused_naming_the_json_path(endpoint, host):
    errors = errors_of(raw_config(endpoints={"pricer": {"pub": endpoint}}))
    assert errors == [f'endpoints.pricer.pub: {host} listens beyond loopback; use 127.0.0.1 or ipc://, or set '
                      f'bus.allow_remote = true (clients still need the bus keys), got "{endpoint}"']


def test_every_remote_endpoint_is_named_at_once():
    errors = errors_of(raw_config(endpoints={"marketdata": {"pub": "tcp://0.0.0.0:5560", "rep": "tcp://0.0.0.0:5561"},
                                             "portfolio": {"rep": "tcp://eth0:5565"}}))
    assert [e.split(":")[0] for e in errors] == ["endpoints.marketdata.pub", "endpoints.marketdata.rep",
                                                 "endpoints.portfolio.rep"]


def test_allow_remote_lets_the_bus_bind_everywhere():
    config = parse_config(raw_config(endpoints={"pricer": {"pub": "tcp://0.0.0.0:5566"}},
                                     bus={"allow_remote": True}))
    assert config.endpoints["pricer"].pub == "tcp://0.0.0.0:5566" and config.bus.allow_remote is True


def test_the_gateways_own_remote_rule_is_separate():
    errors = errors_of(raw_config(bus={"allow_remote": True}, gateway={"host": "0.0.0.0"}))
    assert errors == ['gateway.host: a host other than 127.0.0.1, localhost, ::1 needs gateway.allow_remote = true '
                      '(requests then need the bearer token from GO_TRADER_TOKEN), got "0.0.0.0"']


@pytest.mark.parametrize("bus, message", [
    ({"allow_remote": "yes"}, 'bus.allow_remote: expected true or false, got "yes"'),
    ({"keys_dir": 7}, "bus.keys_dir: expected a string, got 7"),
    ({"keys_dir": ""}, 'bus.keys_dir: must be a path, got ""'),
    ({"key_dir": "k"}, 'bus.key_dir: unknown key (did you mean "keys_dir"?)'),
])
def test_bad_bus_settings_name_the_path(bus, message):
    assert errors_of(raw_config(bus=bus)) == [message]


def test_keys_sit_beside_the_state_unless_named(tmp_path):
    config = parse_config(raw_config(state_file="data/live/state.json"), base_dir=tmp_path)
    assert config.bus.keys_dir == tmp_path / "data" / "live" / "keys"
    named = parse_config(raw_config(bus={"keys_dir": "/etc/go-trader/keys"}), base_dir=tmp_path)
    assert named.bus.keys_dir == Path("/etc/go-trader/keys")
    relative = parse_config(raw_config(bus={"keys_dir": "secrets"}), base_dir=tmp_path)
    assert relative.bus.keys_dir == tmp_path / "secrets"
