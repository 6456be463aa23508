import json
import os

import pytest

from common.state_store import (
    STATE_VERSION,
    EquityLog,
    Journal,
    JournalError,
    StateFileError,
    backup_paths,
    load_state,
    remove_stale_temp_files,
    save_state,
)


def fill(seq: int) -> dict:
    return {"seq": seq, "order_id": f"mom:{seq}", "cash_delta": -1.5 * seq}


# --- state.json ------------------------------------------------------------------------------


def test_save_then_load_round_trip_and_backup(tmp_path):
    path = tmp_path / "state.json"
    assert load_state(path) is None
    save_state(path, {"strategies": {"mom": {"cash": 0.1 + 0.2}}})
    assert load_state(path) == {"strategies": {"mom": {"cash": 0.30000000000000004}}, "version": STATE_VERSION}
    assert not (tmp_path / "state.json.bak").exists()
    first = path.read_bytes()
    save_state(path, {"strategies": {}})
    assert (tmp_path / "state.json.bak").read_bytes() == first
    assert load_state(path) == {"strategies": {}, "version": 1}
    # The first save over a file also starts the rolling backups.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.bak", "state.json.bak.1"]
    assert (tmp_path / "state.json.bak.1").read_bytes() == first


def test_crash_during_rename_leaves_old_file_intact_and_no_temp_litter(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    save_state(path, {"n": 1})
    save_state(path, {"n": 2})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_state(path, {"n": 3})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_state(path)["n"] == 2


def test_crash_on_the_final_rename_keeps_old_state(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    save_state(path, {"n": 1})
    real_replace = os.replace

    def replace_only_backup(src, dst):
        if str(dst) == str(path):
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_only_backup)
    with pytest.raises(OSError):
        save_state(path, {"n": 2})
    monkeypatch.undo()
    assert load_state(path)["n"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.bak", "state.json.bak.1"]


def test_nan_is_rejected_with_its_key_path_and_the_old_file_is_untouched(tmp_path):
    path = tmp_path / "state.json"
    save_state(path, {"n": 1})
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"state\.strategies\.mom\.positions\[1\]: nan is not a finite number"):
        save_state(path, {"strategies": {"mom": {"positions": [1.0, float("nan")]}}})
    with pytest.raises(ValueError, match=r"state\.x: set is not JSON-serializable"):
        save_state(path, {"x": {1}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_save_refuses_another_version(tmp_path):
    with pytest.raises(ValueError, match="version 2"):
        save_state(tmp_path / "state.json", {"version": 2})


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "the file is empty"),
        (b'{"version": 1, "strategies": {"mom": {"cash": 1', "invalid JSON at line 1 column 48"),
        (b'{"version": 1,\n "x": tru}\n', "invalid JSON at line 2 column 7"),
        (b"\x00\x00\x00\x00", "invalid JSON at line 1 column 1"),
        (b"\xff\xfe garbage", "not UTF-8 text"),
        (b"[1, 2]", "expected a JSON object at the top level, got list"),
        (b'{"strategies": {}}', "missing 'version'"),
        (b'{"version": "1"}', "'version' must be an integer >= 1"),
        (b'{"version": 2}', "version 2 was written by a newer go-trader"),
    ],
)
def test_unusable_state_file_raises_and_is_left_byte_identical(tmp_path, content, problem):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateFileError) as info:
        load_state(path)
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert "left untouched" in message and "state.json.bak" in message
    assert info.value.path == str(path)
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"version": 1, "cash": NaN}', "state.cash: nan is not a finite number"),
        (b'{"version": 1, "s": {"m": [1, -Infinity]}}', "state.s.m[1]: -inf is not a finite number"),
        (b'{"version": 1, "cash": 1e400}', "state.cash: inf is not a finite number"),
        (b'{"version": 1, "ts": 123456789012345678901234}',
         "state.ts: integer 12345678901234567890... is out of range"),
        (b'{"version": 1, "n": ' + b"9" * 5000 + b"}", "invalid JSON: Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply to parse"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply to parse"),
    ],
)
def test_non_finite_huge_and_deeply_nested_values_are_refused_naming_the_key(tmp_path, content, problem):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateFileError) as info:
        load_state(path)
    assert problem in str(info.value)
    assert path.read_bytes() == content


