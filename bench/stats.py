"""Medians, percentiles, spreads and ratios: the arithmetic every figure goes through.

Every figure the report shows is either one measurement (``n == 1``, and the report says so)
or the median of ``n`` rounds with their spread (min, max and each value), never a single run
presented as a median.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none).

    The q-th percentile of n values is the value of rank ``ceil(q / 100 * n)`` (1-based): of
    100 values, p99 is the 99th smallest, p50 the 50th; of 1000, p99 is the 990th.
    """
    if not sorted_values:
        return 0.0
    n = len(sorted_values)
    # round away float noise first (0.29 * 100 = 28.999999999999996 must be rank 29)
    rank = math.ceil(round(q / 100 * n, 9))
    return float(sorted_values[min(max(rank, 1), n) - 1])


def percentiles(sorted_values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(sorted_values, 50),
        "p90": percentile(sorted_values, 90),
        "p99": percentile(sorted_values, 99),
        "max": float(sorted_values[-1]) if sorted_values else 0.0,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median of rounds with what it hides: ``{"median", "min", "max", "n", "each"}``."""
    each = [float(v) for v in values]
    return {
        "median": median(each),
        "min": min(each) if each else 0.0,
        "max": max(each) if each else 0.0,
        "n": len(each),
        "each": each,
    }


def require_rounds(rounds: Sequence[Any], stated: int, what: str) -> None:
    """Refuse a figure made of fewer (or more) rounds than the run said it would make."""
    if len(rounds) != stated:
        raise ValueError(f"{what}: {len(rounds)} rounds measured, {stated} stated")


def dig(run: dict[str, Any], path: str) -> float:
    """``dig(run, "latency_ms.p99")``."""
    value: Any = run
    for part in path.split("."):
        value = value[part]
    return float(value)


def median_of(runs: list[dict[str, Any]], path: str) -> float:
    return median([dig(r, path) for r in runs])


def spread_of(runs: list[dict[str, Any]], path: str) -> dict[str, Any]:
    return spread([dig(r, path) for r in runs])


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def paired_ratios(
    runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]], path: str
) -> dict[str, Any]:
    """Ratios of round *i* of A to round *i* of B (measured back to back), and their spread."""
    if len(runs_a) != len(runs_b):
        raise ValueError(f"paired ratios need as many rounds of each: {len(runs_a)}, {len(runs_b)}")
    return spread([ratio(dig(a, path), dig(b, path)) for a, b in zip(runs_a, runs_b, strict=True)])
