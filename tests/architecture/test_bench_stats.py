"""The bench's arithmetic: nearest-rank percentiles and spreads, from their definitions."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import paired_ratios, percentile, spread
from tests.support import REPO


@pytest.mark.parametrize(
    ("n", "q", "rank"),
    [
        # (values 1..n, percentile, expected 1-based rank), worked out by hand: ceil(q/100*n)
        (100, 99, 99),
        (100, 50, 50),
        (100, 100, 100),
        (1000, 99, 990),
        (10, 99, 10),
        (10, 50, 5),
        (3, 50, 2),
        (4, 50, 2),
        (1, 99, 1),
        (200, 99, 198),
        (100, 29, 29),
        (100, 0, 1),
    ],
)
def test_nearest_rank_known_answers(n: int, q: float, rank: int) -> None:
    assert percentile([float(v) for v in range(1, n + 1)], q) == rank


@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=300), st.integers(1, 100))
def test_percentile_is_the_smallest_value_covering_q_percent(values: list[int], q: int) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    at_or_below = sum(v <= p for v in ordered)
    below = sum(v < p for v in ordered)
    assert at_or_below * 100 >= q * len(ordered)
    assert below * 100 < q * len(ordered)


def test_spread_says_how_many_runs() -> None:
    assert spread([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "n": 3,
        "each": [3.0, 1.0, 2.0],
    }
    assert spread([5.0])["n"] == 1
    assert math.isclose(percentile([], 99), 0.0)


def test_paired_ratios_refuse_unpaired_rounds() -> None:
    a = [{"x": 2.0}, {"x": 4.0}]
    assert paired_ratios(a, [{"x": 1.0}, {"x": 2.0}], "x")["each"] == [2.0, 2.0]
    with pytest.raises(ValueError):
        paired_ratios(a, [{"x": 1.0}], "x")


def _results(**over: object) -> dict[str, object]:
    machine = {
        "date": "d",
        "cpu": "c",
        "cores": 2,
        "memory_gib": 1,
        "kernel": "k",
        "python": "3",
        "packages": {},
        "commit": "abc123",
        "dirty": False,
        "changed_files": [],
    }
    base: dict[str, object] = {
        "machine": machine,
        "postgres": {"version": "18", "where": "embedded", "settings": {}, "cpu_measured": True},
        "load_client": "wrk",
        "bench_seconds": 60.0,
        "started_at": "s",
        "finished_at": "f",
        "runs": 3,
        "mix": {"templates": 1, "samples_per_provider": {}, "constant_share": 0.0},
    }
    base.update(over)
    return base


def test_report_flags_a_dirty_tree_and_single_runs() -> None:
    from bench import report

    clean = report.render(_results())
    assert "commit abc123 (clean tree)" in clean
    assert "uncommitted" not in clean and "no median" not in clean
    dirty = _results(runs=1)
    dirty["machine"] = {**dirty["machine"], "dirty": True, "changed_files": ["bench/x.py"]}  # type: ignore[dict-item]
    text = report.render(dirty)
    assert "Measured on a tree with uncommitted changes" in text and "bench/x.py" in text
    assert "no median, no spread" in text


def test_report_has_no_hand_written_findings() -> None:
    """The audit's hard-coded sentences are gone from the report's source."""

    source = (REPO / "bench" / "report.py").read_text()
    for phrase in ("well under a millisecond", "a third of the work", "10-15 %", "built for every"):
        assert phrase not in source


async def test_postgres_cpu_is_that_of_the_server_serving_the_run(server_dsn: str) -> None:
    """The bench's PG CPU reads one server's processes: its postmaster and its backends."""
    import asyncpg
    import psutil

    from bench import db, procs

    postmaster = await db.postmaster_pid(server_dsn)
    assert postmaster is not None
    conn = await asyncpg.connect(server_dsn)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        assert psutil.Process(backend).parent().pid == postmaster  # type: ignore[union-attr]
        before = procs.postgres_cpu_seconds(postmaster)
        await conn.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
        after = procs.postgres_cpu_seconds(postmaster)
    finally:
        await conn.close()
    assert after - before > 0.05, (before, after)
    # a backend that exits still counts once the postmaster has reaped it: the total does not
    # drop (by more than the clock-tick rounding of /proc's figures: 0.01 s per field)
    with contextlib.suppress(psutil.NoSuchProcess):  # until the postmaster has reaped it
        await asyncio.to_thread(psutil.Process(backend).wait, 10)
    assert procs.postgres_cpu_seconds(postmaster) >= after - 0.02, after
