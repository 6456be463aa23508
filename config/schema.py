"""The config schema kept as data, the walker that checks raw JSON against it, and its docs.

One table per section (key -> type, default, constraint, description) drives both the first
validation pass and docs/CONFIG.md, so the documentation cannot drift from what is enforced.
Consistency rules that span sections live in config/settings.py.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from common.timeframes import TIMEFRAME_MS
from config.engines import did_you_mean, selector_problem
from options.params import OPTIONS_PARAMS, PARAMS_RULES

SPOT = "spot"
OPTIONS = "options"
STRATEGY_TYPES = (SPOT, OPTIONS)
OPTIONS_STRATEGY_NAMES = tuple(OPTIONS_PARAMS)
OPTIONS_VENUE_UNDERLYINGS: Mapping[str, tuple[str, ...]] = {"deribit": ("BTC", "ETH"), "ibkr": ("BTC", "ETH")}
FEED_MODES = ("sim", "replay", "live")
SUMMARY_FREQS = ("per_check", "hourly", "daily")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
GATEWAY_TOKEN_ENV = "GO_TRADER_TOKEN"
SERVICE_PORTS: Mapping[str, tuple[int, int]] = {
    "marketdata": (5560, 5561),
    "signals": (5562, 5563),
    "portfolio": (5564, 5565),
    "pricer": (5566, 5567),
}

SYMBOL_RE = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
STRATEGY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
USER_STRATEGY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")  # package.module:function
TCP_ENDPOINT_RE = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d+)$")
MAX_CONFIG_BYTES = 10 * 1024 * 1024  # the default config is 12 KB; 10,000 strategies fit in 3 MB
MAX_DEPTH = 16  # the deepest key is 4 levels down (options.venues.deribit.min_score)


def show(value: Any) -> str:
    """A config value as the user wrote it (JSON), short enough for one error line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Marker:
    """A named sentinel: REQUIRED (no default) and INVALID (a value that failed its check)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUIRED = _Marker("REQUIRED")
INVALID = _Marker("INVALID")


@dataclass(frozen=True, slots=True)
class Derived:
    """A default that depends on other settings; pass 2 fills it in. ``text`` is for the docs."""

    text: str


# ---- value types ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ValueType:
    expected: str  # completes "expected ..."
    doc_name: str
    accepts: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


INTEGER = ValueType("an integer", "integer", _is_int)
NUMBER = ValueType("a number", "number", _is_number)
BOOLEAN = ValueType("true or false", "boolean", lambda v: isinstance(v, bool))
STRING = ValueType("a string", "string", lambda v: isinstance(v, str))
STRING_LIST = ValueType(
    "a list of strings", "list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)
)
STRING_MAP = ValueType(
    "an object of strings", "object of strings",
    lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
)
ENGINE_SELECTOR = ValueType("a list of strategy ids or a string", "list of strings or string",
                            lambda v: isinstance(v, (list, str)))
OBJECT = ValueType("an object", "object", lambda v: isinstance(v, dict))
OBJECT_LIST = ValueType("a list of objects", "list of objects", lambda v: isinstance(v, list))


# ---- constraints: each says what is wrong (problem) and what is allowed (describe) -------------

def _num(v: float) -> str:
    """A bound as a user would write it: 2592000 and 1000000000000, not 2.592e+06."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e19 else f"{v:g}"


@dataclass(frozen=True, slots=True)
class Range:
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def describe(self) -> str:
        low = f"({_num(self.gt)}" if self.gt is not None else f"[{_num(self.ge)}" if self.ge is not None else None
        high = f"{_num(self.lt)})" if self.lt is not None else f"{_num(self.le)}]" if self.le is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"> {_num(self.gt)}" if self.gt is not None else f">= {_num(self.ge)}"
        return f"< {_num(self.lt)}" if self.lt is not None else f"<= {_num(self.le)}"

    def problem(self, v: float) -> str | None:
        ok = (
            (self.gt is None or v > self.gt)
            and (self.ge is None or v >= self.ge)
            and (self.lt is None or v < self.lt)
            and (self.le is None or v <= self.le)
        )
        return None if ok else f"must be {self.describe()}"


@dataclass(frozen=True, slots=True)
class OneOf:
    choices: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(f"`{c}`" for c in self.choices)

    def problem(self, v: str) -> str | None:
        if v in self.choices:
            return None
        return "must be one of " + ", ".join(f'"{c}"' for c in self.choices) + did_you_mean(v, self.choices)


@dataclass(frozen=True, slots=True)
class Matches:
    regex: re.Pattern[str]
    what: str

    def describe(self) -> str:
        return self.what

    def problem(self, v: str) -> str | None:
        return None if self.regex.match(v) else f"must be {self.what}"


