"""A service never opens a socket without its bus keys: it stops with the file and the fix."""
from __future__ import annotations

import json
import sys

import pytest

from common.bus_auth import generate_keys
from config.settings import parse_config
from services.keys import main as keys_main
from services.runtime import ServiceRuntime
from tests.support.stack import stack_config


@pytest.fixture
def config(tmp_path, monkeypatch):
    raw = stack_config()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["services.pricer", "--config", str(path)])
    return path, parse_config(raw, base_dir=tmp_path)


def test_a_service_without_keys_stops_naming_the_directory_and_the_command(config, tmp_path, capsys):
    _path, cfg = config
    rt = ServiceRuntime("pricer")
    try:
        with pytest.raises(SystemExit) as stopped:
            rt.bind_publisher(cfg.endpoints["pricer"].pub)
    finally:
        rt.close()
    message = str(stopped.value.code)
    assert message.startswith("pricer: bus key directory ") and str(tmp_path / "state" / "keys") in message
    assert "make keys" in message
    assert '"event":"bus_keys_unreadable"' in capsys.readouterr().out


def test_a_service_finds_its_own_keys_through_its_config(config):
    _path, cfg = config
    generate_keys(cfg.bus.keys_dir)
    rt = ServiceRuntime("pricer")
    try:
        rt.bind_publisher(cfg.endpoints["pricer"].pub)
        assert rt.security.identity == "pricer" and rt.security.directory == cfg.bus.keys_dir
    finally:
        rt.close()


def test_make_keys_creates_them_once(config, capsys):
    path, cfg = config
    assert keys_main(["--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == (f"keys: created marketdata, signals, portfolio, pricer, gateway, "
                                               f"reader, operator in {cfg.bus.keys_dir}")
    assert keys_main(["--config", str(path)]) == 0
    assert capsys.readouterr().out == ""


def test_make_keys_names_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"strategies": []}')
    assert keys_main(["--config", str(bad)]) == 2
    assert "strategies: must list at least one strategy" in capsys.readouterr().err
