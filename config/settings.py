"""The go-trader config: one JSON file in, one frozen typed ``Config`` out, checked once.

Validation runs in two passes, as freqtrade does: the schema tables in config/schema.py
(types, defaults, ranges), then the consistency rules here (unique ids, known strategies and
symbols, distinct endpoints, no secrets). Every problem is collected into one ConfigError so a
user fixes the whole file in one go. Strategies may be written in the seed's form
(``script`` + ``args``) or the native form; both give the same ``StrategyConfig``.

CLI: ``python -m config.settings --check PATH`` and ``python -m config.settings --docs``.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from common.timeframes import TIMEFRAME_MS
from config.capacity import Demand, capacity_problems
from config.engines import ENGINE_NAME_RE, EngineConfig, assignment_problems, select
from config.schema import (
    DEFAULT_ENGINE_PORTS,
    ENGINE,
    ENV_NAME_RE,
    GATEWAY_TOKEN_ENV,
    INVALID,
    LOCAL_HOSTS,
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    OPTIONS,
    OPTIONS_STRATEGY_NAMES,
    OPTIONS_VENUE_UNDERLYINGS,
    SEED_SCRIPTS,
    SPOT,
    STRATEGY_OPTIONS,
    STRATEGY_SEED,
    STRATEGY_SPOT,
    TOP,
    USER_STRATEGY_RE,
    Derived,
    check_section,
    check_value,
    did_you_mean,
    endpoint_binds_beyond_loopback,
    join_path,
    render_markdown,
    show,
    utc_iso_to_ms,
)
from options.params import OPTIONS_PARAMS, params_problems
from strategies.params import STRATEGY_PARAMS, get_params

__all__ = [
    "OPTIONS_STRATEGY_NAMES",
    "ConfigError",
    "Config",
    "FeedConfig",
    "ReplayConfig",
    "LiveFeedConfig",
    "ServiceEndpoints",
    "BusConfig",
    "GatewayConfig",
    "RiskConfig",
    "VenueOptionsConfig",
    "OptionsConfig",
    "DiscordConfig",
    "IbkrConfig",
    "ThetaHarvestConfig",
    "StrategyConfig",
    "EngineConfig",
    "load_config",
    "use_strategies_dir",
    "user_strategy_problems",
    "parse_config",
    "DOCS_PATH",
]

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"
DEFAULT_SPEED = 3600.0
OPTIONS_INTERVAL_SECONDS = 1200

_SECRET_KEYS = frozenset({"token", "api_key", "apikey", "api_secret", "secret", "password", "webhook", "webhook_url"})
_DISCORD_SECRET_KEYS = _SECRET_KEYS | {"url"}
_DISCORD_WEBHOOK_RE = re.compile(r"https?://([\w-]+\.)?discord(app)?\.com/api/webhooks/", re.IGNORECASE)
_SYMBOL_CUTOFF = 0.85
_NATIVE_ONLY_KEYS = ("strategy", "symbol", "timeframe", "pair", "venue", "underlying")


class ConfigError(ValueError):
    """Everything wrong with one config; ``errors`` holds one 'json.path: problem' line each."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        return f"{self.source}: {count} config error{'s' if count != 1 else ''}:\n{lines}"


# ---- the typed result -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReplayConfig:
    files: Mapping[str, Path]  # symbol -> absolute CSV path
    timeframe: str


@dataclass(frozen=True, slots=True)
class LiveFeedConfig:
    exchange: str
    poll_seconds: float
    deribit_url: str
    binance_url: str | None = None  # None: CCXT's own API URLs


@dataclass(frozen=True, slots=True)
class FeedConfig:
    mode: str  # sim | replay | live
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]  # shortest first
    speed: float  # market seconds per wall second
    seed: int
    start_ms: int
    history_days: int
    replay: ReplayConfig
    live: LiveFeedConfig


@dataclass(frozen=True, slots=True)
class ServiceEndpoints:
    pub: str
    rep: str


@dataclass(frozen=True, slots=True)
class BusConfig:
    keys_dir: Path  # absolute
    allow_remote: bool
    local_ipc: bool  # loopback endpoints also on an abstract Unix socket (schema.local_alias)


@dataclass(frozen=True, slots=True)
class CpuConfig:
    background_nice: int = 10  # the pricer and options-only engines (services.runtime.ServiceRuntime.yield_cpu)
    background_idle: bool = False  # and under SCHED_IDLE (Linux): for a host of its own
    split_cores: bool = True  # the fill path on cores of its own (services.runtime.service_cores)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str
    port: int
    allow_remote: bool
    token_env: str = GATEWAY_TOKEN_ENV  # fixed: the bearer token never comes from the file


@dataclass(frozen=True, slots=True)
class RiskConfig:
    max_position_pct: float
    max_consecutive_losses: int
    circuit_breaker_hours: float
    daily_loss_pct: float


@dataclass(frozen=True, slots=True)
class VenueOptionsConfig:
    risk_free_rate: float
    max_positions: int
    min_score: float


