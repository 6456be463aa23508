#!/usr/bin/env python3
"""The seed's `python3 scripts/check_options_ibkr.py ARGS`: runs `check-options-ibkr ARGS` (services/cli.py)."""
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scripts.seed_command import forward

    forward("services.cli:check_options_ibkr_main")
