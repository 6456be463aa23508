"""The seed's script paths (scripts/check_strategy.py, backtest/backtest_options.py, ...) run the
commands that replaced them, with the same arguments, so a seed user's habits and cron lines
keep working. ``python3 scripts/x.py`` may be a system Python without our dependencies: then
the script is run again under this checkout's .venv."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"


def forward(target: str, prefix: tuple[str, ...] = ()) -> None:
    """Run ``target`` ("module:function", called with an argv list) on ``prefix`` + this
    script's arguments, and exit with its status."""
    venv_python = VENV / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(venv_python, [str(venv_python), sys.argv[0], *sys.argv[1:]])
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    module, function = target.split(":")
    sys.exit(getattr(importlib.import_module(module), function)([*prefix, *sys.argv[1:]]))
