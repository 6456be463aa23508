"""``go-trader``: the seed's command, and supervisorctl with the right config behind one name.

    go-trader --config FILE             everything in the foreground, as ``make run`` (Ctrl-C stops)
    go-trader --config FILE --once      one cycle of every strategy, the summary, then stop
    go-trader start | stop | status | restart SERVICE | logs
    go-trader reset-risk STRATEGY_ID    re-arm a kill switch, circuit breaker or daily loss limit

``stop`` returns only when supervisord and every service have exited and every port in the
config is free again, so ``go-trader stop && go-trader start`` (and ``make stop start``)
never meets "Another program is already listening". Every supervisorctl call passes this
checkout's supervisord.conf, so it never talks to a system-wide supervisord.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from supervisor.xmlrpc import SupervisorTransport

from config.settings import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "supervisord.conf"  # its run/ directory (pidfile, socket, logs) sits beside it
STOP_TIMEOUT_S = 60.0
DEFAULT_CONFIG = "config/default.json"


class CommandError(RuntimeError):
    """What was tried, what failed and what to do next; printed on stderr with exit status 2."""


def tcp_ports(cfg: Config) -> list[tuple[str, int]]:
    """Every (host, port) the stack listens on: each service's PUB and REP, and the gateway's HTTP."""
    ports = [(cfg.gateway.host, cfg.gateway.port)]
    for endpoints in cfg.endpoints.values():
        for endpoint in (endpoints.pub, endpoints.rep):
            parts = urlsplit(endpoint)
            if parts.scheme == "tcp" and parts.port:
                ports.append((parts.hostname or "127.0.0.1", parts.port))
    return sorted(set(ports))


def port_is_free(host: str, port: int) -> bool:
    """Bindable as the services bind (SO_REUSEADDR, so TIME_WAIT does not count as taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int | None:
    """The pid in ``path``; None when it is missing or names no process: not a number, or 0 or
    below, which os.kill reads as this process's group (0) or every process it may signal (-1),
    so a damaged pidfile would pass for a running supervisord."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def wait_until(done: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(poll_s)
    return done()


def supervisord_rpc(sock: Path) -> Any:
    """The ``supervisor`` XML-RPC namespace of the supervisord on unix socket ``sock``, in this process."""
    transport = SupervisorTransport(serverurl=f"unix://{sock}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def wait_for_shutdown(done: Callable[[], bool], sock: Path, timeout_s: float) -> bool:
    """Whether ``done()`` came true within ``timeout_s`` of asking supervisord on ``sock`` to shut
    down. supervisord stops its programs a priority group at a time and notices one gone only when
    its poll loop wakes, once a second unless its socket has work: a getState every 50 ms keeps it
    waking, so a stop takes as long as the programs take to exit (same order, same signals) rather
    than a second per group."""
    def done_or_wake() -> bool:
        if done():
            return True
        try:
            supervisord_rpc(sock).getState()
        except (OSError, http.client.HTTPException, xmlrpc.client.Error):
            pass  # the socket is closed already: supervisord is on its way out
        return False
    return wait_until(done_or_wake, timeout_s, poll_s=0.05)


def supervisorctl(conf: Path, *args: str) -> int:
    return subprocess.call([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args])


def _env(config: str) -> dict[str, str]:
    return {**os.environ, "GO_TRADER_CONFIG": str(Path(config).resolve())}


def _checked(config: str) -> Config:
    try:
        return load_config(config)
    except ConfigError as exc:
        raise CommandError(f"config {config}: {exc}") from None


def start(config: str, foreground: bool, conf: Path = CONF) -> int:
    """supervisord with every program (one per signal engine); refuses while another copy holds
    the pidfile."""
    from services.keys import main as make_keys
    from services.supervisor_conf import write as write_engines

    cfg = _checked(config)
    pidfile = conf.parent / "run" / "supervisord.pid"
    pid = read_pid(pidfile)
    if pid is not None and pid_alive(pid):
        raise CommandError(f"supervisord is already running (pid {pid}, {pidfile}); `go-trader stop` first")
    (conf.parent / "run" / "logs").mkdir(parents=True, exist_ok=True)
    if make_keys(["--config", config]) != 0:  # the bus keys the services need, as `make run` makes them
        raise CommandError(f"could not create the bus keys for {config}; see the message above")
    write_engines(cfg, conf)
    command = [sys.executable, "-m", "services.forking_supervisord", "-c", str(conf)] + (["-n"] if foreground else [])
    if foreground:
        os.execve(sys.executable, command, _env(config))
    return subprocess.call(command, env=_env(config), cwd=conf.parent)


def stop(config: str, conf: Path = CONF, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Shut supervisord down and wait for it, its programs and their ports."""
    cfg = _checked(config)
    pidfile = conf.parent / "run" / "supervisord.pid"
    pid = read_pid(pidfile)
    if pid is None or not pid_alive(pid):
        print(f"go-trader: not running (no live supervisord in {pidfile})", file=sys.stderr)
    else:
        supervisorctl(conf, "shutdown")
        if not wait_for_shutdown(lambda: not pid_alive(pid), conf.parent / "run" / "supervisor.sock", timeout_s):
            raise CommandError(f"supervisord (pid {pid}) is still running {timeout_s:.0f} s after shutdown; "
                               f"see {conf.parent / 'run' / 'logs' / 'supervisord.log'}, then `kill {pid}`")
    busy = [f"{h}:{p}" for h, p in tcp_ports(cfg) if not port_is_free(h, p)]
    if busy and not wait_until(lambda: all(port_is_free(h, p) for h, p in tcp_ports(cfg)), timeout_s):
        still = [f"{h}:{p}" for h, p in tcp_ports(cfg) if not port_is_free(h, p)]
        raise CommandError(f"ports still in use after stop: {', '.join(still)}; "
                           f"`ss -ltnp` shows which process holds them")
    return 0


def running_supervisorctl(conf: Path, *args: str) -> int:
    """supervisorctl ``args``, once a live supervisord is behind ``conf``; else CommandError
    (supervisorctl itself would only say that a socket file is missing)."""
    pidfile = conf.parent / "run" / "supervisord.pid"
    pid = read_pid(pidfile)
    if pid is None or not pid_alive(pid):
        raise CommandError(f"{args[0]}: the stack is not running (no live supervisord in {pidfile}); start it with "
                           f"`go-trader start` (or `go-trader --config FILE` in the foreground)")
    return supervisorctl(conf, *args)


def logs(conf: Path = CONF) -> int:
    files = sorted((conf.parent / "run" / "logs").glob("*.log"))
    if not files:
        raise CommandError(f"no logs in {conf.parent / 'run' / 'logs'}; start the stack first (`go-trader start`)")
    return subprocess.call(["tail", "-n", "50", "-F", *map(str, files)])


def reset_risk(config: str, strategy_id: str) -> int:
    """Ask the running portfolio (its REP endpoint in the config) to re-arm ``strategy_id``;
    it journals the reset and /status shows it. Prints the reply as JSON."""
    import zmq

    from common.bus import RemoteError, Requester, RequestFailed
    from common.bus_auth import OPERATOR, BusKeysError
    from services.runtime import bus_security

    cfg = _checked(config)
    endpoint = cfg.endpoints["portfolio"].rep
    try:
        security = bus_security(cfg, OPERATOR)  # only the operator key may re-arm a strategy
    except BusKeysError as exc:
        raise CommandError(f"reset-risk: {exc}") from None
    ctx = zmq.Context()
    req = Requester(ctx, endpoint, "go-trader", timeout_ms=2000, retries=2, security=security)
    try:
        reply = req.request("reset_risk", {"strategy_id": strategy_id})
    except RequestFailed:
        raise CommandError(f"reset-risk: the portfolio at {endpoint} (endpoints.portfolio.rep in {config}) did not "
                           f"answer; start the stack (`go-trader start`) and try again") from None
    except RemoteError as exc:
        raise CommandError(f"reset-risk {strategy_id}: the portfolio at {endpoint} refused: {exc.message}") from None
    finally:
        req.close()
        ctx.term()
    print(json.dumps(reply))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="go-trader", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=("start", "stop", "status", "restart", "logs", "reset-risk"),
                        help="manage the background stack; without one, run in the foreground")
    parser.add_argument("service", nargs="?", help="for restart: a program name, or all; for reset-risk: a strategy id")
    parser.add_argument("--config", default=os.environ.get("GO_TRADER_CONFIG") or DEFAULT_CONFIG)
    parser.add_argument("--once", action="store_true", help="one cycle of every strategy, then stop")
    parser.add_argument("--conf", type=Path, default=CONF, help="supervisord.conf (default: this checkout's)")
    args = parser.parse_args(argv)
    try:
        if args.once:
            from services.once import run_once

            return run_once(args.config)
        if args.command is None:
            return start(args.config, foreground=True, conf=args.conf)
        if args.command == "start":
            return start(args.config, foreground=False, conf=args.conf)
        if args.command == "stop":
            return stop(args.config, conf=args.conf)
        if args.command == "status":
            return running_supervisorctl(args.conf, "status")
        if args.command == "restart":
            if not args.service:
                raise CommandError("restart: name a program (marketdata, portfolio, pricer, gateway, signals-<engine>) "
                                   "or all")
            return running_supervisorctl(args.conf, "restart", args.service)
        if args.command == "reset-risk":
            if not args.service:
                raise CommandError(
                    "reset-risk: name a strategy id (as in /status), e.g. `go-trader reset-risk momentum-btc`")
            return reset_risk(args.config, args.service)
        return logs(args.conf)
    except CommandError as exc:
        print(f"go-trader: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
