"""Which signal engine runs which strategy: the config's ``engines`` section, checked and resolved.

An engine is one ``services.signals --engine NAME`` process with its own PUB and REP endpoints
and its own outbox to the portfolio. Each engine picks its strategies by one selector:

- a list of strategy ids;
- ``"spot"`` or ``"options"``: every strategy of that type (the default: two engines);
- ``"hash:I/N"``: shard I of N, by CRC-32 of the strategy id, so the split is the same in every
  process and on every host (Python's ``hash`` is salted per process).

Every strategy must land in exactly one engine. Pure: the config check and the services call it.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

ENGINE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
HASH_RE = re.compile(r"^hash:(?P<index>\d+)/(?P<shards>\d+)$")
TYPE_SELECTORS = ("spot", "options")
MAX_SHARDS = 256
SERVICE_PREFIX = "signals-"  # an engine's service name (heartbeats, logs, supervisord program, keys)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """One engine: its name, the ids of its strategies (config order) and its endpoints."""

    name: str
    strategy_ids: tuple[str, ...]
    pub: str
    rep: str

    @property
    def service(self) -> str:
        """The engine's service name: ``signals-spot`` for the engine ``spot``."""
        return SERVICE_PREFIX + self.name


def show(value: Any) -> str:
    """A value as the user wrote it (JSON)."""
    return json.dumps(value, ensure_ascii=False)


def did_you_mean(word: Any, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """' (did you mean "x"?)' when a close choice exists, else ''. Symbols share their quote
    ("/USDT"), so callers pass a higher ``cutoff`` for them to avoid DOGE -> SOL hints."""
    if not isinstance(word, str):
        return ""
    import difflib  # only a bad name pays for it (0.2 MB in every process that loads a config)

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f' (did you mean "{close[0]}"?)' if close else ""


def shard_of(strategy_id: str, shards: int) -> int:
    """The shard (0..shards-1) of a strategy id: CRC-32 of its UTF-8 bytes, modulo ``shards``."""
    return zlib.crc32(strategy_id.encode("utf-8")) % shards


def selector_problem(selector: Any) -> str | None:
    """Why ``selector`` is not a list of ids, "spot", "options" or "hash:I/N" (None if it is)."""
    if isinstance(selector, list):
        if not selector:
            return "an engine needs at least one strategy"
        bad = next((s for s in selector if not isinstance(s, str)), None)
        return None if bad is None else f"strategy ids are strings, got {show(bad)}"
    if not isinstance(selector, str):
        return "must be a list of strategy ids, \"spot\", \"options\" or \"hash:I/N\""
    if selector in TYPE_SELECTORS:
        return None
    match = HASH_RE.match(selector)
    if match is None:
        return ("must be a list of strategy ids, \"spot\", \"options\" or \"hash:I/N\""
                + did_you_mean(selector, TYPE_SELECTORS))
    index, shards = int(match["index"]), int(match["shards"])
    if not 1 <= shards <= MAX_SHARDS:
        return f"the shard count N must be in 1..{MAX_SHARDS}"
    if index >= shards:
        return f"the shard index I must be in 0..{shards - 1}"
    return None


def select(selector: str | list[str], strategies: Sequence[tuple[str, str]]) -> list[str]:
    """The ids a (valid) selector picks from ``strategies`` ((id, type) pairs, config order)."""
    if isinstance(selector, list):
        wanted = set(selector)
        return [sid for sid, _kind in strategies if sid in wanted]
    if selector in TYPE_SELECTORS:
        return [sid for sid, kind in strategies if kind == selector]
    match = HASH_RE.match(selector)
    assert match is not None, selector
    index, shards = int(match["index"]), int(match["shards"])
    return [sid for sid, _kind in strategies if shard_of(sid, shards) == index]


def assignment_problems(selectors: Mapping[str, Any], strategies: Sequence[tuple[str, str]]) -> list[str]:
    """Every strategy in exactly one engine, and every listed id a real strategy; one
    'json.path: problem' line each. ``selectors`` are the valid ones, by engine name."""
    problems = []
    ids = [sid for sid, _kind in strategies]
    known = set(ids)
    owner: dict[str, str] = {}
    for name, selector in selectors.items():
        if isinstance(selector, list):
            for i, sid in enumerate(selector):
                if sid not in known:
                    problems.append(f"engines.{name}.strategies[{i}]: no strategy has the id {show(sid)}"
                                    f"{did_you_mean(sid, ids)}")
                elif sid in selector[:i]:
                    problems.append(f"engines.{name}.strategies[{i}]: repeats {show(sid)}")
        for sid in select(selector, strategies):
            if sid in owner and owner[sid] != name:
                problems.append(f"engines.{name}.strategies: {show(sid)} is already in engine {show(owner[sid])}; "
                                f"a strategy runs in exactly one engine")
            owner.setdefault(sid, name)
    orphans = [sid for sid in ids if sid not in owner]
    if orphans:
        listed = ", ".join(show(s) for s in orphans[:5]) + (f" and {len(orphans) - 5} more" if len(orphans) > 5 else "")
        problems.append(f"engines: {len(orphans)} strateg{'y is' if len(orphans) == 1 else 'ies are'} in no engine: "
                        f"{listed}; every strategy runs in exactly one engine")
    return problems
