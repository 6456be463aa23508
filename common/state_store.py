"""Files that must survive any crash: state.json, the fill journal, the equity log.

- ``save_state`` replaces state.json atomically (temp file in the same directory, fsync,
  rename, fsync of the directory) and keeps the previous good file as ``state.json.bak``
  (a hard link, so state.json itself is never missing, not even for a moment), plus rolling
  backups ``state.json.bak.1`` .. ``.bak.N`` spaced at least ``BACKUP_SPACING_S`` apart
  (file times, newest first), for damage noticed later than the last save.
- ``load_state`` never modifies a file it cannot read: it raises ``StateFileError`` saying
  what is wrong and what to do, and the service stops instead of starting from scratch.
  A number that is not finite, an integer beyond 64 bits or nesting too deep to parse is
  refused here, naming its key path; ``save_state`` never writes what this would refuse.
- ``Journal`` is the append-only fill history, fsynced before an order is acknowledged;
  replaying it rebuilds the books. ``EquityLog`` is the append-only equity curve.

No clock reads here: every timestamp is passed in.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from array import array
from pathlib import Path
from typing import Any, Mapping, Sequence

STATE_VERSION = 1
# Rolling backups: state.json.bak.1 (newest) .. .bak.BACKUPS, each at least BACKUP_SPACING_S
# older than the one before it, so with the defaults they reach back five to six hours.
BACKUPS = 6
BACKUP_SPACING_S = 3600.0
_MAX_INT = 2**63
# Journal lines of one append but its last carry this key, so an append cut short by a crash
# is recognised whole; readers never see it.
_MORE = "more"
# A JSON integer literal this long may be beyond 64 bits; only then does a save walk the state.
_LONG_INT = re.compile(r"[-\d]\d{18}")
# How far back from the end EquityLog looks for the last complete line on open.
EQUITY_CAPACITY = 1024  # points kept in memory for charts (~0.3 MB for 34 strategies); the file keeps all
_TAIL_CHUNK = 1 << 16


class StateFileError(ValueError):
    """state.json cannot be used; the message names the file, the problem and the way out."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(
            f"{self.path}: {problem}. The file was left untouched. Restore the last good state "
            f"from {self.path}.bak (or an older {self.path}.bak.N), or move the file away to "
            f"rebuild every book from the journal and config."
        )


class JournalError(ValueError):
    """The journal is damaged, disagrees with state.json, or an append would break its
    gap-free sequence; the message names the file, the line or seq, and the way out."""


def _first_bad_value(obj: Any, where: str) -> str | None:
    """Key path and description of the first value state files must not hold: NaN or inf, an
    integer beyond 64 bits, a non-JSON type. Iterative, so no nesting exhausts the stack."""
    stack = [(obj, where)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{path}: {value!r} is not a finite number"
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int):
            if not -_MAX_INT <= value < _MAX_INT:
                return f"{path}: integer {str(value)[:20]}... is out of range"
        elif isinstance(value, (Mapping, list, tuple)):
            if isinstance(value, Mapping):
                items = []
                for key, child in value.items():
                    if not isinstance(key, str):
                        return f"{path}: key {key!r} is not a string"
                    items.append((child, f"{path}.{key}"))
            else:
                items = [(child, f"{path}[{i}]") for i, child in enumerate(value)]
            stack.extend(reversed(items))  # depth-first, in document order
        else:
            return f"{path}: {type(value).__name__} is not JSON-serializable"
    return None


_COMPACT = json.JSONEncoder(allow_nan=False, separators=(",", ":"))  # built once: it writes a journal line per fill


def _dumps(obj: Any, where: str) -> str:
    """Strict, compact JSON: a NaN or an odd type raises ValueError naming its key path."""
    try:
        return _COMPACT.encode(obj)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot save {_first_bad_value(obj, where) or exc}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes the file ``src`` is now: a hard link (saves only ever rename a new file
    over ``src``, so the linked inode never changes), or a copy where links are unsupported."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _rotate_backups(path: Path, tmp: Path, backups: int, spacing_s: float) -> None:
    """Keep ``path`` as ``<path>.bak.1`` when that backup is ``spacing_s`` older than it,
    shifting the older ones up to ``.bak.<backups>`` (file times: no clock read here)."""
    if backups < 1:
        return
    newest = path.with_name(f"{path.name}.bak.1")
    try:
        if path.stat().st_mtime - newest.stat().st_mtime < spacing_s:
            return
    except FileNotFoundError:
        pass
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.bak.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.bak.{n + 1}"))
    _link_or_copy(path, tmp)
    os.replace(tmp, newest)


