"""go-trader: stop returns only when supervisord, its programs and their ports are gone, so a
start right after it works; errors name what was tried and what to do."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import load_config
from services.go_trader import main, pid_alive, port_is_free, read_pid, tcp_ports
from tests.support.stack import PROGRAMS, Stack, stack_config


def go_trader(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.go_trader", *args, "--conf", str(stack.conf_path),
                           "--config", str(stack.config_path)],
                          cwd=stack.dir, env=stack.env, capture_output=True, text=True, timeout=120)


def test_stop_then_start_back_to_back_never_meets_a_busy_port(tmp_path: Path):
    stack = Stack(tmp_path, stack_config())
    stack.write_files()
    ports = tcp_ports(load_config(stack.config_path))
    assert len(ports) == 9  # four services x (PUB, REP) + the gateway's HTTP
    try:
        for round_ in range(2):
            started = go_trader(stack, "start")
            assert started.returncode == 0, started.stderr
            stack.wait_running(PROGRAMS)
            pid = read_pid(tmp_path / "run" / "supervisord.pid")
            assert pid is not None and pid_alive(pid)
            programs = stack.program_pids()
            assert len(programs) == len(PROGRAMS)
            stopped = go_trader(stack, "stop")
            assert stopped.returncode == 0, stopped.stderr
            # the moment stop returns: supervisord and every program are gone, every port is free
            assert not pid_alive(pid), f"round {round_}: supervisord still alive"
            assert not [p for p in programs if pid_alive(p)], f"round {round_}: a program outlived stop"
            assert all(port_is_free(h, p) for h, p in ports), f"round {round_}: a port is still held"
    finally:
        pid = read_pid(tmp_path / "run" / "supervisord.pid")
        if pid is not None and pid_alive(pid):
            stack.ctl("shutdown")


def test_start_refuses_while_a_supervisord_runs(tmp_path: Path):
    stack = Stack(tmp_path, stack_config())
    stack.write_files()
    (tmp_path / "run" / "supervisord.pid").write_text(str(__import__("os").getpid()))  # "running": this process
    refused = go_trader(stack, "start")
    assert refused.returncode == 2
    assert "supervisord is already running" in refused.stderr and "go-trader stop" in refused.stderr


def test_stop_with_nothing_running_says_so_and_succeeds(tmp_path: Path):
    stack = Stack(tmp_path, stack_config())
    stack.write_files()
    done = go_trader(stack, "stop")
    assert done.returncode == 0 and "not running" in done.stderr


@pytest.mark.parametrize("text, pid", [("4242\n", 4242), ("0", None), ("-1", None), ("4242x", None), ("", None)])
def test_a_pidfile_names_a_process_only_with_a_positive_number(tmp_path: Path, text: str, pid: int | None):
    (tmp_path / "supervisord.pid").write_text(text)
    assert read_pid(tmp_path / "supervisord.pid") == pid


def test_a_pidfile_of_0_is_not_a_running_supervisord(tmp_path: Path):
    stack = Stack(tmp_path, stack_config())
    stack.write_files()
    (tmp_path / "run" / "supervisord.pid").write_text("0")  # os.kill(0, 0) would answer for this process's group
    done = go_trader(stack, "stop")
    assert done.returncode == 0 and "not running" in done.stderr


def test_port_check_sees_a_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free("127.0.0.1", sock.getsockname()[1])


def test_bad_config_and_missing_service_are_clear_errors(tmp_path: Path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"strategies": 5}))
    assert main(["stop", "--config", str(bad), "--conf", str(tmp_path / "supervisord.conf")]) == 2
    assert capsys.readouterr().err.startswith(f"go-trader: config {bad}: ")
    assert main(["start", "--config", str(tmp_path / "missing.json")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["restart", "--config", "config/default.json"]) == 2
    assert "name a program" in capsys.readouterr().err
    assert main(["logs", "--conf", str(tmp_path / "supervisord.conf")]) == 2
    assert "no logs in" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["frobnicate"], ["--bogus"]])
def test_unknown_command_is_an_argparse_error(argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
