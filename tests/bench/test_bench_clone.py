"""bench_clone measures what it says: the deltas' size follows the fills, not the book count."""
from __future__ import annotations

from bench import bench_clone


def test_deltas_stay_small_while_the_full_snapshot_grows_with_the_books() -> None:
    small, large = bench_clone.measure(34), bench_clone.measure(300)
    assert large["old_bytes"] > 5 * small["old_bytes"]  # every book's view, each second
    assert large["new_bytes"] < 2 * small["new_bytes"] < small["old_bytes"]
    assert large["book_snapshot_bytes"] > 5 * small["book_snapshot_bytes"]
    rows = bench_clone.report({"34": small, "300": large})
    assert rows[-1][0] == "delta bytes/s at 300 books vs 34 books" and rows[-1][3] == "PASS"