@dataclass(frozen=True, slots=True)
class OptionsConfig:
    risk_free_rate: float
    max_positions: int
    min_score: float
    timeframe: str
    iv_rank_days: int
    underlying_quote: str
    venues: Mapping[str, VenueOptionsConfig]  # every known venue, overrides applied


@dataclass(frozen=True, slots=True)
class DiscordConfig:
    enabled: bool
    webhook_env: str
    channels: Mapping[str, str]
    spot_summary_freq: str
    options_summary_freq: str


@dataclass(frozen=True, slots=True)
class IbkrConfig:
    host: str | None
    port: int
    client_id: int


@dataclass(frozen=True, slots=True)
class ThetaHarvestConfig:
    enabled: bool
    profit_target_pct: float
    stop_loss_pct: float
    min_dte_close: int


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """One strategy. ``symbol``/``timeframe`` are the bars it reads: for options, the
    underlying's spot symbol at ``options.timeframe``. Spot-only and options-only fields are
    None on the other type."""

    id: str
    type: str  # spot | options
    strategy: str  # a built-in name, a user function "pkg.mod:fn", or a user script's label (args[0])
    capital: float
    max_drawdown_pct: float
    interval_seconds: int
    params: Mapping[str, Any]
    risk: RiskConfig
    symbol: str
    timeframe: str
    pair: str | None = None
    venue: str | None = None
    underlying: str | None = None
    theta_harvest: ThetaHarvestConfig | None = None
    script: Path | None = None  # a user's seed-style script, run as a subprocess with ``args``
    args: tuple[str, ...] = ()

    @property
    def is_user_function(self) -> bool:
        return self.script is None and ":" in self.strategy

    @property
    def is_spot(self) -> bool:
        return self.type == SPOT

    @property
    def is_options(self) -> bool:
        return self.type == OPTIONS


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None  # the file it came from; None when parsed from a dict
    interval_seconds: int
    state_file: Path
    strategies_dir: Path | None
    create_state_dir: bool
    fee_pct: float
    slippage_pct: float
    price_band_pct: float
    feed: FeedConfig
    endpoints: Mapping[str, ServiceEndpoints]
    bus: BusConfig
    gateway: GatewayConfig
    risk: RiskConfig
    options: OptionsConfig
    discord: DiscordConfig
    ibkr: IbkrConfig
    strategies: tuple[StrategyConfig, ...]
    engines: tuple[EngineConfig, ...] = ()
    cpu: CpuConfig = CpuConfig()

    def engine(self, name: str) -> EngineConfig:
        """The engine called ``name``; ValueError names the engines there are."""
        for e in self.engines:
            if e.name == name:
                return e
        names = [e.name for e in self.engines]
        raise ValueError(f"unknown engine {show(name)}; the config has {', '.join(show(n) for n in names)}"
                         f"{did_you_mean(name, names)}")

    def engine_strategies(self, name: str) -> tuple[StrategyConfig, ...]:
        """The strategies the engine ``name`` runs, in config order."""
        ids = set(self.engine(name).strategy_ids)
        return tuple(s for s in self.strategies if s.id in ids)

    def spot_strategies(self) -> tuple[StrategyConfig, ...]:
        return tuple(s for s in self.strategies if s.is_spot)

    def options_strategies(self) -> tuple[StrategyConfig, ...]:
        return tuple(s for s in self.strategies if s.is_options)

    def strategy(self, strategy_id: str) -> StrategyConfig:
        """The strategy with this id; ValueError names the id and the closest one."""
        for s in self.strategies:
            if s.id == strategy_id:
                return s
        hint = did_you_mean(strategy_id, [s.id for s in self.strategies])
        raise ValueError(f"unknown strategy id {show(strategy_id)}{hint}")

    def venue_options(self, venue: str) -> VenueOptionsConfig:
        """The options limits and rate of one venue (``options.venues.<venue>`` over ``options.*``).
        The signal engine, the portfolio, the pricer and the backtester all read them here, so an
        order the engine selects meets the limits the portfolio checks."""
        try:
            return self.options.venues[venue]
        except KeyError:
            raise ValueError(f"unknown options venue {show(venue)}; the config has "
                             f"{', '.join(show(v) for v in self.options.venues)}") from None

    def symbols_and_timeframes(self) -> tuple[tuple[str, str], ...]:
        """(symbol, timeframe) bar series the feed must produce for these strategies, sorted."""
        needed = {(s.symbol, s.timeframe) for s in self.strategies}
        needed |= {(s.pair, s.timeframe) for s in self.strategies if s.pair is not None}
        return tuple(sorted(needed, key=lambda st: (st[0], TIMEFRAME_MS[st[1]])))


# ---- entry points --------------------------------------------------------------------------------

