"""The house rule: everything that decides is pure. Walk the imports of the pure packages and
fail if one reaches the network, the bus or the wall clock."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PURE_PACKAGES = ("strategies", "options")
PURE_COMMON = ("ohlcv", "timeframes", "model", "ledger", "risk", "portfolio", "engine", "clock", "bars", "market_sim",
               "summary", "status", "config", "config_schema", "discord", "metrics", "messages")
FORBIDDEN_MODULES = {"zmq", "requests", "ccxt", "socket", "urllib", "http", "aiohttp", "ib_async", "ib_insync",
                     "subprocess"}
FORBIDDEN_CALLS = {("time", "time"), ("time", "time_ns"), ("time", "monotonic"), ("datetime", "now"),
                   ("datetime", "utcnow"), ("date", "today"), ("time", "localtime"), ("time", "gmtime")}


def pure_files() -> list[Path]:
    files = [p for pkg in PURE_PACKAGES for p in (REPO / pkg).rglob("*.py")]
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
        assert root not in FORBIDDEN_MODULES, f"{path.relative_to(REPO)} reaches {name} (imported in {via.relative_to(REPO)})"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            pair = (node.func.value.id, node.func.attr)
            assert pair not in FORBIDDEN_CALLS, f"{path.relative_to(REPO)}:{node.lineno} reads the wall clock ({'.'.join(pair)})"


def test_the_walker_catches_a_violation(tmp_path, monkeypatch):
    """A test that cannot fail proves nothing: the walker must flag a module that imports zmq."""
    bad = tmp_path / "bad.py"
    bad.write_text("import zmq\n")
    assert "zmq" in transitive_imports(bad)