def test_a_directory_in_place_of_state_json_is_a_clean_error(tmp_path):
    (tmp_path / "state.json").mkdir()
    with pytest.raises(StateFileError, match=r"state\.json: is a directory, not a state file\. The file was left"):
        load_state(tmp_path / "state.json")


def test_save_never_writes_what_load_would_refuse_and_rotates_nothing(tmp_path):
    path = tmp_path / "state.json"
    save_state(path, {"n": 1})
    save_state(path, {"n": 2})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"state\.x\[0\]: integer 10000000000000000000... is out of range"):
        save_state(path, {"x": [10**40]})
    with pytest.raises(ValueError, match=r"state\.cash: inf"):
        save_state(path, {"cash": float("inf")})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    save_state(path, {"id": "mom:12345678901234567890123", "n": -9223372036854775808})  # text, and int64 min
    assert load_state(path)["n"] == -(2**63)


def _age(path, seconds):
    st = path.stat()
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def test_rolling_backups_are_spaced_out_and_shift_oldest_last(tmp_path):
    path = tmp_path / "state.json"
    saves = 0

    def save():
        nonlocal saves
        saves += 1
        save_state(path, {"n": saves}, backups=3, backup_spacing_s=100)

    save()
    save()  # state n=1 becomes .bak and .bak.1
    assert load_state(tmp_path / "state.json.bak.1")["n"] == 1
    save()  # bak.1 is not 100 s older than the state it would replace: kept
    assert load_state(tmp_path / "state.json.bak")["n"] == 2
    assert load_state(tmp_path / "state.json.bak.1")["n"] == 1
    for n in range(3):  # each round, the current file is 100 s younger than bak.1
        _age(tmp_path / "state.json.bak.1", 100)
        save()
    assert [load_state(p)["n"] for p in backup_paths(path)] == [5, 5, 4, 3]
    _age(tmp_path / "state.json.bak.1", 100)
    save()
    assert [p.name for p in backup_paths(path)] == ["state.json.bak", "state.json.bak.1", "state.json.bak.2",
                                                    "state.json.bak.3"]
    assert [load_state(p)["n"] for p in backup_paths(path)] == [6, 6, 5, 4]
    assert load_state(path)["n"] == 7


def test_stale_temp_files_of_a_crashed_save_are_removed_and_nothing_else(tmp_path):
    path = tmp_path / "state.json"
    save_state(path, {"n": 1})
    for name in (".state.json.abc123.tmp", ".state.json.abc123.bak.tmp", ".other.json.x.tmp", "state.json.tmp"):
        (tmp_path / name).write_text("partial")
    assert remove_stale_temp_files(path) == [".state.json.abc123.bak.tmp", ".state.json.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x.tmp", "state.json", "state.json.tmp"]


# --- journal ---------------------------------------------------------------------------------


def test_journal_appends_reads_and_reopens(tmp_path):
    path = tmp_path / "fills.jsonl"
    with Journal(path) as journal:
        assert journal.last_seq == 0
        journal.append([fill(1), fill(2)])
        journal.append([fill(3)])
        journal.append([])
        assert journal.last_seq == 3
        assert journal.read() == [fill(1), fill(2), fill(3)]
        assert journal.read(after_seq=2) == [fill(3)]
    with Journal(path) as journal:
        assert journal.last_seq == 3
        journal.append([fill(4)])
    assert path.read_text().count("\n") == 4


@pytest.mark.parametrize("tail", [b'{"seq": 3, "order_id": "mo', b'{"seq": 3}', b"\x00\x00\x00", b" "])
def test_torn_tail_without_its_newline_was_never_acknowledged_and_is_cut_on_open(tmp_path, tail):
    path = tmp_path / "fills.jsonl"
    with Journal(path) as journal:
        journal.append([fill(1), fill(2)])
    good = path.read_bytes()
    path.write_bytes(good + tail)
    with Journal(path) as journal:
        assert journal.last_seq == 2
        assert path.read_bytes() == good
        journal.append([fill(3)])
        assert journal.read() == [fill(1), fill(2), fill(3)]