def backup_paths(path: str | os.PathLike[str]) -> list[Path]:
    """The backups of ``path`` that exist, newest first: ``.bak``, then ``.bak.1``, ``.bak.2`` ..."""
    path = Path(path)
    found = [path.with_name(path.name + ".bak")]
    numbered = [p for p in path.parent.glob(f"{path.name}.bak.*") if p.suffix[1:].isdigit()]
    found += sorted(numbered, key=lambda p: int(p.suffix[1:]))
    return [p for p in found if p.is_file()]


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[str]:
    """Delete the temp files a crash during ``save_state`` of ``path`` left behind; returns
    their names. Call it only while no other process can be saving ``path``."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return sorted(removed)


def save_state(path: str | os.PathLike[str], state: Mapping[str, Any], *, backups: int = BACKUPS,
               backup_spacing_s: float = BACKUP_SPACING_S) -> None:
    """Write ``state`` (stamped with ``version``) so that a crash at any point leaves either
    the old or the new file, complete; the old one is kept as ``<path>.bak`` and, spaced out,
    as ``<path>.bak.1`` .. ``.bak.<backups>``. Nothing is rotated before the new state has
    been serialized, so a state that cannot be written never pushes a good backup out."""
    path = Path(path)
    if state.get("version", STATE_VERSION) != STATE_VERSION:
        raise ValueError(f"save_state: state version {state['version']!r} is not {STATE_VERSION}")
    text = _dumps({**state, "version": STATE_VERSION}, "state")  # compact: the C encoder, ~10x faster
    problem = _first_bad_value(state, "state") if _LONG_INT.search(text) else None
    if problem:  # what load_state would refuse is never written
        raise ValueError(f"cannot save {problem}")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    bak_tmp = tmp.with_suffix(".bak.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            _rotate_backups(path, bak_tmp, backups, backup_spacing_s)
            _link_or_copy(path, bak_tmp)
            os.replace(bak_tmp, path.with_name(path.name + ".bak"))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        bak_tmp.unlink(missing_ok=True)
        raise


def load_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The saved state, or None when there is none yet; any unusable file is an error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise StateFileError(path, "is a directory, not a state file") from None
    except OSError as exc:
        raise StateFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise StateFileError(path, "the file is empty (a crash during a copy, or a full disk?)")
    try:
        state = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StateFileError(path, f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise StateFileError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise StateFileError(path, "nested too deeply to parse") from None
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise StateFileError(path, f"invalid JSON: {exc}") from None
    problem = _first_bad_value(state, "state")
    if problem:
        raise StateFileError(path, problem)
    if not isinstance(state, dict):
        raise StateFileError(path, f"expected a JSON object at the top level, got {type(state).__name__}")
    if "version" not in state:
        raise StateFileError(path, "missing 'version'")
    version = state["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StateFileError(path, f"'version' must be an integer >= 1, got {version!r}")
    if version > STATE_VERSION:
        raise StateFileError(
            path, f"version {version} was written by a newer go-trader (this one reads up to {STATE_VERSION})"
        )
    return state


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_line(line: bytes) -> Any:
    """The JSON value of one line, or None when it does not parse (a torn or garbled write)."""
    try:
        return json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _open_for_append(path: Path) -> int:
    existed = path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if not existed:
        _fsync_dir(path.parent)
    return fd


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


class Journal:
    """Append-only JSON lines of records (dicts) with a gap-free ``seq`` starting at 1.

    Opening scans the file once: it learns ``last_seq`` and checks every line. Only a torn
    tail is cut off: the bytes after the last newline, and the lines of an append whose last
    line is missing (its other lines are marked ``"more": true``). An append writes all its
    lines in one write and fsyncs before the order is acknowledged, so an append without its
    final newline was never acknowledged. A complete line may have been acknowledged: if it is
    damaged, that is an error naming its line number, and nothing is ever deleted or skipped.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise JournalError(f"{self.path}: is not a regular file; move it away and restore the journal")
        records, good_size = self._scan()
        self._last_seq = records[-1]["seq"] if records else 0
        if self.path.exists() and self.path.stat().st_size != good_size:
            _truncate(self.path, good_size)
        self._size = good_size
        self._fd = _open_for_append(self.path)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def _damaged(self, number: int, problem: str) -> JournalError:
        return JournalError(
            f"{self.path}:{number}: {problem}. The line ends in a newline, so its fill may have been "
            f"acknowledged; the journal was left untouched. Repair line {number} (seq {number}) from a copy "
            f"of the journal, or from the fill with that seq in state.json's recent_trades, then start again"
        )

    def _scan(self) -> tuple[list[dict[str, Any]], int]:
        """All records and the byte length they occupy (excluding a torn tail)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], 0
        lines = data.split(b"\n")
        complete = lines[:-1]  # what follows the last newline is a torn tail (or nothing)
        records: list[dict[str, Any]] = []
        size = 0
        batch_end = (0, 0)  # records and bytes up to the end of the last complete append
        for number, line in enumerate(complete, start=1):
            record = _parse_line(line)
            if record is None:
                raise self._damaged(number, f"not valid JSON ({line[:60]!r})")
            seq = record.get("seq") if isinstance(record, dict) else None
            if isinstance(seq, bool) or not isinstance(seq, int):
                raise self._damaged(number, f"expected an object with an integer 'seq', got {line[:80]!r}")
            expected = records[-1]["seq"] + 1 if records else 1
            if seq != expected:
                what = "the journal has a gap" if records else "the beginning of the journal is missing"
                raise JournalError(f"{self.path}:{number}: seq {seq} where {expected} belongs; {what}. "
                                   f"Restore the journal from a copy; it was left untouched")
            records.append(record)
            size += len(line) + 1
            if not record.pop(_MORE, False):
                batch_end = (len(records), size)
        # An append whose last line is missing never finished, so it was never acknowledged:
        # it goes whole, or an option structure could come back with only some of its legs.
        return records[:batch_end[0]], batch_end[1]

    def append(self, fills: Sequence[Mapping[str, Any]]) -> None:
        """Write and fsync ``fills``; acknowledge an order only after this returns."""
        if not fills:
            return
        expected = self._last_seq + 1
        lines = []
        for i, fill in enumerate(fills):
            seq = fill.get("seq")
            if seq != expected + i or isinstance(seq, bool):
                raise JournalError(
                    f"{self.path}: append[{i}] has seq {seq!r}, expected {expected + i} (seq must be gap-free)"
                )
            last = i == len(fills) - 1
            lines.append(_dumps(fill if last else {**fill, _MORE: True}, f"fill[{i}]"))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            os.fsync(self._fd)
        except BaseException:
            # Never leave a partial line for the next append to land after.
            os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self._last_seq = expected + len(fills) - 1

    def read(self, after_seq: int = 0) -> list[dict[str, Any]]:
        """Records with ``seq > after_seq``, oldest first (the journal tail to replay)."""
        records, _ = self._scan()
        return [r for r in records if r["seq"] > after_seq]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EquityLog:
    """Append-only JSON lines ``{ts, values: {strategy_id: value}}`` for equity curves.

    The file keeps every point; reads come from a bounded in-memory curve (``capacity``
    points, halving its resolution whenever it fills, always ending at the latest point), so
    serving a chart costs the same after a year as after an hour. The curve lives in arrays
    allocated once (a row of floats per point, the strategy ids shared between rows), not in a
    dict per point: a service's memory then stays flat while the curve fills and halves,
    instead of rising and falling by megabytes. Not fsynced per point: a power cut may lose
    the last few, which a chart can spare; a torn last line is cut off on open. A damaged line
    in the middle is skipped and listed in ``damaged_lines`` (an equity point is not money), and a
    failed append is cut back, so no torn line ever ends up in the middle.
    """

    def __init__(self, path: str | os.PathLike[str], capacity: int = EQUITY_CAPACITY) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 2:
            raise ValueError(f"equity log: capacity must be an integer >= 2, got {capacity!r}")
        self.path = Path(path)
        self.capacity = capacity
        # Slots 0..capacity hold the curve (one over capacity triggers the halving); the last
        # slot holds the latest point, which the curve may have skipped.
        self._latest_slot = capacity + 1
        slots = capacity + 2
        self._ts = array("q", bytes(8 * slots))
        self._ids: list[tuple[str, ...]] = [()] * slots
        self._width = 0
        self._values = array("d")
        self._count = 0
        self._has_latest = False
        self._latest_in_curve = False
        self._stride = 1
        self._seen = 0
        self.damaged_lines: list[str] = []
        if self.path.exists():
            self._cut_torn_tail()
            self._load()
        self._fd = _open_for_append(self.path)
        self._size = os.fstat(self._fd).st_size

    def _load(self) -> None:
        """Stream the file into the curve, line by line: memory stays bounded however long it is."""
        with open(self.path, "rb") as f:
            for number, line in enumerate(f, start=1):
                point = _parse_line(line)
                ts = point.get("ts") if isinstance(point, dict) else None
                values = point.get("values") if isinstance(point, dict) else None
                if isinstance(ts, bool) or not isinstance(ts, int) or not isinstance(values, dict) \
                        or not all(_is_number(v) for v in values.values()):
                    self.damaged_lines.append(
                        f"{self.path}:{number}: not an equity point {{ts, values}}: {line[:80]!r}")
                    continue
                self._add(ts, values)

    def _write_slot(self, slot: int, ts: int, ids: tuple[str, ...], values: Sequence[float]) -> None:
        if len(ids) > self._width:
            self._widen(len(ids))
        previous = self._ids[slot - 1] if slot else ()
        self._ids[slot] = previous if previous == ids else ids  # rows share one tuple of ids
        self._ts[slot] = ts
        row = slot * self._width
        self._values[row:row + len(values)] = array("d", values)

    def _widen(self, width: int) -> None:
        """More strategies than any point so far (a config change): copy the rows into wider ones."""
        old, old_width = self._values, self._width
        self._values = array("d", bytes(8 * width * len(self._ids)))
        for slot in range(len(self._ids)):
            self._values[slot * width:slot * width + old_width] = old[slot * old_width:(slot + 1) * old_width]
        self._width = width

    def _copy_slot(self, src: int, dst: int) -> None:
        self._ts[dst] = self._ts[src]
        self._ids[dst] = self._ids[src]
        w = self._width
        self._values[dst * w:(dst + 1) * w] = self._values[src * w:(src + 1) * w]

    def _add(self, ts: int, values: Mapping[str, float]) -> None:
        ids, row = tuple(values), [float(v) for v in values.values()]
        self._latest_in_curve = self._seen % self._stride == 0
        if self._latest_in_curve:
            self._write_slot(self._count, ts, ids, row)
            self._count += 1
            if self._count > self.capacity:
                self._halve()
        self._seen += 1
        self._write_slot(self._latest_slot, ts, ids, row)
        self._has_latest = True

    def _halve(self) -> None:
        """Keep every other point (the first included), in place."""
        kept = range(0, self._count, 2)
        for dst, src in enumerate(kept):
            self._copy_slot(src, dst)
        self._latest_in_curve = self._latest_in_curve and (self._count - 1) % 2 == 0
        for slot in range(len(kept), self._count):
            self._ids[slot] = ()
        self._count = len(kept)
        self._stride *= 2

    def _point(self, slot: int) -> dict[str, Any]:
        ids, row = self._ids[slot], slot * self._width
        return {"ts": self._ts[slot], "values": dict(zip(ids, self._values[row:row + len(ids)]))}

    def _cut_torn_tail(self) -> None:
        """Look only at the end of the file, so opening stays cheap however long it gets."""
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            start = max(size - _TAIL_CHUNK, 0)
            f.seek(start)
            tail = f.read()
        good = tail.rfind(b"\n") + 1  # everything after the last newline is torn
        if good:
            last_start = tail.rfind(b"\n", 0, good - 1) + 1
            whole_line_seen = last_start > 0 or start == 0
            if whole_line_seen and _parse_line(tail[last_start:good]) is None:
                good = last_start
        elif start > 0:
            return  # no line end in the last chunk: lines are never this long, leave it be
        if start + good != size:
            _truncate(self.path, start + good)

    def append(self, ts: int, values: Mapping[str, float]) -> None:
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise ValueError(f"equity log: ts must be an integer (ms), got {ts!r}")
        for sid, value in values.items():
            if not _is_number(value):
                raise ValueError(f"equity log: values.{sid} must be a number, got {value!r}")
        data = (_dumps({"ts": ts, "values": dict(values)}, f"equity[{ts}]") + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        except BaseException:
            os.ftruncate(self._fd, self._size)  # never a torn line for the next point to follow
            raise
        self._size += len(data)
        self._add(ts, values)

    def read(self, since_ts: int | None = None, max_points: int | None = None) -> list[dict[str, Any]]:
        """Curve points with ``ts >= since_ts``; with ``max_points``, every k-th point plus the
        last, k chosen so that at most ``max_points`` come back."""
        if max_points is not None and max_points < 1:
            raise ValueError(f"equity log: max_points must be >= 1, got {max_points!r}")
        slots = list(range(self._count))
        if self._has_latest and not self._latest_in_curve:
            slots.append(self._latest_slot)
        slots = [s for s in slots if since_ts is None or self._ts[s] >= since_ts]
        n = len(slots)
        if max_points is not None and n > max_points:
            if max_points == 1:
                slots = [slots[-1]]
            else:
                step = -(-(n - 1) // (max_points - 1))
                sampled = slots[::step]
                if (n - 1) % step:
                    sampled.append(slots[-1])
                slots = sampled
        return [self._point(s) for s in slots]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "EquityLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