def load_config(path: str | Path, *, base_dir: Path | None = None) -> Config:
    """Read and check the JSON file at ``path``; ConfigError lists every problem."""
    path = Path(path)
    source = str(path)
    try:
        if path.is_dir():
            raise ConfigError(source, [f"config path is a directory, not a file: {path.resolve()}"])
        if path.exists() and not path.is_file():
            raise ConfigError(source, [f"config path is not a regular file: {path.resolve()}"])
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(source, [f"config file is {size:,} bytes, more than the {MAX_CONFIG_BYTES:,} a config "
                                       f"may have: {path.resolve()}"])
        with path.open("rb") as file:
            text = file.read(MAX_CONFIG_BYTES + 1).decode("utf-8")  # bounded even if it grows meanwhile
    except FileNotFoundError:
        raise ConfigError(source, [f"config file not found: {path.resolve()}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read config file {path.resolve()}: {exc}"]) from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [f"config file is more than the {MAX_CONFIG_BYTES:,} bytes a config may have"])
    duplicates: list[str] = []
    try:
        raw = json.loads(text, object_pairs_hook=lambda pairs: _object_noting_duplicates(pairs, duplicates))
    except json.JSONDecodeError as exc:
        raise ConfigError(source, [f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    except RecursionError:
        raise ConfigError(source, [f"(top level): nested too deeply to parse; a config is at most {MAX_DEPTH} "
                                   f"levels deep"]) from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ConfigError(source, [f"invalid JSON: {exc}"]) from None
    return _parse(raw, source, path.resolve(), base_dir, duplicates)


def parse_config(raw: Any, source: str = "<dict>", *, base_dir: Path | None = None) -> Config:
    """Check an already-decoded config; relative paths resolve against ``base_dir`` (default: cwd)."""
    return _parse(raw, source, None, base_dir, [])


def _object_noting_duplicates(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            duplicates.append(f"duplicate key {show(key)} in one object (JSON would keep only the last)")
        obj[key] = value
    return obj


def _parse(raw: Any, source: str, path: Path | None, base_dir: Path | None, errors: list[str]) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(source, [*errors, f"(top level): expected an object, got {show(raw)}"])
    shape = _shape_problems(raw)
    if shape:  # the passes below recurse and do arithmetic: they only see finite, shallow data
        raise ConfigError(source, [*errors, *shape])
    base = Path.cwd() if base_dir is None else Path(base_dir)
    secrets = _find_secrets(raw)
    errors.extend(secrets.values())
    top = check_section(raw, TOP, "", errors, reported=set(secrets))
    entries = _check_strategy_entries(top["strategies"], errors, set(secrets))
    _check_feed(top, raw.get("feed"), entries, base, errors)
    _check_endpoints(top["endpoints"], top["bus"], errors)
    _check_gateway(top["gateway"], errors)
    _check_strategies(top, entries, base, errors)
    _check_engines(top, entries, errors)
    _check_state_file(top["state_file"], base, errors)
    if errors:
        raise ConfigError(source, errors)
    config = _build(top, entries, path, base)
    capacity = _check_capacity(config)
    if capacity:
        raise ConfigError(source, capacity)
    return config


# ---- pass 0: the shape of the data -------------------------------------------------------------

def _shape_problems(raw: Any) -> list[str]:
    """Nesting deeper than MAX_DEPTH and every NaN or infinity (JSON's NaN/Infinity, or 1e999),
    found without recursion, so no input can overflow the stack or reach a range check."""
    problems: list[str] = []
    pending: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while pending:
        value, where, depth = pending.pop()
        if depth > MAX_DEPTH:
            return [f"{where}: nested more than {MAX_DEPTH} levels deep; a config is at most {MAX_DEPTH} levels"]
        if isinstance(value, dict):
            pending.extend((v, join_path(where, str(k)), depth + 1) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            pending.extend((v, f"{where}[{i}]", depth + 1) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where or '(top level)'}: must be a finite number, got {show(value)}")
    return problems


# ---- pass 2: consistency rules ---------------------------------------------------------------------

def _find_secrets(raw: Any, path: str = "") -> dict[str, str]:
    """Paths holding a literal secret -> error. Secrets come from the environment only."""
    found: dict[str, str] = {}
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            found |= _find_secrets(item, f"{path}[{i}]")
        return found
    if not isinstance(raw, dict):
        return found
    for key, value in raw.items():
        where = f"{path}.{key}" if path else key
        secret_keys = _DISCORD_SECRET_KEYS if where.startswith("discord.") else _SECRET_KEYS
        if isinstance(value, str) and value and (
            key.lower() in secret_keys or _DISCORD_WEBHOOK_RE.search(value)
        ):
            hint = _secret_hint(raw, where)
            found[where] = f"{where}: secrets come from the environment, not the config ({hint}); " \
                           f"got a literal value (not shown)"
        else:
            found |= _find_secrets(value, where)
    return found


def _secret_hint(parent: Mapping[str, Any], where: str) -> str:
    if where.startswith("discord."):
        env = parent.get("webhook_env")
        env = env if isinstance(env, str) and ENV_NAME_RE.match(env) else "DISCORD_WEBHOOK_URL"
        return f"put it in the environment variable {env}, named by discord.webhook_env"
    if where.startswith("gateway."):
        return f"the gateway bearer token is read from {GATEWAY_TOKEN_ENV}"
    return "use an environment variable"


def _check_strategy_entries(raw_list: Any, errors: list[str], reported: set[str]) -> list[dict[str, Any] | None]:
    """Pass 1 for each strategy: seed form normalized, then the spot or options table."""
    if raw_list is INVALID:
        return []
    if not raw_list:
        errors.append(f"strategies: must list at least one strategy, got {show(raw_list)}")
        return []
    return [_check_strategy_entry(entry, f"strategies[{i}]", errors, reported) for i, entry in enumerate(raw_list)]


def _check_strategy_entry(entry: Any, where: str, errors: list[str], reported: set[str]) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        errors.append(f"{where}: expected an object, got {show(entry)}")
        return None
    key_paths: dict[str, str] = {}
    if "script" in entry or "args" in entry:
        seed = _native_from_seed(entry, where, errors, reported)
        if seed is None:
            return None
        entry, key_paths = seed
        user_script = entry.pop("_script", None)
    else:
        user_script = None
    if "type" not in entry:
        errors.append(f"{where}.type: missing required key")
        return None
    kind = check_value(entry["type"], STRATEGY_SPOT.fields["type"], key_paths.get("type", f"{where}.type"),
                       errors, reported)
    if kind is INVALID:
        return None
    section = STRATEGY_SPOT if kind == SPOT else STRATEGY_OPTIONS
    values = check_section(entry, section, where, errors, key_paths=key_paths, reported=reported)
    values["where"] = where
    values["script"] = user_script
    values["paths"] = {key: key_paths.get(key, f"{where}.{key}") for key in section.fields}
    if isinstance(values["params"], dict):  # a literal secret in params is reported once, as a secret
        values["params"] = {k: v for k, v in values["params"].items() if f"{where}.params.{k}" not in reported}
    return values


def _native_from_seed(
    entry: dict[str, Any], where: str, errors: list[str], reported: set[str]
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The seed's ``script`` + ``args`` as native keys, with error paths pointing at the args."""
    for key in _NATIVE_ONLY_KEYS:
        if key in entry:
            errors.append(f"{where}.{key}: the seed form (script + args) and the native form do not mix; "
                          f"drop {show(key)} or script/args, got {show(entry[key])}")
    fields = STRATEGY_SEED.fields
    script: dict[str, Any] = {}
    for key in ("script", "args"):
        if key in entry:
            script[key] = check_value(entry[key], fields[key], f"{where}.{key}", errors, reported)
        else:
            errors.append(f"{where}.{key}: missing required key")
            script[key] = INVALID
    if script["script"] is INVALID or script["args"] is INVALID:
        return None
    kind, venue = SEED_SCRIPTS.get(script["script"].rsplit("/", 1)[-1], (SPOT, None))
    user_script = script["script"].rsplit("/", 1)[-1] not in SEED_SCRIPTS
    if "type" in entry:
        given = check_value(entry["type"], fields["type"], f"{where}.type", errors, reported)
        if given is INVALID:
            return None
        if given != kind:
            errors.append(f"{where}.type: {script['script']} runs {kind} strategies, got {show(given)}")
            return None
    args = script["args"]
    names = ("strategy", "symbol", "timeframe", "pair") if kind == SPOT else ("strategy", "underlying")
    if kind == SPOT:
        lengths, expected = (3, 4), "[strategy, symbol, timeframe] or [strategy, symbol, timeframe, pair]"
    else:
        lengths, expected = (2,), "[strategy, underlying]"
    if len(args) not in lengths:
        errors.append(f"{where}.args: expected {expected}, got {show(args)}")
        return None
    native = {k: v for k, v in entry.items() if k not in ("script", "args", *_NATIVE_ONLY_KEYS)}
    native["type"] = kind
    key_paths = {name: f"{where}.args[{i}]" for i, name in enumerate(names)}
    key_paths["type"] = f"{where}.type" if "type" in entry else f"{where}.script"
    native.update(zip(names, args))
    if venue is not None:
        native["venue"] = venue
        key_paths["venue"] = f"{where}.script"
    if user_script:
        native["_script"] = (script["script"], tuple(args))
    return native, key_paths


def _check_feed(top: dict[str, Any], raw_feed: Any, entries: list[dict[str, Any] | None], base: Path,
                errors: list[str]) -> None:
    """Fill the feed's derived defaults and check it covers what the strategies read."""
    feed = top["feed"]
    given = raw_feed if isinstance(raw_feed, dict) else {}
    if feed["mode"] == "live" and "speed" in given and feed["speed"] not in (1, INVALID):
        errors.append(f"feed.speed: live mode runs in real time, must be 1, got {show(feed['speed'])}")
        feed["speed"] = INVALID
    if isinstance(feed["speed"], Derived):
        feed["speed"] = 1.0 if feed["mode"] == "live" else DEFAULT_SPEED
    if isinstance(feed["timeframes"], Derived):
        used = {e["timeframe"] for e in entries if e and e["type"] == SPOT and isinstance(e["timeframe"], str)}
        if any(e and e["type"] == OPTIONS for e in entries) and top["options"]["timeframe"] is not INVALID:
            used.add(top["options"]["timeframe"])
        feed["timeframes"] = sorted(used, key=TIMEFRAME_MS.__getitem__)
    options_timeframe = top["options"]["timeframe"]
    if (
        isinstance(given.get("timeframes"), list)
        and feed["timeframes"] is not INVALID
        and options_timeframe is not INVALID
        and any(e and e["type"] == OPTIONS for e in entries)
        and options_timeframe not in feed["timeframes"]
    ):
        errors.append(f"options.timeframe: options strategies read these bars, so it must be one of "
                      f"feed.timeframes ({', '.join(feed['timeframes'])}), got {show(options_timeframe)}")
    replay = feed["replay"]
    files = replay["files"]
    symbols = feed["symbols"]
    if files is not INVALID and symbols is not INVALID:
        replay["files"] = {symbol: base / file for symbol, file in files.items()}
        for symbol in files:
            if symbol not in symbols:
                hint = did_you_mean(symbol, symbols, _SYMBOL_CUTOFF)
                errors.append(f"feed.replay.files[{show(symbol)}]: not in feed.symbols "
                              f"({', '.join(symbols)}){hint}, got {show(symbol)}")
        if feed["mode"] == "replay":
            for symbol in symbols:
                if symbol not in files:
                    errors.append(f"feed.replay.files: replay mode needs a file for every feed symbol, "
                                  f"got none for {show(symbol)}")
                elif not replay["files"][symbol].is_file():
                    errors.append(f"feed.replay.files[{show(symbol)}]: no such file {replay['files'][symbol]}, "
                                  f"got {show(files[symbol])}")
    step = replay["timeframe"]
    if feed["mode"] == "replay" and step is not INVALID and feed["timeframes"] is not INVALID:
        for i, timeframe in enumerate(feed["timeframes"]):
            if TIMEFRAME_MS[timeframe] % TIMEFRAME_MS[step]:
                errors.append(f"feed.timeframes[{i}]: replay bars are {step}, so every timeframe must be a "
                              f"multiple of {step}, got {show(timeframe)}")


def _check_endpoints(endpoints: dict[str, Any], bus: dict[str, Any], errors: list[str]) -> None:
    """Distinct endpoints, each bound on loopback unless ``bus.allow_remote`` (every service binds
    its own PUB and REP, so an endpoint's host is where it listens)."""
    first_at: dict[str, str] = {}
    for service, pair in endpoints.items():
        for role, endpoint in pair.items():
            where = f"endpoints.{service}.{role}"
            if endpoint is INVALID:
                continue
            remote = endpoint_binds_beyond_loopback(endpoint)
            if remote is not None and bus["allow_remote"] is not True:
                errors.append(f"{where}: {remote} listens beyond loopback; use 127.0.0.1 or ipc://, or set "
                              f"bus.allow_remote = true (clients still need the bus keys), got {show(endpoint)}")
            if endpoint in first_at:
                errors.append(f"{where}: must differ from every other endpoint, same as {first_at[endpoint]}, "
                              f"got {show(endpoint)}")
            else:
                first_at[endpoint] = where


def _default_engines(endpoints: dict[str, Any]) -> dict[str, Any]:
    """No ``engines`` section: spot on endpoints.signals, options on its own default ports."""
    signals = endpoints["signals"]
    pub, rep = DEFAULT_ENGINE_PORTS["options"]
    return {"spot": {"strategies": "spot", "pub": signals["pub"], "rep": signals["rep"]},
            "options": {"strategies": "options", "pub": f"tcp://127.0.0.1:{pub}", "rep": f"tcp://127.0.0.1:{rep}"}}


def _check_engines(top: dict[str, Any], entries: list[dict[str, Any] | None], errors: list[str]) -> None:
    """Names, selectors and endpoints of each engine; every strategy in exactly one engine.
    Leaves ``top["engines"]`` as {name: checked section} (INVALID when it could not be read)."""
    raw = top["engines_given"] = top["engines"]
    explicit = not isinstance(raw, Derived)
    if raw is INVALID:
        return
    if not explicit:
        raw = _default_engines(top["endpoints"])
    elif not raw:
        errors.append("engines: needs at least one engine (or leave it out for the default spot + options)")
        top["engines"] = INVALID
        return
    checked: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        where = f"engines.{name}"
        if not ENGINE_NAME_RE.match(name):
            errors.append(f"{where}: an engine name is 1-32 of a-z, 0-9, _ and - (starting with a letter or digit), "
                          f"got {show(name)}")
            continue
        checked[name] = check_section(spec, ENGINE, where, errors)
    top["engines"] = checked
    # endpoints: distinct from each other and from every other service (endpoints.signals is the
    # default spot engine's, so it is left out once engines are given)
    first_at = {ep: f"endpoints.{service}.{role}" for service, pair in top["endpoints"].items()
                for role, ep in pair.items() if ep is not INVALID and (service != "signals" or not explicit)}
    for name, spec in checked.items():
        for role in ("pub", "rep") if explicit or name != "spot" else ():  # spot is endpoints.signals
            endpoint = spec[role]
            if endpoint is INVALID:
                continue
            where = f"engines.{name}.{role}" if explicit else f"engines (default {name} engine).{role}"
            if endpoint in first_at:
                errors.append(f"{where}: must differ from every other endpoint, same as {first_at[endpoint]}, "
                              f"got {show(endpoint)}")
            else:
                first_at[endpoint] = where
    strategies = [(e["id"], e["type"]) for e in entries if e is not None and e["id"] is not INVALID]
    selectors = {name: spec["strategies"] for name, spec in checked.items() if spec["strategies"] is not INVALID}
    if len(selectors) == len(checked) == len(raw):
        errors.extend(assignment_problems(selectors, strategies))


def _check_gateway(gateway: dict[str, Any], errors: list[str]) -> None:
    host = gateway["host"]
    if host is INVALID or host in LOCAL_HOSTS or gateway["allow_remote"] is True:
        return
    errors.append(f"gateway.host: a host other than {', '.join(LOCAL_HOSTS)} needs gateway.allow_remote = true "
                  f"(requests then need the bearer token from {GATEWAY_TOKEN_ENV}), got {show(host)}")


def _check_strategies(top: dict[str, Any], entries: list[dict[str, Any] | None], base: Path,
                      errors: list[str]) -> None:
    feed = top["feed"]
    symbols = feed["symbols"] if feed["symbols"] is not INVALID else None
    timeframes = feed["timeframes"] if feed["timeframes"] is not INVALID else None
    first_at: dict[str, str] = {}
    for entry in entries:
        if entry is None:
            continue
        where, paths = entry["where"], entry["paths"]
        sid = entry["id"]
        if sid is not INVALID:
            if sid in first_at:
                errors.append(f"{paths['id']}: duplicate id {show(sid)} (first at {first_at[sid]})")
            else:
                first_at[sid] = where
        if entry["type"] == SPOT:
            _check_spot(entry, base, errors)
            legs = [("symbol", entry["symbol"]), ("pair", entry["pair"])]
        else:
            legs = _check_options(entry, top["options"], errors)
        for key, symbol in legs:
            if symbols is not None and isinstance(symbol, str) and symbol not in symbols:
                errors.append(f"{paths[key]}: must be one of feed.symbols ({', '.join(symbols)})"
                              f"{did_you_mean(symbol, symbols, _SYMBOL_CUTOFF)}, got {show(symbol)}")
        timeframe = entry.get("timeframe", INVALID)
        if entry["type"] == SPOT and timeframes is not None and timeframe not in (INVALID, *timeframes):
            errors.append(f"{paths['timeframe']}: must be one of feed.timeframes ({', '.join(timeframes)}), "
                          f"got {show(timeframe)}")


def _check_spot(entry: dict[str, Any], base: Path, errors: list[str]) -> None:
    """Name and params through strategies.params; a pair exactly when the strategy needs one."""
    paths = entry["paths"]
    name, pair = entry["strategy"], entry["pair"]
    if name is INVALID:
        return
    if entry["script"] is not None or ":" in name:
        _check_user_spot(entry, base, errors)
        return
    try:
        spec = get_params(name)
    except ValueError as exc:
        errors.append(f"{paths['strategy']}: {exc}{did_you_mean(name, STRATEGY_PARAMS)}")
        return
    if entry["params"] is not INVALID:
        try:
            entry["params"] = spec.resolve(entry["params"])
        except ValueError as exc:
            errors.append(f"{paths['params']}: {exc}")
            entry["params"] = INVALID
    if spec.needs_pair and pair is None:
        errors.append(f"{paths['pair']}: missing: {name} needs a pair, the second symbol")
    elif not spec.needs_pair and pair not in (None, INVALID):
        errors.append(f"{paths['pair']}: only pairs strategies take a pair, {name} does not, got {show(pair)}")
    elif pair not in (None, INVALID) and pair == entry["symbol"]:
        errors.append(f"{paths['pair']}: must differ from symbol, got {show(pair)}")


def _check_user_spot(entry: dict[str, Any], base: Path, errors: list[str]) -> None:
    """A user function or script: its form here; importing it (user code, often numpy) is left to
    the processes that run it (``user_strategy_problems``), so the gateway stays light."""
    paths, name = entry["paths"], entry["strategy"]
    if entry["script"] is None and not USER_STRATEGY_RE.match(name):
        errors.append(f"{paths['strategy']}: a user strategy is 'package.module:function', got {show(name)}")
    if entry["pair"] not in (None, INVALID):
        errors.append(f"{paths['pair']}: user strategies take no pair, got {show(entry['pair'])}")
    if entry["script"] is not None and not (base / entry["script"][0]).is_file():
        script = entry["script"][0]
        errors.append(f"{entry['where']}.script: no such file {base / script}; the seed's own scripts are "
                      f"{', '.join(SEED_SCRIPTS)}{did_you_mean(script.rsplit('/', 1)[-1], SEED_SCRIPTS)}, "
                      f"got {show(script)}")
    if entry["script"] is not None and entry["params"] not in ({}, INVALID):
        errors.append(f"{paths['params']}: a script takes its args, not params, got {show(entry['params'])}")


def user_strategy_problems(config: Config) -> dict[str, str]:
    """Strategy id -> why its user function cannot run (cannot import, params it does not
    declare or of the wrong type). Imports user code: call it only
    in the processes that run it (signals, ``--check``), after ``use_strategies_dir``."""
    from strategies.user import UserStrategyError, load_user_function, resolve_user_params

    problems: dict[str, str] = {}
    for s in config.spot_strategies():
        if not s.is_user_function:
            continue
        try:
            resolve_user_params(load_user_function(s.strategy), s.params)
        except UserStrategyError as exc:
            problems[s.id] = str(exc)
    return problems


def use_strategies_dir(config: Config) -> None:
    """Put ``strategies_dir`` first on the import path, so its modules name user strategies."""
    if config.strategies_dir is not None and str(config.strategies_dir) not in sys.path:
        sys.path.insert(0, str(config.strategies_dir))


def _check_options(entry: dict[str, Any], options: dict[str, Any], errors: list[str]) -> list[tuple[str, Any]]:
    """Check the venue lists the underlying; return the spot symbol the strategy reads."""
    _check_options_params(entry, errors)
    venue, underlying, quote = entry["venue"], entry["underlying"], options["underlying_quote"]
    if venue is INVALID or underlying is INVALID:
        return []
    listed = OPTIONS_VENUE_UNDERLYINGS[venue]
    if underlying not in listed:
        errors.append(f"{entry['paths']['underlying']}: {venue} lists {', '.join(listed)}, got {show(underlying)}")
        return []
    if quote is INVALID:
        return []
    entry["symbol"] = f"{underlying}/{quote}"
    entry["paths"]["symbol"] = entry["paths"]["underlying"]
    return [("symbol", entry["symbol"])]


def _check_options_params(entry: dict[str, Any], errors: list[str]) -> None:
    """Params against the strategy's declared table (options.params); kept as given, since the
    engine lets them override the theta-harvest exits, so defaults are not filled in here."""
    name, params, where = entry["strategy"], entry["params"], entry["paths"]["params"]
    if name is INVALID or params is INVALID:
        return
    table = OPTIONS_PARAMS[name]
    for key, problem in params_problems(name, params):
        if not key:
            errors.append(f"{where}: {problem}, got {show(dict(params))}")
        elif key not in table:
            errors.append(f"{where}.{key}: {problem}{did_you_mean(key, table)}")
        else:
            errors.append(f"{where}.{key}: {problem}, got {show(params[key])}")


def _check_state_file(state_file: Any, base: Path, errors: list[str]) -> None:
    """The portfolio must be able to create the state file: not a directory, and its nearest
    existing ancestor a directory (a file there makes every save fail)."""
    if state_file is INVALID:
        return
    path = base / state_file
    if path.is_dir():
        errors.append(f"state_file: {path} is a directory; name a file inside it, like "
                      f"{show(str(Path(state_file) / 'state.json'))}, got {show(state_file)}")
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                errors.append(f"state_file: {parent} is a file, so nothing can be created under it; "
                              f"got {show(state_file)}")
            return


def _check_capacity(config: Config) -> list[str]:
    """Each signal engine must keep up with its own strategies at this feed speed (config.capacity)."""
    problems = []
    for engine in config.engines:
        demands = [Demand(s.id, s.is_options, s.interval_seconds, s.timeframe,
                          (s.underlying or "", s.venue or "") if s.is_options else None)
                   for s in config.engine_strategies(engine.name)]
        problems += capacity_problems(f"engines.{engine.name}", demands, config.feed.speed)
    return problems


# ---- building the typed config (only once every check passed) -------------------------------------

def _frozen(value: Any) -> Any:
    """Read-only copy: dicts become MappingProxyType, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _build(top: dict[str, Any], entries: list[dict[str, Any] | None], path: Path | None, base: Path) -> Config:
    feed, options, risk = top["feed"], top["options"], RiskConfig(**top["risk"])
    venues = {
        venue: VenueOptionsConfig(**{
            key: options[key] if isinstance(value, Derived) else value for key, value in overrides.items()
        })
        for venue, overrides in options["venues"].items()
    }
    discord = top["discord"]
    pairs = [(e["id"], e["type"]) for e in entries if e is not None]
    engines = tuple(EngineConfig(name, tuple(select(spec["strategies"], pairs)), spec["pub"], spec["rep"])
                    for name, spec in top["engines"].items())
    if isinstance(top["engines_given"], Derived):  # the default split: an engine with nothing to run is left out
        engines = tuple(e for e in engines if e.strategy_ids) or engines[:1]
    endpoints = {name: ServiceEndpoints(**pair) for name, pair in top["endpoints"].items()}
    endpoints["signals"] = ServiceEndpoints(engines[0].pub, engines[0].rep)  # the first engine, for one-engine taps
    return Config(
        path=path,
        interval_seconds=top["interval_seconds"],
        state_file=base / top["state_file"],
        strategies_dir=None if top["strategies_dir"] is None else (base / top["strategies_dir"]).resolve(),
        create_state_dir=top["create_state_dir"],
        fee_pct=top["fee_pct"],
        slippage_pct=top["slippage_pct"],
        price_band_pct=top["price_band_pct"],
        feed=FeedConfig(
            mode=feed["mode"],
            symbols=tuple(feed["symbols"]),
            timeframes=tuple(feed["timeframes"]),
            speed=feed["speed"],
            seed=feed["seed"],
            start_ms=utc_iso_to_ms(feed["start"]),
            history_days=feed["history_days"],
            replay=ReplayConfig(files=MappingProxyType(dict(feed["replay"]["files"])),
                                timeframe=feed["replay"]["timeframe"]),
            live=LiveFeedConfig(**feed["live"]),
        ),
        endpoints=MappingProxyType(endpoints),
        bus=_build_bus(top, base),
        gateway=GatewayConfig(**top["gateway"]),
        risk=risk,
        options=OptionsConfig(
            **{key: value for key, value in options.items() if key != "venues"},
            venues=MappingProxyType(venues),
        ),
        discord=DiscordConfig(
            enabled=discord["enabled"],
            webhook_env=discord["webhook_env"],
            channels=MappingProxyType(dict(discord["channels"])),
            spot_summary_freq=discord["spot_summary_freq"],
            options_summary_freq=discord["options_summary_freq"],
        ),
        ibkr=IbkrConfig(**top["ibkr"]),
        strategies=tuple(_build_strategy(e, top, risk, base) for e in entries if e is not None),
        engines=engines,
        cpu=CpuConfig(**top["cpu"]),
    )


def _build_bus(top: dict[str, Any], base: Path) -> BusConfig:
    keys_dir = top["bus"]["keys_dir"]
    if isinstance(keys_dir, Derived):
        keys_dir = (base / top["state_file"]).parent / "keys"
    return BusConfig(keys_dir=base / keys_dir, allow_remote=top["bus"]["allow_remote"],
                     local_ipc=top["bus"]["local_ipc"])


def _build_strategy(entry: dict[str, Any], top: dict[str, Any], risk: RiskConfig, base: Path) -> StrategyConfig:
    spot = entry["type"] == SPOT
    interval = entry["interval_seconds"]
    if isinstance(interval, Derived):
        interval = top["interval_seconds"] if spot else OPTIONS_INTERVAL_SECONDS
    overrides = entry["risk"]
    common = dict(
        id=entry["id"],
        type=entry["type"],
        strategy=entry["strategy"],
        capital=entry["capital"],
        max_drawdown_pct=entry["max_drawdown_pct"],
        interval_seconds=interval,
        params=_frozen(entry["params"]),
        risk=RiskConfig(**{k: getattr(risk, k) if isinstance(v, Derived) else v for k, v in overrides.items()}),
        symbol=entry["symbol"],
    )
    if spot:
        script, args = entry["script"] or (None, ())
        return StrategyConfig(**common, timeframe=entry["timeframe"], pair=entry["pair"],
                              script=None if script is None else base / script, args=args)
    return StrategyConfig(
        **common,
        timeframe=top["options"]["timeframe"],
        venue=entry["venue"],
        underlying=entry["underlying"],
        theta_harvest=ThetaHarvestConfig(**entry["theta_harvest"]),
    )


# ---- CLI ---------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.settings", description="Check a config or write its docs.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", metavar="PATH", help="check PATH; exit 0 if sound, 2 with every error if not")
    action.add_argument("--docs", action="store_true", help=f"rewrite {DOCS_PATH} from the schema")
    args = parser.parse_args(argv)
    if args.docs:
        DOCS_PATH.write_text(render_markdown(), encoding="utf-8")
        print(f"wrote {DOCS_PATH}")
        return 0
    try:
        config = load_config(args.check)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    use_strategies_dir(config)
    problems = user_strategy_problems(config)
    if problems:
        print(ConfigError(args.check, [f"strategy {sid}: {why}" for sid, why in problems.items()]), file=sys.stderr)
        return 2
    print(f"config OK: {args.check}: {len(config.strategies)} strategies ({len(config.spot_strategies())} spot, "
          f"{len(config.options_strategies())} options), feed {config.feed.mode}; engines "
          f"{', '.join(f'{e.name} ({len(e.strategy_ids)})' for e in config.engines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
