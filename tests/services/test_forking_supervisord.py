"""services/forking_supervisord.py: which programs are forked, how a forked service exits, and a
whole stack whose services are supervisord's forked children sharing its pages."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import services.forking_supervisord as fs
from bench.harness import smaps_rollup_mb
from services.forking_supervisord import (
    changed_sources,
    fork_or_exec,
    forkable_module,
    run_forked_service,
    source_stamps,
)
from tests.support.stack import PROGRAMS, Stack

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("filename, argv, expected", [
    (PY, [PY, "-m", "services.portfolio"], "services.portfolio"),
    (PY, [PY, "-m", "services.signals", "--engine", "spot"], "services.signals"),
    (os.path.dirname(PY) + "/./python" if PY.endswith("/python") else PY, [PY, "-m", "services.pricer"],
     "services.pricer"),
    ("/usr/bin/python3", ["/usr/bin/python3", "-m", "services.portfolio"], None),  # another interpreter
    (PY, [PY, "-X", "importtime", "-m", "services.portfolio"], None),  # interpreter options: exec
    (PY, [PY, "-m", "services.once"], None),  # not a preloaded service
    (PY, [PY, "-m"], None),
    (PY, [PY, "script.py"], None),
])
def test_only_this_python_running_a_service_module_is_forked(filename, argv, expected):
    assert forkable_module(filename, argv) == expected


def test_a_changed_or_removed_source_sends_the_program_to_exec(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    modules = {"a": types.SimpleNamespace(__file__=str(a)), "b": types.SimpleNamespace(__file__=str(b)),
               "outside": types.SimpleNamespace(__file__="/usr/lib/python3/x.py"), "builtin": types.SimpleNamespace()}
    stamps = source_stamps(modules, root=tmp_path)  # type: ignore[arg-type]
    assert list(stamps) == [str(a), str(b)]  # path order, whatever the hash seed
    argv = [PY, "-m", "services.portfolio"]
    assert changed_sources(stamps) == [] and fork_or_exec(PY, argv, {}, stamps, {}) == ("services.portfolio", "")
    b.write_text("y = 22\n")  # another size: changed even within the clock's resolution
    a.unlink()
    assert changed_sources(stamps) == [str(a), str(b)]
    module, why = fork_or_exec(PY, argv, {}, stamps, {})
    assert module is None
    assert why == (f"go-trader: exec instead of fork for services.portfolio: 2 source file(s) changed since "
                   f"supervisord started, first {a}; restart supervisord to fork again\n")
    assert fork_or_exec(PY, [PY, "-m", "services.once"], {}, stamps, {}) == (None, "")  # exec, nothing to say


@pytest.mark.parametrize("program_env, supervisord_env, why", [
    ({"PYTHONPATH": "/srv/x", "A": "1"}, {"PYTHONPATH": "/srv/x", "A": "2"}, ""),  # other variables: fork
    ({"PYTHONMALLOC": "malloc"}, {}, "PYTHONMALLOC"),
    ({}, {"PYTHONPATH": "/srv/x"}, "PYTHONPATH"),  # the program's environment drops it
    ({"PYTHONPATH": "/srv/y", "PYTHONTRACEMALLOC": "5"}, {"PYTHONPATH": "/srv/x"}, "PYTHONPATH, PYTHONTRACEMALLOC"),
])
def test_a_program_whose_environment_sets_the_interpreter_otherwise_is_execd(program_env, supervisord_env, why):
    module, said = fork_or_exec(PY, [PY, "-m", "services.pricer"], program_env, {}, supervisord_env)
    if not why:
        assert (module, said) == ("services.pricer", "")
    else:
        assert module is None
        assert said == (f"go-trader: exec instead of fork for services.pricer: its environment sets the "
                        f"interpreter otherwise ({why})\n")


def _forked_exit(tmp_path: Path, main: object, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``main`` as a forked service in a child of this process: (exit code, stdout, stderr)."""
    module = types.ModuleType("fake_service")
    module.__file__ = str(tmp_path / "fake_service.py")
    module.main = main  # type: ignore[attr-defined]
    sys.modules["fake_service"] = module
    tmp_path.mkdir(exist_ok=True)
    out, err = tmp_path / "out", tmp_path / "err"
    try:
        pid = os.fork()
        if pid == 0:  # the child: as supervisord's, with its stdio on files
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT), 2)
            run_forked_service("fake_service", [PY, "-m", "fake_service", "--flag"], env or {"A": "1"})
        _, status = os.waitpid(pid, 0)
    finally:
        del sys.modules["fake_service"]
    return os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()