@dataclass(frozen=True, slots=True)
class Rule:
    """A check that is neither a range, a choice nor a pattern; ``check`` returns the problem."""

    what: str
    check: Callable[[Any], str | None]

    def describe(self) -> str:
        return self.what

    def problem(self, v: Any) -> str | None:
        return self.check(v)


@dataclass(frozen=True, slots=True)
class Each:
    """Applies ``inner`` to every item of a list (errors name the index) and rejects repeats."""

    inner: Range | OneOf | Matches | Rule

    def describe(self) -> str:
        return f"each {self.inner.describe()}, no repeats"


Constraint = Range | OneOf | Matches | Rule | Each


@dataclass(frozen=True, slots=True)
class Field:
    type: "ValueType | Section"
    doc: str
    default: Any = REQUIRED
    constraint: Constraint | None = None
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    doc: str
    fields: Mapping[str, Field]


# ---- rules that are not ranges or choices --------------------------------------------------

def utc_iso_to_ms(text: str) -> int:
    """'2026-01-01T00:00:00Z' -> ms since the epoch; ValueError unless it is ISO 8601 in UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("must be an ISO 8601 time like 2026-01-01T00:00:00Z") from None
    if moment.utcoffset() is None or moment.utcoffset().total_seconds() != 0:
        raise ValueError("must be in UTC (end it with Z or +00:00)")
    return int(round(moment.replace(tzinfo=timezone.utc).timestamp() * 1000))


def _utc_time_problem(text: str) -> str | None:
    try:
        utc_iso_to_ms(text)
    except ValueError as exc:
        return str(exc)
    return None


def _endpoint_problem(text: str) -> str | None:
    if text.startswith("ipc://"):
        return None if len(text) > len("ipc://") else "ipc:// needs a path"
    match = TCP_ENDPOINT_RE.match(text)
    if not match:
        return "must be tcp://HOST:PORT or ipc://PATH"
    if match["host"] == "*":
        return "must name a host (binding tcp://* exposes the bus to the network)"
    if not 1 <= int(match["port"]) <= 65535:
        return "port must be in 1..65535"
    return None


def endpoint_binds_beyond_loopback(endpoint: str) -> str | None:
    """The host of a tcp endpoint that would listen beyond loopback (0.0.0.0, [::], an interface
    name, a LAN address, a host name), or None for loopback and ipc://."""
    match = TCP_ENDPOINT_RE.match(endpoint)
    if not match:
        return None
    host = match["host"]
    if host == "localhost":
        return None
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False  # an interface or host name: zmq listens wherever it resolves
    return None if loopback else host


LOCAL_ALIAS_PREFIX = "ipc://@go-trader-bus/"  # Linux's abstract socket namespace: no file, gone with its process


def local_alias(endpoint: str) -> str | None:
    """The Unix socket that stands for a loopback tcp endpoint on this host (``bus.local_ipc``):
    its name is the endpoint's host and port, so it is as unique as the port is. None for any
    other endpoint, and off Linux (no abstract namespace)."""
    match = TCP_ENDPOINT_RE.match(endpoint)
    if not match or not sys.platform.startswith("linux") or endpoint_binds_beyond_loopback(endpoint) is not None:
        return None
    return f"{LOCAL_ALIAS_PREFIX}{match['host']}:{match['port']}"


def _url_problem(text: str) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", text) else "must be an http:// or https:// URL"


ENDPOINT_RULE = Rule("`tcp://HOST:PORT` (HOST not `*`) or `ipc://PATH`", _endpoint_problem)
SYMBOL_RULE = Matches(SYMBOL_RE, "BASE/QUOTE in upper case, like BTC/USDT")
TIMEFRAME_RULE = OneOf(tuple(TIMEFRAME_MS))
PERCENT = Range(gt=0, le=100)
# Bounds on every number: wide enough for any real use, narrow enough that a typo (1e308 of
# capital, a fee of 90 %) or an attack cannot reach arithmetic that overflows or means nothing.
MAX_CAPITAL_USD = 1e12
MAX_INTERVAL_SECONDS = 30 * 86_400
MAX_SPEED = 1_000_000
CAPITAL = Range(gt=0, le=MAX_CAPITAL_USD)
INTERVAL = Range(ge=1, le=MAX_INTERVAL_SECONDS)
COST_PCT = Range(ge=0, le=10)
DAYS_TO_EXPIRY = Range(ge=0, le=365)
ENV_NAME_RULE = Matches(ENV_NAME_RE, "an environment variable name, like DISCORD_WEBHOOK_URL")


# ---- the schema ------------------------------------------------------------------------------

