"""What an options decision is made on, as records: the market (``OptionsMarket``: chains and IV
from the pricer); the strategy's book is ``trading.book_view.BookView``.

The bus carries them as msgpack dicts; ``from_dict`` builds the record at the edge and a
RecordError names the bad field, so the engine never meets a half-formed reply.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.model import RecordError, read_number, read_object
from options.chain import OptionChain


def _numbers(values: Sequence[Any]) -> bool:
    """Every value an int or a float, never a bool: by their set of types (a year of daily vols
    from the bus is floats alone), else value by value (subclasses of both count)."""
    if set(map(type, values)) <= {float, int}:
        return True
    return not any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)


@dataclass(frozen=True, eq=False, slots=True)  # a numpy column: compare by identity
class IvReading:
    """The pricer's ``iv`` reply: the ATM implied vol now and its daily history (oldest first;
    NaN for a day without one), from which a strategy ranks it."""

    atm_iv: float
    history: np.ndarray

    @classmethod
    def from_dict(cls, d: Any, where: str = "iv reply") -> "IvReading":
        read_object(d, where)
        history = d.get("history")
        if not isinstance(history, Sequence) or isinstance(history, (str, bytes)) \
                or not _numbers(history):
            raise RecordError(f"{where}.history: expected a list of numbers, got {str(history)[:80]}")
        return cls(read_number(d, "atm_iv", where, minimum=0.0), np.asarray(history, dtype=np.float64))


@dataclass(frozen=True, slots=True)
class OptionsMarket:
    """The chains (by underlying and venue) and the IV (by underlying) a batch of options
    strategies decides on."""

    chains: Mapping[tuple[str, str], OptionChain]
    iv: Mapping[str, IvReading]

    @classmethod
    def from_replies(cls, chains: Mapping[tuple[str, str], OptionChain],
                     iv_replies: Mapping[str, Any]) -> "OptionsMarket":
        """Decoded chains and the pricer's ``iv`` replies; every underlying of a chain needs its IV."""
        missing = sorted({u for u, _ in chains} - set(iv_replies))
        if missing:
            raise RecordError(f"iv reply: none for {', '.join(missing)}")
        return cls(dict(chains), {u: IvReading.from_dict(r, f"iv reply ({u})") for u, r in iv_replies.items()})

    def chain(self, underlying: str, venue: str) -> OptionChain:
        return self.chains[(underlying, venue)]