def test_a_forked_service_gets_its_argv_env_and_name_and_exits_with_mains_code(tmp_path):
    def main() -> int:
        print(json.dumps({"argv": sys.argv, "env": dict(os.environ), "frozen": gc.get_freeze_count(),
                          "comm": Path("/proc/self/comm").read_text().strip()}))
        return 3

    code, out, err = _forked_exit(tmp_path, main, {"A": "1", "SUPERVISOR_PROCESS_NAME": "signals-options-2"})
    seen = json.loads(out)
    assert code == 3 and err == ""
    assert seen["argv"] == [str(tmp_path / "fake_service.py"), "--flag"]
    assert seen["env"] == {"A": "1", "SUPERVISOR_PROCESS_NAME": "signals-options-2"}
    assert seen["comm"] == "signals-options"  # Linux keeps 15 characters
    assert seen["frozen"] > 1000  # what it inherited is out of its collector's reach


def test_forked_services_draw_different_numpy_global_random_numbers(tmp_path):
    import numpy.random

    def main() -> int:
        print(numpy.random.random())
        return 0

    first, second = (float(_forked_exit(tmp_path / name, main)[1]) for name in ("a", "b"))
    assert first != second  # each reseeds the generator it inherited


def test_a_forked_service_that_raises_prints_the_traceback_and_exits_1(tmp_path):
    def main() -> int:
        raise ValueError("bad port in config")

    code, _, err = _forked_exit(tmp_path, main)
    assert code == 1
    assert "Traceback" in err and "ValueError: bad port in config" in err


@pytest.mark.parametrize("exit_with, code, message", [(None, 0, ""), (2, 2, ""), ("no config", 1, "no config\n")])
def test_a_forked_service_exits_as_sys_exit_says(tmp_path, exit_with, code, message):
    def main() -> int:
        raise SystemExit(exit_with)

    assert _forked_exit(tmp_path, main)[0::2] == (code, message)


def test_message_ids_and_parent_are_the_forked_childs_own():
    from common import bus
    from services import runtime

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, json.dumps([bus.new_message_id(), runtime._PARENT_PID, os.getpid()]).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id, child_parent, child_pid = json.loads(os.read(read, 4096))
    os.close(read)
    os.close(write)
    assert child_id.split("-")[0] == f"{child_pid:x}" != bus.new_message_id().split("-")[0]
    assert child_parent == os.getpid()


def test_install_trims_the_heap_after_importing_and_freezing_everything():
    """The imports' freed scratch goes back to the OS before the first fork: else every
    service inherits it, resident."""
    code = (
        "import gc, json, sys\n"
        "import services.forking_supervisord as fs\n"
        "seen = []\n"
        "fs.trim_heap = lambda: seen.append([gc.get_freeze_count() > 0, 'services.gateway' in sys.modules])\n"
        "fs.install()\n"
        "print(json.dumps(seen))\n"
    )
    done = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == [[True, True]]