@pytest.mark.parametrize("kept", [b"", b'{"seq": 4, "or'])
def test_an_append_cut_short_by_a_crash_goes_whole_never_only_some_of_its_lines(tmp_path, kept):
    path = tmp_path / "fills.jsonl"
    with Journal(path) as journal:
        journal.append([fill(1)])
        journal.append([fill(2), fill(3), fill(4)])  # one order's legs: all or none
        assert journal.read() == [fill(1), fill(2), fill(3), fill(4)]  # the marks are the journal's own
    first, second, third, _ = path.read_bytes().split(b"\n", 3)
    assert b'"more":true' in second and b'"more":true' in third and b"more" not in first
    path.write_bytes(b"\n".join([first, second, third]) + b"\n" + kept)  # a power cut: the last leg lost
    with Journal(path) as journal:
        assert journal.last_seq == 1 and journal.read() == [fill(1)]
        journal.append([fill(2)])
    assert path.read_bytes() == first + b"\n" + json.dumps(fill(2), separators=(",", ":")).encode() + b"\n"


def test_corrupt_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "fills.jsonl"
    with Journal(path) as journal:
        journal.append([fill(1), fill(2), fill(3)])
    lines = path.read_bytes().split(b"\n")
    lines[1] = b'{"seq": 2, "ord'
    damaged = b"\n".join(lines)
    path.write_bytes(damaged)
    with pytest.raises(JournalError, match=r"fills\.jsonl:2: not valid JSON"):
        Journal(path)
    assert path.read_bytes() == damaged


def test_gap_in_the_file_is_an_error(tmp_path):
    path = tmp_path / "fills.jsonl"
    path.write_text(json.dumps(fill(1)) + "\n" + json.dumps(fill(3)) + "\n")
    with pytest.raises(JournalError, match=r"fills\.jsonl:2: seq 3 where 2 belongs; the journal has a gap"):
        Journal(path)


def test_a_journal_that_does_not_start_at_seq_1_is_an_error(tmp_path):
    path = tmp_path / "fills.jsonl"
    path.write_text(json.dumps(fill(2)) + "\n")
    with pytest.raises(JournalError, match=r"fills\.jsonl:1: seq 2 where 1 belongs; the beginning .* is missing"):
        Journal(path)


@pytest.mark.parametrize("last", [b'{"seq": 3, "ord', b"\x00\x00\x00", b"", b'"seq 3"'])
def test_a_damaged_last_line_that_ends_in_a_newline_is_an_error_and_never_deleted(tmp_path, last):
    path = tmp_path / "fills.jsonl"
    with Journal(path) as journal:
        journal.append([fill(1), fill(2)])
    damaged = path.read_bytes() + last + b"\n"
    path.write_bytes(damaged)
    with pytest.raises(JournalError) as info:
        Journal(path)
    message = str(info.value)
    assert f"{path}:3:" in message and "may have been acknowledged" in message and "Repair line 3" in message
    assert path.read_bytes() == damaged


def test_a_directory_in_place_of_the_journal_is_an_error(tmp_path):
    (tmp_path / "fills.jsonl").mkdir()
    with pytest.raises(JournalError, match="not a regular file"):
        Journal(tmp_path / "fills.jsonl")


def test_line_without_seq_is_an_error(tmp_path):
    path = tmp_path / "fills.jsonl"
    path.write_text('{"order_id": "x"}\n')
    with pytest.raises(JournalError, match=r"fills\.jsonl:1: expected an object with an integer 'seq'"):
        Journal(path)


def test_append_refuses_a_seq_gap_and_writes_nothing(tmp_path):
    path = tmp_path / "fills.jsonl"
    with Journal(path) as journal:
        journal.append([fill(1)])
        with pytest.raises(JournalError, match=r"append\[1\] has seq 4, expected 3"):
            journal.append([fill(2), fill(4)])
        with pytest.raises(JournalError, match="expected 2"):
            journal.append([fill(1)])
        assert journal.last_seq == 1
        assert journal.read() == [fill(1)]


