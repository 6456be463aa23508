"""The strategy's book as an options decision sees it (``BookView``, the portfolio's
``positions`` reply), as a record. Numpy-free: the portfolio and the gateway import it.

The bus carries it as a msgpack dict; ``from_dict`` builds the record at the edge and a
RecordError names the bad field, so the engine never meets a half-formed reply.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.model import RecordError, read_int, read_number, read_object, read_str
from options.contracts import OptionPosition


@dataclass(frozen=True, slots=True)
class BookView:
    """One strategy's book as an options decision sees it: money, option positions (with their
    latest marks and greeks) and the coins of its underlying it holds (a wheel's assignment)."""

    strategy_id: str
    ts: int  # the portfolio's market time
    cash: float
    capital: float
    portfolio_value: float
    peak_value: float
    option_positions: tuple[OptionPosition, ...]
    spot_quantity: float = 0.0
    spot_cost_basis: float = 0.0  # USD per coin of that holding

    def positions(self, venue: str, underlying: str) -> list[OptionPosition]:
        """The option positions of one venue and underlying, as the strategies and the scorer take them."""
        return [p for p in self.option_positions if p.contract.venue == venue and p.contract.underlying == underlying]

    def to_dict(self) -> dict[str, Any]:
        """The ``positions`` reply."""
        return {"strategy_id": self.strategy_id, "ts": self.ts, "cash": self.cash, "capital": self.capital,
                "portfolio_value": self.portfolio_value, "peak_value": self.peak_value,
                "option_positions": [p.to_dict() for p in self.option_positions],
                "spot_quantity": self.spot_quantity, "spot_cost_basis": self.spot_cost_basis}

    @classmethod
    def from_dict(cls, d: Any, where: str = "positions reply") -> "BookView":
        read_object(d, where)
        positions = d.get("option_positions")
        if not isinstance(positions, list):
            raise RecordError(f"{where}.option_positions: expected a list, got {type(positions).__name__}")
        held = tuple(OptionPosition.from_dict(p, f"{where}.option_positions[{i}]") for i, p in enumerate(positions))
        return cls(read_str(d, "strategy_id", where), read_int(d, "ts", where), read_number(d, "cash", where),
                   read_number(d, "capital", where), read_number(d, "portfolio_value", where),
                   read_number(d, "peak_value", where), held, read_number(d, "spot_quantity", where, minimum=0.0),
                   read_number(d, "spot_cost_basis", where, minimum=0.0))