FEED_REPLAY = Section("feed.replay", "CSV bars replayed as the market (`feed.mode` = `replay`).", {
    "files": Field(STRING_MAP, "Symbol -> CSV file (`timestamp_ms,open,high,low,close,volume`); "
                   "relative paths resolve against the working directory. Needs every `feed.symbols` entry.", {}),
    "timeframe": Field(STRING, "Timeframe of the CSV rows; every feed timeframe must be a multiple of it.",
                       "1h", TIMEFRAME_RULE),
})

FEED_LIVE = Section("feed.live", "Real exchanges (`feed.mode` = `live`); public data only, no keys.", {
    "exchange": Field(STRING, "CCXT exchange id for spot bars.", "binanceus",
                      Matches(re.compile(r"^[a-z0-9_]+$"), "a CCXT exchange id in lower case")),
    "poll_seconds": Field(NUMBER, "Seconds between polls of the exchange.", 10, Range(ge=0.01, le=3600)),
    "deribit_url": Field(STRING, "Deribit public REST base URL (option chains, index prices).",
                         "https://www.deribit.com/api/v2", Rule("an http(s) URL", _url_problem)),
    "binance_url": Field(STRING, "Scheme and host that replace the exchange's own API host "
                         "(tests point it at a replay server); null uses CCXT's URLs.", None,
                         Rule("an http(s) URL", _url_problem), nullable=True),
})

FEED = Section("feed", "Where market data comes from and how fast market time runs.", {
    "mode": Field(STRING, "`sim`: seeded simulator; `replay`: CSV files; `live`: real exchanges.", "sim",
                  OneOf(FEED_MODES)),
    "symbols": Field(STRING_LIST, "Spot symbols the feed produces; every strategy symbol must be here.",
                     ["BTC/USDT", "ETH/USDT", "SOL/USDT"], Each(SYMBOL_RULE)),
    "timeframes": Field(STRING_LIST, "Bar timeframes the feed produces; must cover every strategy timeframe.",
                        Derived("the strategies' timeframes"), Each(TIMEFRAME_RULE)),
    "speed": Field(NUMBER, "Market seconds per wall second (`sim`, `replay`); `live` runs at 1.",
                   Derived("3600, or 1 in live mode"), Range(gt=0, le=MAX_SPEED)),
    "seed": Field(INTEGER, "Random seed of the simulator: the same seed gives the same market.", 7,
                  Range(ge=0, le=2**63 - 1)),
    "start": Field(STRING, "Market time of the first live bar (`sim`, `replay`), ISO 8601 UTC.",
                   "2026-01-01T00:00:00Z", Rule("ISO 8601 in UTC", _utc_time_problem)),
    "history_days": Field(INTEGER, "Days of bars made before `start` so strategies warm up.", 120,
                          Range(ge=0, le=3650)),
    "replay": Field(FEED_REPLAY, "Replay settings."),
    "live": Field(FEED_LIVE, "Live settings."),
})

ENDPOINTS = Section(
    "endpoints",
    "One PUB and one REP endpoint per service (no broker). All must differ, and bind loopback "
    "(127.0.0.0/8, ::1, localhost) or ipc:// unless `bus.allow_remote` is true.",
    {
        service: Field(
            Section(f"endpoints.{service}", f"{service} endpoints.", {
                "pub": Field(STRING, f"{service} publishes here.", f"tcp://127.0.0.1:{pub}", ENDPOINT_RULE),
                "rep": Field(STRING, f"{service} answers requests here.", f"tcp://127.0.0.1:{rep}", ENDPOINT_RULE),
            }),
            f"{service} endpoints.",
        )
        for service, (pub, rep) in SERVICE_PORTS.items()
    },
)

DEFAULT_ENGINE_PORTS: Mapping[str, tuple[int, int]] = {"options": (5568, 5569)}  # spot: endpoints.signals

ENGINE = Section(
    "engines.<name>",
    "One signal engine (`python -m services.signals --engine NAME`, supervisord program `signals-NAME`). "
    "Without an `engines` section there are two: `spot` (every spot strategy, on `endpoints.signals`) and "
    "`options` (every options strategy, on tcp://127.0.0.1:5568 and :5569). With one, `endpoints.signals` "
    "is unused. Names are 1-32 of a-z, 0-9, `_` and `-`; every strategy runs in exactly one engine; engine "
    "endpoints differ from each other and from every other service's.",
    {
        "strategies": Field(ENGINE_SELECTOR, "Which strategies: a list of ids, `\"spot\"`, `\"options\"`, "
                            "or `\"hash:I/N\"` (shard I of N by CRC-32 of the id).", REQUIRED,
                            Rule("ids, `spot`, `options` or `hash:I/N`", selector_problem)),
        "pub": Field(STRING, "The engine publishes signals, cycles and heartbeats here.", REQUIRED, ENDPOINT_RULE),
        "rep": Field(STRING, "The engine answers `status` here.", REQUIRED, ENDPOINT_RULE),
    },
)

