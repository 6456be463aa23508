"""The eleven spot strategies bar by bar: O(1) per closed bar, shared between strategies.

:func:`strategies.registry.compute_signals` recomputes a whole history; the signal engine
only ever needs the newest bar's decision. Here each strategy keeps its indicators' state
(the incremental forms in :mod:`strategies.indicators`) and its edge detectors' previous bar,
and takes one bar per update. Invariant, tested on real data: after feeding the bars of a
history one by one, the signal and indicator values at every bar equal ``compute_signals`` on
that history (signals exactly, values to 1e-9 relative). Parameters, defaults and warm-up
come from :mod:`strategies.params`; the entry/exit conditions that are more than a crossing
are the same functions the vectorized strategies call.

:class:`SignalCache` holds one computation per (strategy, symbol, pair, timeframe, resolved
params), so strategies that differ only in id or interval share it. It reads the engine's bar
store through a tail source (whose bars were checked on entry, so they are not checked again)
and feeds only the bars it has not seen; when the store no longer
continues what it fed (a refetch after a gap) it rebuilds from the store's whole history.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Protocol

from common.ohlcv import OHLCV
from common.timeframes import timeframe_ms
from strategies.indicators import Bollinger, Ema, Macd, Roc, Rsi, Sma, VolumeRatio, Vwap, ZScore
from strategies.oscillators import rsi_macd_bias
from strategies.params import STRATEGY_PARAMS, Params, get_params
from strategies.registry import LatestSignal
from strategies.trend import ema_stacked, volume_confirmed

NAN = float("nan")


# --- edge detectors, one bar at a time (the incremental strategies.events) ------------------
class Cross:
    """``cross_above`` and ``cross_below`` of ``a`` against ``b`` (NaN on either bar: no event)."""

    __slots__ = ("was_le", "was_ge")

    def __init__(self) -> None:
        self.was_le = self.was_ge = False

    def update(self, a: float, b: float) -> tuple[bool, bool]:
        """(crossed above, crossed below) on this bar."""
        above, below = a > b and self.was_le, a < b and self.was_ge
        self.was_le, self.was_ge = a <= b, a >= b
        return above, below


class BecomesTrue:
    """``becomes_true``: the condition turns on, and it was defined on this bar and the last."""

    __slots__ = ("was_on", "was_defined")

    def __init__(self) -> None:
        self.was_on = self.was_defined = False

    def update(self, condition: bool, defined: bool) -> bool:
        fired = bool(condition and defined and self.was_defined and not self.was_on)
        self.was_on, self.was_defined = bool(condition), defined
        return fired


def _event(buy: bool, sell: bool) -> int:
    """``to_signals`` for one bar: both ways holds."""
    return int(buy) - int(sell)


# --- the strategies ---------------------------------------------------------------------------
class BarStrategy(Protocol):
    """One strategy's state: ``update`` takes the next bar and returns its signal; ``indicators``
    holds that bar's values (NaN where undefined), named as in the vectorized output."""

    indicators: dict[str, float]

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int: ...


class _Crossover:
    """sma_crossover, ema_crossover: the fast line crosses the slow one."""

    def __init__(self, fast: Sma | Ema, slow: Sma | Ema, names: tuple[str, str]) -> None:
        self.fast, self.slow, self.names, self.cross = fast, slow, names, Cross()
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        f, s = self.fast.update(close), self.slow.update(close)
        self.indicators = {self.names[0]: f, self.names[1]: s}
        return _event(*self.cross.update(f, s))


class _Rsi:
    def __init__(self, period: int, oversold: float, overbought: float) -> None:
        self.rsi, self.oversold, self.overbought = Rsi(period), oversold, overbought
        self.low, self.high = Cross(), Cross()
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        value = self.rsi.update(close)
        self.indicators = {"rsi": value}
        return _event(self.low.update(value, self.oversold)[1], self.high.update(value, self.overbought)[0])


class _Bollinger:
    def __init__(self, period: int, num_std: float) -> None:
        self.bands, self.lower, self.mid = Bollinger(period, num_std), Cross(), Cross()
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        mid, upper, lower = self.bands.update(close)
        self.indicators = {"bb_mid": mid, "bb_upper": upper, "bb_lower": lower}
        return _event(self.lower.update(close, lower)[1], self.mid.update(close, mid)[0])


