"""supervisord that starts go-trader's services by fork, from one copy of their code.

Every Python service carries 12-19 MB of private heap before any data: the code objects,
module dicts and types of numpy, pyzmq, msgpack and our own modules. Started by exec, six
services each build their own copy. This supervisord imports the services once, freezes those
objects out of the collector's reach (``gc.freeze``), and starts each program whose command is
``<this python> -m <a service module> [args]`` by ``fork`` alone: the child runs the module's
``main()`` on pages it shares with supervisord and its siblings until it writes to them. Any
other command, and any program after our code changed on disk since supervisord started, is
exec'd as plain supervisord would, so a restart never runs stale code.

supervisord itself runs on the cores off the spot fill path (``common.cores.split_cores``): it
reads every program's log pipe, and the fill path's services write to them at each close, so
on their core it took that core in a close's burst (traced at 36,000x: it and another process
held the spot engine off its core for 4.7 ms of a close). It reads no config, so it moves
whatever ``cpu.split_cores`` says; each program is given back the cores supervisord started
with before it starts, and places itself from there as its config says.

Everything else is supervisord's own: the child is its direct child with the stdio pipes,
process group, directory, umask and environment it prepared for exec, so ``kill -9`` of a
program's pid, autorestart, stop signals and logs behave exactly as before. Run plain
``supervisord`` (``.venv/bin/supervisord -c supervisord.conf``) to exec every program.

Run: ``python -m services.forking_supervisord [supervisord options]``.
"""
from __future__ import annotations

import atexit
import gc
import importlib
import io
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, NoReturn

from supervisor import options as supervisor_options
from supervisor import supervisord

from common.cores import split_cores
from services.runtime import trim_heap

REPO = Path(__file__).resolve().parents[1]
SERVICE_MODULES = ("services.marketdata", "services.signals", "services.portfolio", "services.pricer",
                   "services.gateway")
# What services import only once running (read from the maps of forked ones): loaded here, one
# copy serves them all.
LATE_IMPORTS = ("numpy.random", "options.normal_ufuncs", "unicodedata")
# What supervisord's signal setup (and Python's own start-up) leaves installed; a forked
# service starts from Python's defaults, as an exec'd one would.
_RESET_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2)


def _stamp(path: str) -> tuple[int, int] | None:
    """(mtime_ns, size) of ``path``; None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def source_stamps(modules: dict[str, ModuleType], root: Path = REPO) -> dict[str, tuple[int, int]]:
    """The stamp of the source file of every loaded module under ``root``, in path order, so
    that the first changed file named is the same on every run."""
    paths = sorted({getattr(module, "__file__", None) or "" for module in list(modules.values())})
    stamps = {path: _stamp(path) for path in paths if path.startswith(str(root) + os.sep)}
    return {path: stamp for path, stamp in stamps.items() if stamp is not None}


def changed_sources(stamps: dict[str, tuple[int, int]]) -> list[str]:
    """The files of ``stamps`` that are gone or differ now."""
    return [path for path, stamp in stamps.items() if _stamp(path) != stamp]


def forkable_module(filename: str, argv: list[str], executable: str = sys.executable,
                    modules: tuple[str, ...] = SERVICE_MODULES) -> str | None:
    """The service module ``argv`` runs, when it is ``<executable> -m <module> ...`` for one
    of ``modules``; else None. Same path, not same binary: another virtualenv's python links to
    the same interpreter but imports another site-packages."""
    if os.path.normpath(filename) != os.path.normpath(executable):
        return None
    if len(argv) < 3 or argv[1] != "-m" or argv[2] not in modules:
        return None
    return argv[2]


def name_process(name: str) -> None:
    """Show ``name`` as the process's name (``ps -o comm``, top): a forked child keeps
    supervisord's command line. Linux keeps 15 characters."""
    try:
        Path("/proc/self/comm").write_text(name[:15])
    except OSError:
        pass  # not Linux: the name is cosmetic


