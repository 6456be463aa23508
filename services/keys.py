"""``make keys``: create the bus key pairs the config's ``bus.keys_dir`` lacks (a pair per service
and the read-only ``reader`` key), in a 0700 directory with 0600 secret files. Keys that exist
are kept, so ``make run`` runs it every time.

Run: ``python -m services.keys [--config PATH]``.
"""
from __future__ import annotations

import argparse
import os
import sys

from common.bus_auth import BusKeysError, generate_keys
from config.settings import ConfigError, load_config
from services.runtime import DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.keys", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("GO_TRADER_CONFIG") or DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    try:
        directory = load_config(args.config).bus.keys_dir
        created = generate_keys(directory)
    except (ConfigError, BusKeysError, OSError) as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    if created:
        print(f"keys: created {', '.join(created)} in {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