class _Macd:
    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self.macd, self.cross = Macd(fast, slow, signal), Cross()
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        line, signal_line, hist = self.macd.update(close)
        self.indicators = {"macd": line, "macd_signal": signal_line, "macd_hist": hist}
        return _event(*self.cross.update(line, signal_line))


class _Reversion:
    """``reversion_events`` on a z-score: buy crossing below -entry_z, sell crossing above exit_z."""

    def __init__(self, entry_z: float, exit_z: float) -> None:
        self.entry_z, self.exit_z, self.entry, self.exit = entry_z, exit_z, Cross(), Cross()

    def update(self, z: float) -> int:
        return _event(self.entry.update(z, -self.entry_z)[1], self.exit.update(z, self.exit_z)[0])


class _MeanReversion:
    def __init__(self, period: int, entry_z: float, exit_z: float) -> None:
        self.z, self.events = ZScore(period), _Reversion(entry_z, exit_z)
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        z = self.z.update(close)
        self.indicators = {"zscore": z}
        return self.events.update(z)


class _Momentum:
    def __init__(self, period: int, threshold: float) -> None:
        self.roc, self.threshold, self.up, self.down = Roc(period), threshold, Cross(), Cross()
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        change = self.roc.update(close)
        self.indicators = {"roc": change}
        return _event(self.up.update(change, self.threshold)[0], self.down.update(change, -self.threshold)[1])


class _VolumeWeighted:
    def __init__(self, period: int, volume_period: int, volume_threshold: float) -> None:
        self.vwap, self.ratio, self.threshold = Vwap(period), VolumeRatio(volume_period), volume_threshold
        self.confirmed, self.below = BecomesTrue(), Cross()
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        price_vwap, ratio = self.vwap.update(high, low, close, volume), self.ratio.update(volume)
        self.indicators = {"vwap": price_vwap, "volume_ratio": ratio}
        defined = math.isfinite(price_vwap) and math.isfinite(ratio)
        buy = self.confirmed.update(volume_confirmed(close, price_vwap, ratio, self.threshold), defined)
        return _event(buy, self.below.update(close, price_vwap)[1])


class _TripleEma:
    def __init__(self, fast: int, mid: int, slow: int) -> None:
        self.lines = (Ema(fast), Ema(mid), Ema(slow))
        self.forms, self.breaks = BecomesTrue(), BecomesTrue()
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        f, m, s = (line.update(close) for line in self.lines)
        self.indicators = {"ema_fast": f, "ema_mid": m, "ema_slow": s}
        defined = math.isfinite(f) and math.isfinite(m) and math.isfinite(s)
        stacked = ema_stacked(f, m, s)
        return _event(self.forms.update(stacked, defined), self.breaks.update(not stacked and defined, defined))


class _RsiMacd:
    def __init__(self, rsi_period: int, rsi_mid: float, fast: int, slow: int, signal: int) -> None:
        self.rsi, self.macd, self.rsi_mid = Rsi(rsi_period), Macd(fast, slow, signal), rsi_mid
        self.bullish, self.bearish = BecomesTrue(), BecomesTrue()
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        value = self.rsi.update(close)
        line, signal_line, hist = self.macd.update(close)
        self.indicators = {"rsi": value, "macd": line, "macd_signal": signal_line, "macd_hist": hist}
        defined = math.isfinite(value) and math.isfinite(signal_line)
        bullish, bearish = rsi_macd_bias(value, line, signal_line, self.rsi_mid)
        return _event(self.bullish.update(bullish, defined), self.bearish.update(bearish, defined))


class _PairsSpread:
    """The z-score runs on the bars both legs have; a primary bar without a pair bar holds."""

    def __init__(self, lookback: int, entry_z: float, exit_z: float) -> None:
        self.z, self.events = ZScore(lookback), _Reversion(entry_z, exit_z)
        self.indicators: dict[str, float] = {}

    def update(self, high: float, low: float, close: float, volume: float, pair_close: float) -> int:
        if math.isnan(pair_close):
            self.indicators = {"spread": NAN, "zscore": NAN}
            return 0
        spread = math.log(close) - math.log(pair_close)
        z = self.z.update(spread)
        self.indicators = {"spread": spread, "zscore": z}
        return self.events.update(z)


