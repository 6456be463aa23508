"""The house rules of the import graph. Everything that decides is pure: walk the imports of the
pure packages and fail if one reaches the network, the bus or the wall clock. And every import
points one way, down the layers (common <- strategies, options <- config <- trading <- services,
backtest <- bench), with no cycle between modules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PURE_PACKAGES = ("strategies", "options", "config", "trading", "services/views")
PURE_COMMON = ("ohlcv", "timeframes", "model", "clock", "bars", "csv_bars", "market_sim", "messages")
FORBIDDEN_MODULES = {"zmq", "requests", "ccxt", "socket", "urllib", "http", "aiohttp", "ib_async", "ib_insync",
                     "subprocess"}
FORBIDDEN_CALLS = {("time", "time"), ("time", "time_ns"), ("time", "monotonic"), ("datetime", "now"),
                   ("datetime", "utcnow"), ("date", "today"), ("time", "localtime"), ("time", "gmtime")}


def pure_files() -> list[Path]:
    files = [p for pkg in PURE_PACKAGES for p in (REPO / pkg).glob("*.py")]
    files += [REPO / "common" / f"{name}.py" for name in PURE_COMMON if (REPO / "common" / f"{name}.py").exists()]
    return sorted(files)


def module_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def local_module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def transitive_imports(start: Path) -> dict[str, Path]:
    """Every module reached from ``start``: ours followed, third-party recorded by name."""
    seen: dict[str, Path] = {}
    stack = [start]
    visited: set[Path] = set()
    while stack:
        path = stack.pop()
        if path in visited:
            continue
        visited.add(path)
        for name in module_imports(ast.parse(path.read_text())):
            seen.setdefault(name, path)
            local = local_module_file(name)
            if local is not None:
                stack.append(local)
    return seen


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_pure_module_reaches_no_io_or_clock(path: Path):
    for name, via in transitive_imports(path).items():
        root = name.split(".")[0]
        assert root not in FORBIDDEN_MODULES, \
            f"{path.relative_to(REPO)} reaches {name} (imported in {via.relative_to(REPO)})"
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            pair = (node.func.value.id, node.func.attr)
            assert pair not in FORBIDDEN_CALLS, \
                f"{path.relative_to(REPO)}:{node.lineno} reads the wall clock ({'.'.join(pair)})"


def test_the_walker_catches_a_violation(tmp_path, monkeypatch):
    """A test that cannot fail proves nothing: the walker must flag a module that imports zmq."""
    bad = tmp_path / "bad.py"
    bad.write_text("import zmq\n")
    assert "zmq" in transitive_imports(bad)


# Each package's layer: a module may import its own package and any package of a lower layer,
# never one above it, nor a sibling of its own layer.
LAYERS = {"common": 0, "strategies": 1, "options": 1, "config": 2, "trading": 3, "services": 4, "backtest": 4,
          "bench": 5}
TOP_LEVEL = ("scripts", "examples", "tests")  # may import anything; nothing may import them
SEED_PATHS = {"backtest.backtest_options"}  # the seed's script path, a shim run as a script (scripts/seed_command.py)


def own_modules() -> dict[str, Path]:
    """Every module of ours by dotted name (packages by their ``__init__``)."""
    found = {}
    for top in (*LAYERS, *TOP_LEVEL):
        for path in (REPO / top).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours an import names (``from trading.portfolio import X``: trading.portfolio)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, lazy imports included (they still point somewhere)."""
    graph = {}
    for name, path in modules.items():
        targets = {resolve(imported, modules) for imported in module_imports(ast.parse(path.read_text()))}
        graph[name] = {t for t in targets if t is not None and t != name and not name.startswith(t + ".")}
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, targets in graph.items():
        top = "scripts" if name in SEED_PATHS else name.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other == top:
                continue
            if other in TOP_LEVEL:
                if top not in TOP_LEVEL:
                    bad.append(f"{name} imports {target}: nothing may import {other}/")
            elif top in LAYERS and (LAYERS[other] > LAYERS[top] or LAYERS[other] == LAYERS[top]):
                bad.append(f"{name} imports {target}: {other}/ is not below {top}/")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_import_points_down_the_layers():
    assert layer_violations(import_graph(own_modules())) == []


def test_no_two_modules_import_each_other_even_through_others():
    assert cycles(import_graph(own_modules())) == []


def test_the_layer_and_cycle_checks_catch_what_they_forbid():
    graph = {"common.model": {"trading.ledger"}, "trading.ledger": {"common.model"}, "bench.harness": {"tests.support"},
             "services.signals": {"backtest.spot"}, "options.chain": {"strategies.trend"}, "tests.x": {"bench.stack"},
             "trading.engine": {"options.chain", "common.model"}}
    assert layer_violations(graph) == [
        "common.model imports trading.ledger: trading/ is not below common/",
        "bench.harness imports tests.support: nothing may import tests/",
        "services.signals imports backtest.spot: backtest/ is not below services/",
        "options.chain imports strategies.trend: strategies/ is not below options/",
    ]
    assert cycles(graph) == [["common.model", "trading.ledger"]]