GATEWAY = Section("gateway", "HTTP status server (`/status`, dashboard, `/metrics`, `/healthz`).", {
    "host": Field(STRING, "Listen address. Anything but 127.0.0.1/localhost/::1 needs `allow_remote`.",
                  "127.0.0.1", Matches(re.compile(r"^\S+$"), "a host name or address")),
    "port": Field(INTEGER, "Listen port.", 8099, Range(ge=1, le=65535)),
    "allow_remote": Field(BOOLEAN, f"Allow a non-local `host`; requests then need the bearer token from the "
                          f"`{GATEWAY_TOKEN_ENV}` environment variable.", False),
})

BUS = Section("bus", "Who may use the bus: every socket is CurveZMQ with a key pair per service and a "
              "read-only key (`reader`) for the tap and the CLIs.", {
    "keys_dir": Field(STRING, "Directory of the key pairs (mode 0700, secret files 0600); `make keys` creates "
                      "them, `make run`/`make start` do it first. Relative paths resolve against the working "
                      "directory.", Derived("`keys` beside `state_file`"), Matches(re.compile(r"^\S.*$"), "a path")),
    "local_ipc": Field(BOOLEAN, "On Linux, a service that binds a loopback tcp endpoint also binds a Unix socket "
                       "named after it in the abstract namespace (`ipc://@go-trader-bus/127.0.0.1:5565`), and "
                       "the services connect there instead: the same CurveZMQ keys and handshake without the "
                       "TCP stack (bench_latency compares a bar close -> fill ack with and without it in the "
                       "same run). A tap of your own may use either address. `false`: tcp only.",
                       True),
    "allow_remote": Field(BOOLEAN, "Let `endpoints` bind beyond loopback (`0.0.0.0`, `[::]`, an interface name, a "
                          "LAN address). Clients need a key from `keys_dir` either way.", False),
})

CPU = Section("cpu", "How the services share the cores.", {
    "background_nice": Field(INTEGER, "Nice value of the services off the spot fill path: the pricer and the signal "
                             "engines that run only options strategies. At a bar close the feed, the spot engines "
                             "and the portfolio then get the cores first; the others still get every idle cycle. "
                             "0 runs everything at the same priority.", 10, Range(ge=0, le=19)),
    "background_idle": Field(BOOLEAN, "Run those services under Linux's SCHED_IDLE policy as well, on a host that "
                             "runs nothing else: a service on the fill path that wakes takes the core from them at "
                             "once, where a nice value only weighs their shares (bench_latency reports both). They "
                             "then wait for any busy process: beside a long CPU-bound job (a backtest, a test suite) "
                             "their heartbeats stall and /healthz says 503, so it is off by default. Linux can "
                             "not take it back without privileges: a restart does. Ignored (and logged) where the "
                             "OS has no SCHED_IDLE.", False),
    "split_cores": Field(BOOLEAN, "Give the spot fill path cores of its own: marketdata, the signal engines that "
                         "run spot strategies and the portfolio run on the upper half of the cores go-trader may "
                         "use (rounded up), the pricer, the options-only engines and the gateway on the rest. A "
                         "close's fill then hands over from process to process on a core whose caches hold it, "
                         "and the services off the path cannot take it (bench_latency runs the stack with it off "
                         "beside the default). Does nothing with fewer than two cores. Turn it off when "
                         "the spot engines need more cores than half the host: many engines of spot strategies "
                         "on a small host share the fill path's cores.", True),
})

RISK = Section("risk", "Risk limits for every strategy; a strategy may override any of them under its own `risk`.", {
    "max_position_pct": Field(NUMBER, "Largest position as % of the strategy's equity.", 95, PERCENT),
    "max_consecutive_losses": Field(INTEGER, "Losing trades in a row that trip the circuit breaker.", 5,
                                    Range(ge=1, le=1000)),
    "circuit_breaker_hours": Field(NUMBER, "Market hours a tripped strategy stays paused.", 24,
                                   Range(gt=0, le=8760)),
    "daily_loss_pct": Field(NUMBER, "Loss in one market day (% of day-start equity) that pauses the strategy.",
                            10, PERCENT),
})

_VENUE_KEYS = ("risk_free_rate", "max_positions", "min_score")