def test_the_stacks_services_are_forked_children_sharing_supervisords_pages(tmp_path):
    with Stack(tmp_path) as stack:
        supervisord = stack.proc.pid
        for program in PROGRAMS:
            pid = stack.pid(program)
            status = Path(f"/proc/{pid}/status").read_text()
            assert f"PPid:\t{supervisord}\n" in status, program
            assert Path(f"/proc/{pid}/comm").read_text().strip() == program[:15]
            assert b"services.forking_supervisord" in Path(f"/proc/{pid}/cmdline").read_bytes()  # never exec'd
            # Anonymous pages are shared only through fork: numpy's, zmq's and our modules' objects.
            assert smaps_rollup_mb(pid)["Shared_Dirty"] > 5, program
        def log(program: str) -> str:
            return (stack.dir / "run" / "logs" / f"{program}.log").read_text()

        stack.wait_for(lambda: all('"event":"started"' in log(p) for p in PROGRAMS), 30, "every service's start")
        for program in PROGRAMS:
            started = next(json.loads(line) for line in log(program).splitlines() if '"event":"started"' in line)
            assert started["parent"] == supervisord and started["dies_with_parent"] is True, program


@pytest.mark.parametrize("allowed, moved_to, returned", [
    ({0, 1}, {0}, {0, 1}),  # two cores: supervisord on the lower one, the fill path's
    ({2, 3, 4, 5}, {2, 3}, {2, 3, 4, 5}),
    ({3}, None, None),  # one core: nothing to split, it stays
])
def test_supervisord_moves_off_the_fill_path_and_returns_the_cores_its_programs_get_back(
        monkeypatch, allowed, moved_to, returned):
    moves: list[set[int]] = []
    monkeypatch.setattr(fs.os, "sched_getaffinity", lambda _pid: set(allowed))
    monkeypatch.setattr(fs.os, "sched_setaffinity", lambda _pid, cores: moves.append(set(cores)))
    assert fs.off_the_fill_path() == (None if returned is None else frozenset(returned))
    assert moves == ([] if moved_to is None else [moved_to])


def test_supervisord_stays_where_it_is_when_the_os_refuses(monkeypatch):
    def refuse(_pid, _cores):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(fs.os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(fs.os, "sched_setaffinity", refuse)
    assert fs.off_the_fill_path() is None  # its programs are then given nothing back: they start where it is


def test_a_program_whose_cores_cannot_be_given_back_still_starts_and_its_log_says_why():
    code = (  # in a process of its own: install freezes the collector's objects and patches supervisord
        "import os, types\n"
        "import services.forking_supervisord as fs\n"
        "from supervisor import options\n"
        "options.ServerOptions.execve = lambda _o, filename, _a, _e: print('exec', filename)\n"
        "fs.install(modules=(), cores=frozenset({0, 1}))\n"
        "def refuse(_pid, _cores):\n"
        "    raise OSError(22, 'Invalid argument')\n"
        "os.sched_setaffinity = refuse\n"
        "log = types.SimpleNamespace(write=lambda fd, text: print('log', fd, text, end=''))\n"
        "options.ServerOptions.execve(log, '/bin/true', ['/bin/true'], {})\n"
    )
    done = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines()[-2:] == [
        "log 2 go-trader: cannot give /bin/true cores [0, 1] back: Invalid argument", "exec /bin/true"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to move between")
def test_a_program_is_given_back_the_cores_supervisord_started_with_before_it_execs():
    """supervisord moved off the fill path (``off_the_fill_path``); the program it execs (a shell
    printing its own affinity here) starts on every core supervisord had."""
    code = (
        "import os\n"
        "import services.forking_supervisord as fs\n"
        "from supervisor import options\n"
        "cores = fs.off_the_fill_path()\n"
        "assert cores is not None and os.sched_getaffinity(0) < cores\n"
        "fs.install(modules=(), cores=cores)\n"
        "options.ServerOptions.execve(None, '/bin/sh', ['/bin/sh', '-c', 'grep Cpus_allowed_list /proc/self/status'],"
        " dict(os.environ))\n"
    )
    done = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    listed = set()  # the kernel's list: "0-1", "0,2-3"
    for part in done.stdout.split(":")[1].strip().split(","):
        low, _, high = part.partition("-")
        listed |= set(range(int(low), int(high or low) + 1))
    assert listed == os.sched_getaffinity(0)
