"""Medians, percentiles and ratios: the arithmetic every figure goes through."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(round(q / 100 * len(sorted_values) + 0.5) - 1, 0)
    return float(sorted_values[min(rank, len(sorted_values) - 1)])


def percentiles(sorted_values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(sorted_values, 50),
        "p90": percentile(sorted_values, 90),
        "p99": percentile(sorted_values, 99),
        "max": float(sorted_values[-1]) if sorted_values else 0.0,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def dig(run: dict[str, Any], path: str) -> float:
    """``dig(run, "latency_ms.p99")``."""
    value: Any = run
    for part in path.split("."):
        value = value[part]
    return float(value)


def median_of(runs: list[dict[str, Any]], path: str) -> float:
    return median([dig(r, path) for r in runs])


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def paired_ratios(
    runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]], path: str
) -> dict[str, Any]:
    """Ratios of round *i* of A to round *i* of B (measured back to back), and their median."""
    each = [ratio(dig(a, path), dig(b, path)) for a, b in zip(runs_a, runs_b, strict=False)]
    return {"median": median(each), "each": each}