STRATEGIES: dict[str, Callable[..., BarStrategy]] = {
    "sma_crossover": lambda fast, slow: _Crossover(Sma(fast), Sma(slow), ("sma_fast", "sma_slow")),
    "ema_crossover": lambda fast, slow: _Crossover(Ema(fast), Ema(slow), ("ema_fast", "ema_slow")),
    "rsi": _Rsi,
    "bollinger": _Bollinger,
    "macd": _Macd,
    "mean_reversion": _MeanReversion,
    "momentum": _Momentum,
    "volume_weighted": _VolumeWeighted,
    "triple_ema": _TripleEma,
    "rsi_macd": _RsiMacd,
    "pairs_spread": _PairsSpread,
}
if set(STRATEGIES) != set(STRATEGY_PARAMS):
    raise ValueError(
        f"incremental strategies {sorted(STRATEGIES)} do not match strategies.params {sorted(STRATEGY_PARAMS)}")


class IncrementalSignal:
    """One strategy on one series (and pair), fed bar by bar; the newest decision in O(1)."""

    def __init__(self, name: str, params: Params | None = None) -> None:
        spec = get_params(name)
        self.name = name
        self.params = spec.resolve(params)
        self.warmup = spec.warmup(self.params)
        self.needs_pair = spec.needs_pair
        self.state = STRATEGIES[name](**self.params)
        self.bars_seen = 0
        self.last_ts: int | None = None
        self.last_close = NAN
        self.signal = 0

    def feed(self, data: OHLCV, pair: OHLCV | None = None, checked: bool = False) -> list[int]:
        """Take the bars of ``data`` (oldest first, all after the last bar fed) and return their
        signals. ``pair``: the second leg's bars at those times; a time it lacks holds.

        ``checked``: the bars were validated already (the engine's store checks every bar on
        entry), so they are not checked again; a non-finite value still stops the indicators.
        """
        if self.needs_pair and pair is None:
            raise ValueError(f"{self.name}: needs a pair (the second leg's bars), got none")
        if not self.needs_pair and pair is not None:
            raise ValueError(f"{self.name}: takes no pair, got one")
        if not checked:
            data.validate("data")
            if pair is not None:
                pair.validate("pair")
        if len(data) and self.last_ts is not None and int(data.ts[0]) <= self.last_ts:
            raise ValueError(f"{self.name}: bar ts={int(data.ts[0])} is not after the last bar fed ts={self.last_ts}")
        pair_close = {} if pair is None else dict(zip(pair.ts.tolist(), pair.close.tolist()))
        update = self.state.update
        signals = [update(h, lo, c, v, pair_close.get(t, NAN)) for t, h, lo, c, v in
                   zip(data.ts.tolist(), data.high.tolist(), data.low.tolist(), data.close.tolist(),
                       data.volume.tolist())]
        if signals:
            self.bars_seen += len(signals)
            self.last_ts, self.last_close, self.signal = int(data.ts[-1]), float(data.close[-1]), signals[-1]
        return signals

    def feed_bar(self, ts: int, high: float, low: float, close: float, volume: float) -> None:
        """``feed`` of one checked bar of a strategy without a pair, as plain numbers: the engine
        hands each closed bar to the states of its series as it arrives (``SignalCache.push``)."""
        if self.last_ts is not None and ts <= self.last_ts:
            raise ValueError(f"{self.name}: bar ts={ts} is not after the last bar fed ts={self.last_ts}")
        self.signal = self.state.update(high, low, close, volume, NAN)
        self.bars_seen += 1
        self.last_ts, self.last_close = ts, close

    def latest(self) -> LatestSignal:
        """The decision on the last bar fed, as :func:`strategies.registry.latest_signal` gives it."""
        if self.last_ts is None:
            raise ValueError(f"{self.name}: no bars, cannot decide on the last one")
        enough = self.bars_seen >= self.warmup
        return LatestSignal(
            signal=self.signal if enough else 0,
            price=self.last_close,
            ts_bar=self.last_ts,
            indicators={key: value for key, value in self.state.indicators.items() if math.isfinite(value)},
            enough_history=enough,
        )


TailSource = Callable[[str, str, "int | None"], OHLCV]  # (symbol, timeframe, limit): the last bars, all if None
CacheKey = tuple[str, str, "str | None", str, tuple[tuple[str, Any], ...]]


