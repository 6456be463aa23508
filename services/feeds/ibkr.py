"""Optional: real CME micro option chains (MBT, MET) from IBKR TWS/Gateway through ib_async.

Off by default. With ``ibkr.host`` null (the default) :func:`build_chain_reader` returns None
and nothing here touches ib_async: the pricer keeps CME micro specs with Black-Scholes premiums
and Deribit marks as the proxy, exactly as without IBKR. ib_async (the maintained fork of the
archived ib_insync, same API) is imported only when a reader connects.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from common.timeframes import DAY_MS
from options.live_marks import ListedOption
from options.venues import IBKR_CME, format_instrument_name

FUTURES_ROOT = {"BTC": "MBT", "ETH": "MET"}


class IbkrUnavailable(Exception):
    """ib_async is missing or TWS/Gateway did not answer; the pricer keeps its model chain."""


@dataclass(frozen=True, slots=True)
class IbkrSettings:
    host: str
    port: int
    client_id: int


def build_chain_reader(cfg: Any) -> "IbkrChainReader | None":
    """A reader when ``cfg.ibkr.host`` is set, else None (its absence is not an error)."""
    ibkr = cfg.ibkr
    if not ibkr.host:
        return None
    return IbkrChainReader(IbkrSettings(ibkr.host, ibkr.port, ibkr.client_id))


def listed_from_chain(underlying: str, expirations: list[str], strikes: list[float]) -> list[ListedOption]:
    """CME option-chain parameters (expiry dates 'YYYYMMDD', strikes) as listed contracts,
    named the way options/contracts.py names CME micro options."""
    out = []
    for text in expirations:
        expiry_ts = IBKR_CME.expiry_ts(date(int(text[:4]), int(text[4:6]), int(text[6:8])))
        for strike in strikes:
            for is_call in (True, False):
                name = format_instrument_name(IBKR_CME, underlying, expiry_ts, float(strike), is_call)
                out.append(ListedOption(name, underlying, expiry_ts, float(strike), is_call))
    return out


class IbkrChainReader:
    """Reads ``reqSecDefOptParams`` of the front MBT/MET future on CME; connects lazily."""

    def __init__(self, settings: IbkrSettings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._ib: Any = None

    def _connect(self) -> Any:
        if self._ib is not None and self._ib.isConnected():
            return self._ib
        try:
            import ib_async
        except ImportError as exc:
            raise IbkrUnavailable(f"ibkr.host is set but ib_async is not installed: {exc}") from None
        ib = ib_async.IB()
        try:
            ib.connect(self.settings.host, self.settings.port, clientId=self.settings.client_id,
                       timeout=self.timeout_s, readonly=True)
        except Exception as exc:  # ib_async raises ConnectionRefusedError, TimeoutError, ...
            raise IbkrUnavailable(
                f"ibkr {self.settings.host}:{self.settings.port}: {type(exc).__name__}: {exc}") from None
        self._ib = ib
        return ib

    def read_chain(self, underlying: str) -> list[ListedOption]:
        """Listed CME micro options of ``underlying`` ('BTC' or 'ETH')."""
        root = FUTURES_ROOT.get(underlying)
        if root is None:
            raise ValueError(f"ibkr underlying {underlying!r}: expected one of {', '.join(FUTURES_ROOT)}")
        ib = self._connect()
        import ib_async  # present: _connect imported it

        try:
            [future] = ib.qualifyContracts(ib_async.ContFuture(root, exchange="CME"))
            params = ib.reqSecDefOptParams(root, "CME", "FUT", future.conId)
        except Exception as exc:
            raise IbkrUnavailable(f"ibkr chain {root}: {type(exc).__name__}: {exc}") from None
        chains = [p for p in params if p.exchange == "CME"]
        if not chains:
            raise IbkrUnavailable(f"ibkr chain {root}: no CME option parameters returned")
        return listed_from_chain(underlying, sorted(chains[0].expirations), sorted(chains[0].strikes))

    def close(self) -> None:
        if self._ib is not None:
            self._ib.disconnect()
            self._ib = None


class IbkrListedSource:
    """A mark source whose IBKR chains hold only the CME contracts IBKR really lists.

    Everything else (ATM vol, IV history, marks, Deribit chains) comes from ``model``, the
    pricer's usual source. The listing is read once per underlying and market day; while
    TWS/Gateway is unreachable the model's calendar chain is used and the problem is logged
    once, so IBKR being away is never an error loop.
    """

    def __init__(self, model: Any, reader: Any, log: Any = None) -> None:
        self.model = model
        self.reader = reader
        self.log = log
        self.name = f"{getattr(model, 'name', 'model')}+ibkr"
        self._listed: dict[tuple[str, int], set[tuple[int, float, bool]]] = {}
        self._warned = False

    def __getattr__(self, attr: str) -> Any:  # atm_iv, iv_history, marks: the model's
        return getattr(self.model, attr)

    def chain(self, venue: Any, underlying: str, spot: float, ts: int, horizon_days: int) -> Any:
        chain = self.model.chain(venue, underlying, spot, ts, horizon_days)
        if venue.name != IBKR_CME.name:
            return chain
        key = (underlying, ts // DAY_MS)
        if key not in self._listed:
            try:
                listed = {(o.expiry_ts, o.strike, o.is_call) for o in self.reader.read_chain(underlying)}
                self._listed = {k: v for k, v in self._listed.items() if k[1] == key[1]}  # today's only
                self._listed[key] = listed
                self._warned = False
            except IbkrUnavailable as exc:
                if not self._warned and self.log is not None:
                    self.log.warning("ibkr_chain_unavailable", detail=str(exc))
                self._warned = True
                return chain
        return chain.restricted_to(self._listed[key])
