#!/usr/bin/env python3
"""The seed's `python3 backtest/backtest_options.py ARGS`: runs `backtest options ARGS` (backtest/cli.py)."""
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scripts.seed_command import forward

    forward("backtest.cli:main", ("options",))