def _frozen(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


class SignalCache:
    """One :class:`IncrementalSignal` per (strategy, symbol, pair, timeframe, resolved params)."""

    def __init__(self) -> None:
        self.states: dict[CacheKey, IncrementalSignal] = {}
        self._keys: dict[CacheKey, CacheKey] = {}  # as configured -> with the defaults filled in

    def push(self, symbol: str, timeframe: str, ts: int, high: float, low: float, close: float,
             volume: float) -> None:
        """A new closed bar of a series, checked, as it arrives: fed at once to every state that
        reads this series alone and stands at the bar before it, so deciding on it later costs
        a lookup. The others (a pair, a state behind) catch up from the store when next asked."""
        previous = ts - timeframe_ms(timeframe)
        for key, state in list(self.states.items()):
            if key[1] == symbol and key[2] is None and key[3] == timeframe and state.last_ts == previous:
                try:
                    state.feed_bar(ts, high, low, close, volume)
                except Exception:  # rebuilt when next asked, where the error is the strategy's own
                    del self.states[key]  # never keep a half-fed state

    def latest(self, strategy: str, symbol: str, timeframe: str, params: Params | None, bars: TailSource,
               pair_symbol: str | None = None) -> LatestSignal:
        """The strategy's decision on the newest bar ``bars`` holds, after feeding what is new."""
        raw = (strategy, symbol, pair_symbol, timeframe, _frozen(params or {}))
        try:
            key = self._keys[raw]
        except KeyError:
            resolved = get_params(strategy).resolve(params)
            key = self._keys[raw] = (strategy, symbol, pair_symbol, timeframe, _frozen(resolved))
        except TypeError:  # an unhashable value: resolving refuses it with a message naming it
            get_params(strategy).resolve(params)
            raise
        state = self.states.get(key)
        try:
            if state is None or not _catch_up(state, symbol, pair_symbol, timeframe, bars):
                state = self.states[key] = IncrementalSignal(strategy, dict(key[4]))
                state.feed(bars(symbol, timeframe, None),
                           None if pair_symbol is None else bars(pair_symbol, timeframe, None), checked=True)
        except Exception:
            self.states.pop(key, None)  # never keep a half-fed state: the next call rebuilds it
            raise
        return state.latest()

    def holds(self, strategy: str, symbol: str, timeframe: str, params: Params | None, ts: int,
              close: float) -> bool:
        """True when the state of this strategy on ``symbol`` alone already stands at the bar
        ``ts`` (with that close) and gives no signal there: ``latest`` would say hold, and
        nothing needs feeding. False whenever that is not known without deciding."""
        try:
            key = self._keys.get((strategy, symbol, None, timeframe, _frozen(params or {})))
        except TypeError:  # an unhashable parameter: ``latest`` names it
            return False
        state = None if key is None else self.states.get(key)
        return state is not None and state.last_ts == ts and state.last_close == close \
            and (state.signal == 0 or state.bars_seen < state.warmup)

    def invalidate(self, symbol: str, timeframe: str) -> None:
        """The history of ``symbol`` was replaced (a refetch): rebuild every state reading it."""
        for key in [k for k in self.states if k[3] == timeframe and symbol in (k[1], k[2])]:
            del self.states[key]


def _catch_up(state: IncrementalSignal, symbol: str, pair_symbol: str | None, timeframe: str,
              bars: TailSource) -> bool:
    """Feed the bars after ``state``'s last one; False when the store does not continue it."""
    newest = bars(symbol, timeframe, 1)
    if state.last_ts is None or not len(newest) or int(newest.ts[-1]) < state.last_ts:
        return False
    step = timeframe_ms(timeframe)
    missing = (int(newest.ts[-1]) - state.last_ts) // step
    if missing == 0:
        return float(newest.close[-1]) == state.last_close
    tail = bars(symbol, timeframe, missing + 1)
    if len(tail) != missing + 1 or int(tail.ts[0]) != state.last_ts or float(tail.close[0]) != state.last_close:
        return False
    new = tail.slice(1, None)
    pair = None
    if pair_symbol is not None:
        pair_newest = bars(pair_symbol, timeframe, 1)
        first = int(new.ts[0])
        covering = (int(pair_newest.ts[-1]) - first) // step + 1 if len(pair_newest) else 0
        pair = bars(pair_symbol, timeframe, covering) if covering > 0 else OHLCV.empty()
    state.feed(new, pair, checked=True)
    return True
