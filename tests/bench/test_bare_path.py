"""bench.bare_path: the close -> ack path with nothing of go-trader's, in three processes."""
from __future__ import annotations

from bench import bare_path


def test_every_close_is_acknowledged_after_it_and_the_probe_journal_is_removed(tmp_path):
    latencies = bare_path.close_to_ack(tmp_path, samples=30, spacing_s=0.005)
    assert len(latencies) == 30  # the warm-up closes are not among them
    assert all(0 < ms < 1_000 for ms in latencies)  # the ack comes after its close's wall time
    assert list(tmp_path.iterdir()) == []
