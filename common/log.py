"""Structured one-line log records on stdout, which supervisord captures per program.

Each record is one JSON object: ``{"ts", "level", "service", "event", ...fields}``. Values
under keys that look secret are redacted before they are written, so a webhook URL or token
that slips into a field never reaches a log file.
"""
from __future__ import annotations

import json
import sys
import time
from functools import lru_cache
from typing import Any, TextIO

SECRET_MARKERS = ("token", "secret", "password", "webhook", "api_key", "apikey", "authorization")
REDACTED = "***"
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_NESTED = (dict, list, tuple)  # what redact looks inside


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True for a key that looks like it holds a secret. Cached: a service logs the same few
    dozen field names over and over, and this runs for each of them in every record."""
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def redact(value: Any) -> Any:
    """Copy of ``value`` with every entry under a secret-looking key replaced by ``***``, at
    any depth."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(str(k)) else redact(v) if isinstance(v, _NESTED) else v
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) if isinstance(v, _NESTED) else v for v in value]
    return value


class EventLog:
    """Writes ``event`` records for one service; cheap enough for the hot path at info level."""

    def __init__(self, service: str, stream: TextIO | None = None, level: str = "info") -> None:
        self.service = service
        self.stream = stream or sys.stdout
        self.threshold = LEVELS[level]

    def _write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS[level] < self.threshold:
            return
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "level": level,
            "service": self.service,
            "event": event,
        }
        record.update(redact(fields))
        try:
            self.stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stdout must never take a service down

    def debug(self, event: str, **fields: Any) -> None:
        self._write("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._write("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._write("error", event, fields)