OPTIONS_SECTION_FIELDS: dict[str, Field] = {
    "risk_free_rate": Field(NUMBER, "Annual risk-free rate the sim pricer and the options backtester price with "
                            "(Black-Scholes), as a fraction (0.05 = 5 %); live marks are Deribit's own.", 0.0,
                            Range(gt=-1, lt=1)),
    "max_positions": Field(INTEGER, "Open options positions per strategy at most.", 4, Range(ge=1, le=100)),
    "min_score": Field(NUMBER, "Portfolio-aware score a new trade needs to be opened.", 0.3, Range(ge=0, le=1)),
    "timeframe": Field(STRING, "Bars of the underlying that options strategies read (realized vol, IV rank).",
                       "1d", TIMEFRAME_RULE),
    "iv_rank_days": Field(INTEGER, "Days of daily implied vol behind the IV rank (live: Deribit's DVOL index; "
                          "sim: the sim's ATM vol).", 365, Range(ge=2, le=1000)),
    "underlying_quote": Field(STRING, "Quote currency of the underlying's spot symbol (BTC -> BTC/USDT).", "USDT",
                              Matches(re.compile(r"^[A-Z0-9]+$"), "upper case, like USDT")),
}

VENUE_OVERRIDES = {
    venue: Field(
        Section(f"options.venues.{venue}", f"Overrides for {venue}.", {
            key: replace(OPTIONS_SECTION_FIELDS[key], doc=f"{venue} only.", default=Derived(f"options.{key}"))
            for key in _VENUE_KEYS
        }),
        f"Overrides for {venue}.",
    )
    for venue in OPTIONS_VENUE_UNDERLYINGS
}

OPTIONS_SETTINGS = Section("options", "Options pricing and trade selection.", {
    **OPTIONS_SECTION_FIELDS,
    "venues": Field(Section("options.venues", "Per-venue overrides.", VENUE_OVERRIDES), "Per-venue overrides."),
})

DISCORD = Section(
    "discord",
    "Summaries and trade alerts. Secrets come from the environment: a literal token or webhook URL in "
    "the config is an error.",
    {
        "enabled": Field(BOOLEAN, "Post to Discord when the webhook variable is set.", True),
        "webhook_env": Field(STRING, "Environment variable holding the webhook URL.", "DISCORD_WEBHOOK_URL",
                             ENV_NAME_RULE),
        "token": Field(STRING, "Seed field; must stay empty (secrets come from the environment).", ""),
        "channels": Field(Section("discord.channels", "Seed channel ids.", {
            "spot": Field(STRING, "Seed channel id for spot summaries (the webhook picks the channel).", ""),
            "options": Field(STRING, "Seed channel id for options summaries (the webhook picks the channel).", ""),
        }), "Seed channel ids."),
        "spot_summary_freq": Field(STRING, "How often spot summaries are posted: after every cycle (`per_check`), "
                                   "on the first cycle of each market hour (`hourly`) or day (`daily`, UTC).", "hourly",
                                   OneOf(SUMMARY_FREQS)),
        "options_summary_freq": Field(STRING, "How often options summaries (Deribit, IBKR) are posted; as "
                                      "`spot_summary_freq`.", "per_check",
                                      OneOf(SUMMARY_FREQS)),
    },
)

IBKR = Section("ibkr", "Interactive Brokers TWS/Gateway for CME options; `host` null means price with "
               "Black-Scholes only and never connect.", {
    "host": Field(STRING, "TWS/Gateway host, or null.", None, nullable=True),
    "port": Field(INTEGER, "TWS/Gateway port (7497 = paper TWS).", 7497, Range(ge=1, le=65535)),
    "client_id": Field(INTEGER, "API client id.", 17, Range(ge=0, le=2**31 - 1)),
})

TOP = Section("top level", "The file is one JSON object.", {
    "interval_seconds": Field(INTEGER, "Default spot strategy interval (market seconds).", 300, INTERVAL),
    "state_file": Field(STRING, "Portfolio state file; relative paths resolve against the working directory.",
                        "run/state.json", Matches(re.compile(r"^\S.*$"), "a path")),
    "create_state_dir": Field(BOOLEAN, "Create the state file's directory when it is missing; off, a missing "
                              "directory (an unmounted volume?) stops the portfolio instead of starting from zero.",
                              False),
    "strategies_dir": Field(STRING, "Directory of user strategy modules, put on the import path of the processes "
                            "that run them (signals, the config check); relative paths resolve against the working "
                            "directory. `\"strategy\": \"breakout:breakout\"` then names `breakout.py` in it.", None,
                            nullable=True),
    "fee_pct": Field(NUMBER, "Fee per fill, % of notional.", 0.1, COST_PCT),
    "slippage_pct": Field(NUMBER, "Slippage per fill, % of price, against the trader.", 0.0, COST_PCT),
    "price_band_pct": Field(NUMBER, "An order whose declared price (spot) or premium (options) is more than this % "
                            "from the portfolio's own mark is refused; fills are at that mark.", 5.0,
                            Range(gt=0, le=50)),
    "feed": Field(FEED, FEED.doc),
    "endpoints": Field(ENDPOINTS, ENDPOINTS.doc),
    "engines": Field(OBJECT, "Signal engines by name (see `engines.<name>`).",
                     Derived("`spot` and `options`, split by strategy type")),
    "bus": Field(BUS, BUS.doc),
    "cpu": Field(CPU, CPU.doc),
    "gateway": Field(GATEWAY, GATEWAY.doc),
    "risk": Field(RISK, RISK.doc),
    "options": Field(OPTIONS_SETTINGS, OPTIONS_SETTINGS.doc),
    "discord": Field(DISCORD, DISCORD.doc),
    "ibkr": Field(IBKR, IBKR.doc),
    "strategies": Field(OBJECT_LIST, "The strategies to run, native or seed form (see below)."),
})