def run_forked_service(module: str, argv: list[str], env: dict[str, str]) -> NoReturn:
    """Become ``python -m module argv[3:]`` in this forked child and exit with its code.

    Never returns into supervisord's frames: their objects (its sockets, on fds the child has
    closed and may reuse) must not be finalized here."""
    code = 1
    gc.freeze()  # supervisord's own objects too: this child's collector never writes to them
    try:
        for signum in _RESET_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(env)
        numpy_random = sys.modules.get("numpy.random")
        if numpy_random is not None:  # its global generator was seeded once, in supervisord
            numpy_random.seed()
        name_process(env.get("SUPERVISOR_PROCESS_NAME", module))
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True,
                                      write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                      line_buffering=True, write_through=True)
        sys.argv = [sys.modules[module].__file__ or module, *argv[3:]]
        atexit._clear()  # supervisord's, if it had any, are not this service's
        result = sys.modules[module].main()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
        import traceback

        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def fork_or_exec(filename: str, argv: list[str], env: Mapping[str, str], stamps: dict[str, tuple[int, int]],
                 supervisord_env: Mapping[str, str] = os.environ,
                 modules: tuple[str, ...] = SERVICE_MODULES) -> tuple[str | None, str]:
    """(the module to run in a forked child, or None to exec; why not, when exec). A program
    forks only as what it would have exec'd: our sources unchanged since supervisord imported
    them, and no PYTHON* variable (PYTHONPATH, PYTHONMALLOC, ...) other than supervisord's."""
    module = forkable_module(filename, argv, modules=modules)
    if module is None:
        return None, ""
    changed = changed_sources(stamps)
    if changed:
        return None, (f"go-trader: exec instead of fork for {module}: {len(changed)} source file(s) changed "
                      f"since supervisord started, first {changed[0]}; restart supervisord to fork again\n")
    settings = interpreter_settings(env) ^ interpreter_settings(supervisord_env)
    if settings:
        return None, (f"go-trader: exec instead of fork for {module}: its environment sets the interpreter "
                      f"otherwise ({', '.join(sorted({k for k, _ in settings}))})\n")
    return module, ""


def interpreter_settings(env: Mapping[str, str]) -> set[tuple[str, str]]:
    """The PYTHON* variables of ``env``: read once, when an interpreter starts."""
    return {(k, v) for k, v in env.items() if k.startswith("PYTHON")}


def off_the_fill_path() -> frozenset[int] | None:
    """Move this process to the cores off the spot fill path; the cores it had, which its
    programs get back (``install``). None, and it stays where it is, with fewer than two cores
    or an OS without affinity (or one that refuses it)."""
    try:
        allowed = frozenset(os.sched_getaffinity(0))
        split = split_cores(allowed)
        if split is None:
            return None
        os.sched_setaffinity(0, split[1])
    except (AttributeError, OSError):
        return None
    return allowed


def install(modules: tuple[str, ...] = SERVICE_MODULES,
            cores: frozenset[int] | None = None) -> dict[str, tuple[int, int]]:
    """Import ``modules``, freeze what is loaded, and make supervisord fork them; the source
    stamps it holds them to. ``cores``: the affinity each program is given back before it
    starts, forked or exec'd (``off_the_fill_path``)."""
    for name in (*modules, *LATE_IMPORTS):
        importlib.import_module(name)
    stamps = source_stamps(sys.modules)
    real_execve = supervisor_options.ServerOptions.execve

    def execve(options: Any, filename: str, argv: list[str], env: dict[str, str]) -> Any:
        if cores is not None:
            try:
                os.sched_setaffinity(0, cores)
            except OSError as exc:  # the host took cores away since: it starts where supervisord is
                options.write(2, f"go-trader: cannot give {argv[0]} cores {sorted(cores)} back: {exc.strerror}\n")
        module, why_not = fork_or_exec(filename, argv, env, stamps, modules=modules)
        if module is not None:
            run_forked_service(module, argv, env)
        if why_not:
            options.write(2, why_not)  # the program's own log
        return real_execve(options, filename, argv, env)

    supervisor_options.ServerOptions.execve = execve
    gc.collect()
    gc.freeze()  # the collector in a child never writes to these objects' headers
    trim_heap()  # the imports' freed scratch (1.2 MB): every child would inherit it, resident
    return stamps


def main() -> None:
    install(cores=off_the_fill_path())
    supervisord.main()


if __name__ == "__main__":
    main()
