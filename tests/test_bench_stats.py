"""The bench's arithmetic: nearest-rank percentiles and spreads, from their definitions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import paired_ratios, percentile, spread


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