STRATEGY_RISK = Section("strategies[].risk", "Per-strategy overrides of the top-level `risk`.", {
    key: replace(field, default=Derived(f"risk.{key}")) for key, field in RISK.fields.items()
})

THETA_HARVEST = Section("strategies[].theta_harvest", "Close sold options early.", {
    "enabled": Field(BOOLEAN, "Close short options early on the rules below.", False),
    "profit_target_pct": Field(NUMBER, "Close when this % of the premium is captured.", 60, PERCENT),
    "stop_loss_pct": Field(NUMBER, "Close when the loss reaches this % of the premium.", 200,
                           Range(gt=0, le=10_000)),
    "min_dte_close": Field(INTEGER, "Close when this many days or fewer are left to expiry.", 3, DAYS_TO_EXPIRY),
})

_STRATEGY_COMMON: dict[str, Field] = {
    "id": Field(STRING, "Unique id; used in topics (`signal.<id>`) and the state file.", REQUIRED,
                Matches(STRATEGY_ID_RE, "letters, digits, '-' or '_'")),
    "type": Field(STRING, "`spot` or `options`.", REQUIRED, OneOf(STRATEGY_TYPES)),
    "capital": Field(NUMBER, "Starting paper capital in USD.", REQUIRED, CAPITAL),
    "max_drawdown_pct": Field(NUMBER, "Drawdown from peak equity (%) that stops the strategy.", REQUIRED, PERCENT),
    "interval_seconds": Field(INTEGER, "How often the strategy is checked (market seconds).",
                              Derived("top-level `interval_seconds` (spot), 1200 (options)"), INTERVAL),
    "params": Field(OBJECT, "Strategy parameters. Spot: checked by `strategies.params` (names, types, "
                     "ranges) and stored with defaults filled in; options: checked by `options.params` (names, types, "
                     "ranges; see below) and passed to the strategy as given.", {}),
    "risk": Field(STRATEGY_RISK, STRATEGY_RISK.doc),
}

STRATEGY_SPOT = Section("strategies[] (native form, spot)", "A spot strategy on one symbol's bars.", {
    **_STRATEGY_COMMON,
    "strategy": Field(STRING, "Spot strategy name from `strategies.params`, or a user function "
                      "`package.module:function` importable from `PYTHONPATH` or `strategies_dir` (its keyword "
                      "params and their defaults are its parameters; checked by the processes that run it)."),
    "symbol": Field(STRING, "Symbol traded; must be in `feed.symbols`.", REQUIRED, SYMBOL_RULE),
    "timeframe": Field(STRING, "Bar timeframe the strategy reads.", REQUIRED, TIMEFRAME_RULE),
    "pair": Field(STRING, "Second symbol, for `pairs_spread` only; must differ from `symbol`.", None, SYMBOL_RULE),
})

STRATEGY_OPTIONS = Section("strategies[] (native form, options)", "An options strategy on one underlying.", {
    **_STRATEGY_COMMON,
    "strategy": Field(STRING, "Options strategy name.", REQUIRED, OneOf(OPTIONS_STRATEGY_NAMES)),
    "venue": Field(STRING, "Where the options trade.", REQUIRED, OneOf(tuple(OPTIONS_VENUE_UNDERLYINGS))),
    "underlying": Field(STRING, "Underlying asset; the venue must list it.", REQUIRED,
                        Matches(re.compile(r"^[A-Z0-9]+$"), "upper case, like BTC")),
    "theta_harvest": Field(THETA_HARVEST, THETA_HARVEST.doc),
})