def test_failed_write_leaves_no_partial_line(tmp_path, monkeypatch):
    path = tmp_path / "fills.jsonl"
    with Journal(path) as journal:
        journal.append([fill(1)])
        real_write = os.write

        def half_write(fd, data):
            return real_write(fd, data[: len(data) // 2])

        monkeypatch.setattr(os, "write", half_write)
        with pytest.raises(OSError, match="short write"):
            journal.append([fill(2)])
        monkeypatch.undo()
        journal.append([fill(2)])
        assert journal.read() == [fill(1), fill(2)]


def test_append_rejects_nan(tmp_path):
    with Journal(tmp_path / "fills.jsonl") as journal:
        with pytest.raises(ValueError, match=r"fill\[0\]\.cash_delta: nan"):
            journal.append([{"seq": 1, "cash_delta": float("nan")}])
        assert journal.last_seq == 0


# --- equity log ------------------------------------------------------------------------------


def test_equity_log_round_trip_and_since(tmp_path):
    with EquityLog(tmp_path / "equity.jsonl") as log:
        for i in range(5):
            log.append(1000 + i, {"mom": 100.0 + i})
        assert log.read() == [{"ts": 1000 + i, "values": {"mom": 100.0 + i}} for i in range(5)]
        assert [p["ts"] for p in log.read(since_ts=1003)] == [1003, 1004]
        with pytest.raises(ValueError, match=r"equity\[1005\]\.values\.mom: nan"):
            log.append(1005, {"mom": float("nan")})
        with pytest.raises(ValueError, match="ts must be an integer"):
            log.append(1.5, {})


@pytest.mark.parametrize(
    "n, max_points, expected",
    [
        (10, 4, [0, 3, 6, 9]),
        (11, 4, [0, 4, 8, 10]),
        (10, 10, list(range(10))),
        (10, 1, [9]),
        (100, 7, [0, 17, 34, 51, 68, 85, 99]),
    ],
)
def test_equity_log_downsamples_every_kth_point_plus_the_last(tmp_path, n, max_points, expected):
    with EquityLog(tmp_path / "equity.jsonl") as log:
        for i in range(n):
            log.append(i, {"mom": float(i)})
        points = log.read(max_points=max_points)
    assert [p["ts"] for p in points] == expected
    assert len(points) <= max_points


def test_equity_log_rejects_max_points_below_one(tmp_path):
    with EquityLog(tmp_path / "equity.jsonl") as log:
        with pytest.raises(ValueError, match="max_points"):
            log.read(max_points=0)


@pytest.mark.parametrize("tail", [b'{"ts": 3, "val', b"garbage\n"])
def test_equity_log_tolerates_and_cuts_a_torn_tail(tmp_path, tail):
    path = tmp_path / "equity.jsonl"
    with EquityLog(path) as log:
        log.append(1, {"mom": 1.0})
        log.append(2, {"mom": 2.0})
    good = path.read_bytes()
    path.write_bytes(good + tail)
    with EquityLog(path) as log:
        assert path.read_bytes() == good
        path.write_bytes(good + tail)  # torn again behind its back: read still copes
        assert [p["ts"] for p in log.read()] == [1, 2]


def test_equity_log_skips_and_names_damage_in_the_middle(tmp_path):
    path = tmp_path / "equity.jsonl"
    path.write_bytes(b'{"ts": 1, "values": {}}\nnot json\n{"ts": 3, "values": {}}\n')
    with EquityLog(path) as log:
        assert [p["ts"] for p in log.read()] == [1, 3]
        assert len(log.damaged_lines) == 1 and "equity.jsonl:2: not an equity point" in log.damaged_lines[0]
    assert path.read_bytes().count(b"\n") == 3  # the file itself is never rewritten


def test_equity_curve_stays_bounded_spans_the_whole_history_and_ends_at_the_latest_point(tmp_path):
    path = tmp_path / "equity.jsonl"
    with EquityLog(path, capacity=8) as log:
        for i in range(1000):
            log.append(i, {"mom": float(i)})
        points = log.read()
        assert len(points) <= 9 and points[0]["ts"] == 0 and points[-1]["ts"] == 999
        steps = {b["ts"] - a["ts"] for a, b in zip(points[:-2], points[1:-1])}
        assert len(steps) == 1  # evenly spaced: one stride
    with EquityLog(path, capacity=8) as reopened:  # rebuilt from the file by streaming it
        assert reopened.read() == points


def _reference_curve(points, capacity):
    """The curve written plainly: keep every stride-th point, halve when over capacity, and
    always show the latest point last."""
    kept, stride = [], 1
    for seen, point in enumerate(points):
        if seen % stride == 0:
            kept.append(point)
            if len(kept) > capacity:
                kept, stride = kept[::2], stride * 2
    return kept if kept and kept[-1] is points[-1] else [*kept, points[-1]]


@pytest.mark.parametrize("capacity", [2, 3, 8, 9])
def test_equity_curve_matches_the_plain_halving_rule_across_strategy_sets(tmp_path, capacity):
    # Strategies come and go between points (a config change across a restart).
    ids = [("a",), ("a", "b", "c"), ("b",), ()]
    points = [{"ts": i, "values": {sid: float(i * 10 + k) for k, sid in enumerate(ids[i // 25 % 4])}}
              for i in range(137)]
    with EquityLog(tmp_path / "equity.jsonl", capacity=capacity) as log:
        for p in points:
            log.append(p["ts"], p["values"])
        assert log.read() == _reference_curve(points, capacity)
        assert log.read(max_points=3)[-1] == points[-1]
    with EquityLog(tmp_path / "equity.jsonl", capacity=capacity) as reopened:
        assert reopened.read() == _reference_curve(points, capacity)


def test_equity_curve_memory_is_allocated_once_and_stays_flat(tmp_path):
    import tracemalloc

    values = {f"strategy-{i}": 1000.0 + i for i in range(34)}
    with EquityLog(tmp_path / "equity.jsonl", capacity=256) as log:
        for ts in range(512):  # the curve has filled and halved: every buffer is at its size
            log.append(ts, values)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for ts in range(512, 8_192):  # four more halvings
                log.append(ts, values)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 16_000  # bytes; a dict per kept point would be ~2 KB each, hundreds of KB in all
        assert log.read()[-1] == {"ts": 8_191, "values": values}


def test_equity_log_rejects_a_value_that_is_not_a_number(tmp_path):
    with EquityLog(tmp_path / "equity.jsonl") as log:
        with pytest.raises(ValueError, match=r"values\.mom must be a number, got '1'"):
            log.append(1, {"mom": "1"})
        assert log.read() == []


def test_equity_log_names_a_line_with_a_non_number_value_as_damaged(tmp_path):
    path = tmp_path / "equity.jsonl"
    path.write_bytes(b'{"ts": 1, "values": {"a": 1.5}}\n'
                     b'{"ts": 2, "values": {"a": true}}\n'
                     b'{"ts": 3, "values": {"a": 2}}\n')
    with EquityLog(path) as log:
        assert log.read() == [{"ts": 1, "values": {"a": 1.5}}, {"ts": 3, "values": {"a": 2.0}}]
        assert len(log.damaged_lines) == 1 and "equity.jsonl:2:" in log.damaged_lines[0]


def test_a_failed_equity_append_leaves_no_torn_line_for_the_next_point(tmp_path, monkeypatch):
    path = tmp_path / "equity.jsonl"
    with EquityLog(path) as log:
        log.append(1, {"mom": 1.0})
        real_write = os.write
        monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))
        with pytest.raises(OSError, match="short write"):
            log.append(2, {"mom": 2.0})
        monkeypatch.undo()
        log.append(3, {"mom": 3.0})
    assert path.read_text() == '{"ts":1,"values":{"mom":1.0}}\n{"ts":3,"values":{"mom":3.0}}\n'
    with EquityLog(path) as log:
        assert [p["ts"] for p in log.read()] == [1, 3] and log.damaged_lines == []
