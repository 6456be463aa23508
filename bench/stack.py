"""A whole go-trader stack under a real supervisord, in a temp dir, on free loopback ports.

Tests and benchmarks use the repo's own supervisord.conf (copied beside a generated config, with the
program interpreter pointed at this venv), so what is tested is what ``make run`` runs.
The bus keys are made in the stack's key directory before it starts, as ``make run`` does;
a test talks to the stack with ``stack.security()`` (the read-only key unless it asks for a
service's). Everything started here is stopped by PID at the end; nothing is ever killed by name.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.ports import free_port
from common.bus_auth import READER, BusSecurity, generate_keys
from config.settings import Config, load_config, parse_config
from services.go_trader import supervisord_rpc, wait_for_shutdown
from services.runtime import bus_security
from services.supervisor_conf import write as write_engines

REPO = Path(__file__).resolve().parents[1]
CORE_PROGRAMS = ("marketdata", "portfolio", "pricer", "gateway")
ENGINES = ("signals-spot", "signals-options")  # the default engines' programs
PROGRAMS = (*CORE_PROGRAMS[:3], *ENGINES, CORE_PROGRAMS[3])


def stack_config(base: dict[str, Any] | None = None, **feed: Any) -> dict[str, Any]:
    """config/default.json with free ports, a local state file and an accelerated feed."""
    cfg = json.loads((REPO / "config" / "default.json").read_text()) if base is None else json.loads(json.dumps(base))
    cfg["state_file"] = "state/state.json"
    cfg["create_state_dir"] = True
    cfg["endpoints"] = {
        name: {"pub": f"tcp://127.0.0.1:{free_port()}", "rep": f"tcp://127.0.0.1:{free_port()}"}
        for name in ("marketdata", "signals", "portfolio", "pricer")
    }
    if "engines" not in cfg:  # the default split, on free ports (spot on endpoints.signals)
        cfg["engines"] = {"spot": {"strategies": "spot", **cfg["endpoints"]["signals"]},
                          "options": {"strategies": "options", "pub": f"tcp://127.0.0.1:{free_port()}",
                                      "rep": f"tcp://127.0.0.1:{free_port()}"}}
    cfg.setdefault("gateway", {})["port"] = free_port()
    cfg.setdefault("feed", {}).update({"speed": 36_000, **feed})
    return cfg


def keep_programs(conf: str, keep: tuple[str, ...]) -> str:
    """supervisord.conf without the ``[program:NAME]`` sections whose NAME is not in ``keep``."""
    parts = re.split(r"(?m)^(?=\[)", conf)
    dropped = {f"[program:{name}]" for name in CORE_PROGRAMS if name not in keep}
    return "".join(p for p in parts if p.split("\n", 1)[0].strip() not in dropped)


def config_in(state_dir: Path, create_state_dir: bool = False) -> Config:
    """The stack's config with its state in ``state_dir`` (which the portfolio creates only when
    ``create_state_dir``), for services run in-process."""
    raw = stack_config()
    raw["state_file"] = str(state_dir / "state.json")
    raw["create_state_dir"] = create_state_dir
    return parse_config(raw)


def stack_security(config: dict[str, Any], workdir: Path, identity: str = READER) -> BusSecurity:
    """The keys of ``identity`` for services run on ``config`` from ``workdir``, made if missing."""
    cfg = parse_config(config, base_dir=Path(workdir))
    generate_keys(cfg.bus.keys_dir)
    return bus_security(cfg, identity)


class Stack:
    """supervisord + the five services; ``with Stack(tmp_path) as s:`` starts and stops it."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 core: tuple[str, ...] = CORE_PROGRAMS, engines: tuple[str, ...] | None = None,
                 supervisord: str = "services.forking_supervisord") -> None:
        """``core`` and ``engines`` (engine names; None: all) choose what runs here: a stack
        standing for one host of several runs some of them. ``supervisord``: the module run as
        supervisord (``supervisor.supervisord`` execs every program)."""
        self.dir = Path(workdir)
        self.config = config or stack_config()
        self.core = core
        self.engines = engines
        self.supervisord = supervisord
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def write_files(self) -> None:
        (self.dir / "run" / "logs").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.security()
        conf = (REPO / "supervisord.conf").read_text().replace("%(here)s/.venv/bin/python", sys.executable)
        self.conf_path.write_text(keep_programs(conf, self.core))
        write_engines(load_config(self.config_path), self.conf_path, sys.executable, self.engines)
        self.env["GO_TRADER_CONFIG"] = str(self.config_path)
        self.env["PYTHONPATH"] = str(REPO)

    def security(self, identity: str = READER) -> BusSecurity:
        """Keys to talk to this stack's bus as ``identity``; they are made if the stack has none yet."""
        return stack_security(self.config, self.dir, identity)

    @property
    def config_path(self) -> Path:
        return self.dir / "config.json"

    @property
    def conf_path(self) -> Path:
        return self.dir / "supervisord.conf"

    @property
    def sock_path(self) -> Path:
        return self.dir / "run" / "supervisor.sock"

    @property
    def state_path(self) -> Path:
        return self.dir / "state" / "state.json"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.config['gateway']['port']}"

    def start(self, wait: bool = True) -> "Stack":
        self.write_files()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.supervisord, "-n", "-c", str(self.conf_path)],
            cwd=self.dir, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if wait:
            self.wait_running()
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            pids = self.program_pids()
            self.proc.send_signal(signal.SIGTERM)  # supervisord stops every program, then exits
            if not wait_for_shutdown(lambda: self.proc.poll() is not None, self.sock_path, 40):
                self.proc.kill()
                self.proc.wait()
                for pid in pids:  # never leave a service behind when supervisord hung
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.proc = None
        hung = self.killed_for_not_stopping()
        if hung:
            raise RuntimeError(f"{', '.join(hung)} did not stop on SIGTERM within stopwaitsecs and supervisord "
                               f"killed them: a service must stop when asked; logs in {self.dir / 'run/logs'}")

    def killed_for_not_stopping(self) -> list[str]:
        """The programs supervisord SIGKILLed because they outlived stopwaitsecs after SIGTERM
        (a kill by a test, ``kill -9``, is logged differently and is not one of them)."""
        log = self.dir / "run" / "logs" / "supervisord.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return sorted(set(re.findall(r"killing '([^']+)' \(\d+\) with SIGKILL", text)))

    def rpc(self) -> Any:
        """supervisord's XML-RPC ``supervisor`` namespace, in this process: polling state through
        it costs no supervisorctl interpreter start-up."""
        return supervisord_rpc(self.sock_path)

    def program_pids(self) -> list[int]:
        return [info["pid"] for info in self.rpc().getAllProcessInfo() if info["pid"] > 0]

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control ---------------------------------------------------------------------------
    def ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf_path), *args],
            cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=60, check=check,
        )

    def states(self) -> dict[str, str]:
        """Each program's state as ``supervisorctl status`` names both (``group:name`` in a group)."""
        return {info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}": info["statename"]
                for info in self.rpc().getAllProcessInfo()}

    @property
    def programs(self) -> tuple[str, ...]:
        """Every program of this stack: the core services and one per engine of its config."""
        names = self.engines if self.engines is not None else tuple(self.config.get("engines", ("spot", "options")))
        return (*self.core, *(f"signals-{name}" for name in names))

    def wait_running(self, programs: tuple[str, ...] | None = None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"supervisord exited with {self.proc.returncode}; logs in {self.dir / 'run/logs'}")
            try:
                states = self.states()
            except OSError:  # the socket is not there yet
                states = {}
            if all(states.get(p) == "RUNNING" for p in programs or self.programs):
                return
            time.sleep(0.05)
        raise TimeoutError(f"programs not RUNNING after {timeout}s: {states}; logs: {self.logs_tail()}")

    def pid(self, program: str) -> int:
        """The program's pid, 0 while it is not running (as ``supervisorctl pid``)."""
        return self.rpc().getProcessInfo(program)["pid"]

    def freeze(self, program: str, seconds: float) -> None:
        """Stop ``program`` (SIGSTOP) for ``seconds`` of wall time, then let it go on (SIGCONT),
        as a stalled process or machine would: it neither dies nor is restarted. RuntimeError when
        it is not running: its pid reads 0 then, and a signal to pid 0 would stop this process's
        whole group (the test itself, and every pytest worker with it)."""
        pid = self.pid(program)
        if pid <= 0:
            raise RuntimeError(f"cannot freeze {program}: it is not running (pid {pid})")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def logs_tail(self, lines: int = 15) -> str:
        out = []
        for log in sorted((self.dir / "run" / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    # --- HTTP ---------------------------------------------------------------------------------
    def http(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.gateway_url + path, timeout=timeout) as resp:
                body = resp.read()
                return resp.status, json.loads(body) if resp.headers.get_content_type() == "application/json" else body
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body)
            except ValueError:
                return err.code, body

    def status(self) -> dict[str, Any]:
        code, doc = self.http("/status")
        if code != 200:
            raise RuntimeError(f"/status answered {code}: {doc}")
        return doc

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                last_error = exc
            time.sleep(0.1)  # most predicates ask the gateway: 10 a second is news soon enough
        raise TimeoutError(f"{what} not reached in {timeout}s (last error: {last_error}); logs:\n{self.logs_tail()}")

    def journal(self) -> list[dict[str, Any]]:
        path = self.state_path.parent / "journal.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