SCRIPT_TIMEOUT_SECONDS = 5.0  # a user's script that takes longer is killed and counted as failed
SEED_SCRIPTS: Mapping[str, tuple[str, str | None]] = {
    "check_strategy.py": (SPOT, None),
    "check_options.py": (OPTIONS, "deribit"),
    "check_options_ibkr.py": (OPTIONS, "ibkr"),
}

STRATEGY_SEED = Section(
    "strategies[] (seed form)",
    "The seed's entries parse unchanged: `script` + `args` replace `strategy`/`symbol`/`timeframe`/`pair` "
    "(spot) or `strategy`/`venue`/`underlying` (options); every other key is as in the native form.",
    {
        "script": Field(STRING, "`check_strategy.py` = spot, `check_options.py` = deribit options, "
                        "`check_options_ibkr.py` = ibkr options (any directory): the built-in strategy named in "
                        "`args`. Any other path is a user's script, run as a subprocess when due (spot only): "
                        "`python SCRIPT ARGS...` must print the seed's JSON (`signal` -1/0/1, `price`, ...) within "
                        "`SCRIPT_TIMEOUT_SECONDS`; relative paths resolve against the working directory.", REQUIRED,
                        Matches(re.compile(r"^\S.*\.py$"), "a path to a .py file")),
        "args": Field(STRING_LIST, "Spot: `[strategy, symbol, timeframe]` plus `pair` for pairs_spread; "
                      "options: `[strategy, underlying]`. A user's script gets them as its command line, and reads "
                      "the bars of `symbol` at `timeframe` (its `strategy` is a free label)."),
        "type": Field(STRING, "Optional in the seed form; must agree with `script`.", Derived("from `script`"),
                      OneOf(STRATEGY_TYPES)),
    },
)

STRATEGY_SECTIONS = (STRATEGY_SPOT, STRATEGY_OPTIONS, STRATEGY_SEED)


# ---- pass 1: the walker ------------------------------------------------------------------------

