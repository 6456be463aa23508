"""``python -m backtest`` is the ``backtest`` command."""
import sys

from backtest.cli import main

sys.exit(main())