def check_section(
    raw: Any,
    section: Section,
    path: str,
    errors: list[str],
    *,
    key_paths: Mapping[str, str] | None = None,
    reported: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """Check ``raw`` against ``section``: defaults fill absent keys, bad values become INVALID.

    ``key_paths`` renames keys in error paths (seed form: ``strategy`` -> ``args[0]``);
    unknown keys whose path is in ``reported`` were already reported (as secrets).
    """
    key_paths = key_paths or {}
    if not isinstance(raw, dict):
        errors.append(f"{path or section.title}: expected an object, got {show(raw)}")
        return {key: check_section({}, f.type, join_path(path, key), []) if isinstance(f.type, Section) else INVALID
                for key, f in section.fields.items()}
    for key in raw:
        if key not in section.fields and join_path(path, key) not in reported:
            errors.append(f"{join_path(path, key)}: unknown key{did_you_mean(key, section.fields)}")
    values: dict[str, Any] = {}
    for key, field in section.fields.items():
        where = key_paths.get(key, join_path(path, key))
        if where in reported:
            values[key] = INVALID
        elif key in raw:
            values[key] = check_value(raw[key], field, where, errors, reported)
        elif isinstance(field.type, Section):
            values[key] = check_section({}, field.type, where, errors)
        elif field.default is REQUIRED:
            errors.append(f"{where}: missing required key")
            values[key] = INVALID
        else:
            values[key] = _as_typed(field, field.default)
    return values


def _as_typed(field: Field, value: Any) -> Any:
    """JSON numbers of a NUMBER field become floats, so 95 and 95.0 build the same config."""
    return float(value) if field.type is NUMBER and _is_number(value) else value


def check_value(value: Any, field: Field, where: str, errors: list[str], reported: frozenset[str] | set[str]) -> Any:
    """One value against its field: type first (bool is never a number), then the constraint."""
    if value is None and field.nullable:
        return None
    if isinstance(field.type, Section):
        return check_section(value, field.type, where, errors, reported=reported)
    if not field.type.accepts(value):
        errors.append(f"{where}: expected {field.type.expected}, got {show(value)}")
        return INVALID
    constraint = field.constraint
    if isinstance(constraint, Each):
        ok = True
        for i, item in enumerate(value):
            problem = constraint.inner.problem(item)
            if problem is None and item in value[:i]:
                problem = "repeats an earlier item"
            if problem:
                errors.append(f"{where}[{i}]: {problem}, got {show(item)}")
                ok = False
        return value if ok else INVALID
    if constraint is not None:
        problem = constraint.problem(value)
        if problem:
            errors.append(f"{where}: {problem}, got {show(value)}")
            return INVALID
    return _as_typed(field, value)


# ---- docs ------------------------------------------------------------------------------------------

_VENUES_DOC = ", ".join(f"`{venue}` ({', '.join(u)})" for venue, u in OPTIONS_VENUE_UNDERLYINGS.items())
DOCS_INTRO = f"""\
# Configuration

<!-- Generated from config/schema.py by `python -m config.settings --docs`; do not edit. -->

Every service reads one JSON file (`config/default.json` by default; `make run CONFIG=...`).
Check a file with `python -m config.settings --check PATH`: it lists *every* problem, each as
`json.path: problem, got value`, and exits 2 if there is one.

- Absent keys take the defaults below; unknown keys are errors (with a "did you mean").
- Numbers are JSON numbers (`true` is not a number); integers must be written without a fraction.
- Relative paths resolve against the working directory (services run from the repo root).
- Secrets never live in the config: the Discord webhook comes from the variable named by
  `discord.webhook_env`, the gateway bearer token from `{GATEWAY_TOKEN_ENV}`. A literal token,
  webhook URL or password anywhere in the file is an error.
- Beyond the tables: strategy ids are unique; spot strategy names and `params` are checked by
  `strategies.params`; symbols must be in `feed.symbols` and timeframes in `feed.timeframes`;
  an options strategy reads `UNDERLYING/options.underlying_quote` bars at `options.timeframe`,
  so that symbol must be in `feed.symbols` too; `pairs_spread` needs a `pair` other than
  `symbol`; endpoints are all distinct and bind loopback unless `bus.allow_remote`; in `replay` mode
  every symbol needs an existing file;
  `state_file` is not a directory and no file stands where its parent directories go.
- The file is at most {MAX_CONFIG_BYTES // 2**20} MB and {MAX_DEPTH} levels deep; NaN and Infinity are refused anywhere.
- Capacity: each signal engine must decide every strategy within its deadline (the longer of
  its interval and its bar timeframe, divided by `feed.speed`) on a machine twice as slow as the
  one measured, and no loop turn may outlast the heartbeat (`config/capacity.py`; costs from
  `python -m bench.bench_decision`). A config beyond that is refused with the estimated time,
  the budget and the ceiling at that speed.

Options venues and their underlyings: {_VENUES_DOC}.
Options strategies: {", ".join(f"`{n}`" for n in OPTIONS_STRATEGY_NAMES)}.
"""


def _doc_default(field: Field) -> str:
    if field.default is REQUIRED:
        return "required"
    if isinstance(field.default, Derived):
        return f"= {field.default.text}"
    return f"`{json.dumps(field.default)}`"


def _doc_rows(section: Section, prefix: str = "") -> list[str]:
    rows = []
    for key, field in section.fields.items():
        name = prefix + key
        if isinstance(field.type, Section):
            rows.extend(_doc_rows(field.type, name + "."))
            continue
        kind = field.type.doc_name + (" or null" if field.nullable else "")
        allowed = field.constraint.describe() if field.constraint else ""
        rows.append(f"| `{name}` | {kind} | {_doc_default(field)} | {allowed} | {field.doc} |")
    return rows


def _doc_table(heading: str, section: Section) -> str:
    return "\n".join([
        f"## {heading}",
        "",
        section.doc,
        "",
        "| key | type | default | allowed | description |",
        "|---|---|---|---|---|",
        *_doc_rows(section),
        "",
    ])


def _options_params_table() -> str:
    """The options strategies' `params`, from options.params (the table the check uses)."""
    rows = [f"| `{name}` | `{key}` | `{json.dumps(spec.default)}` | {spec.describe()} |"
            for name, table in OPTIONS_PARAMS.items() for key, spec in table.items()]
    rules = [f"`{name}`: {rule.message}" for name, listed in PARAMS_RULES.items() for rule in listed]
    return "\n".join([
        "## strategies[].params (options)",
        "",
        "Checked by `options.params`: unknown keys, other types and values out of range are errors. "
        "Explicit params override the `theta_harvest` exits. Rules: " + "; ".join(rules) + ".",
        "",
        "| strategy | param | default | allowed |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


def render_markdown() -> str:
    """docs/CONFIG.md, made from the schema tables above."""
    top_scalars = Section(TOP.title, TOP.doc, {k: f for k, f in TOP.fields.items() if not isinstance(f.type, Section)})
    parts = [DOCS_INTRO, _doc_table("Top level", top_scalars)]
    parts += [_doc_table(f"`{f.type.title}`", f.type) for f in TOP.fields.values() if isinstance(f.type, Section)]
    parts.append(_doc_table(f"`{ENGINE.title}`", ENGINE))
    parts += [_doc_table(s.title, s) for s in STRATEGY_SECTIONS]
    parts.append(_options_params_table())
    return "\n".join(parts)
