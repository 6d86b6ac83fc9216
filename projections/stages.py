"""Where a projector's time goes: seconds per stage, summed over its batches.

Each stage is timed on the wall clock around one piece of a batch (read, decode, fold, …),
so the figures say "µs per event spent in this stage". With read-ahead the decode of the next
batch runs while this one waits on PostgreSQL, so the stages can add up to more than the
wall time; ``wall`` is kept apart for that reason.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stages:
    """``cpu=True`` also sums this process's CPU per stage (a system call each time, which
    a live projector folding small batches should not pay; the bench turns it on)."""

    def __init__(self, *, cpu: bool = False) -> None:
        self.with_cpu = cpu
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.cpu: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.events = 0
        self.batches = 0

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        cpu = time.process_time() if self.with_cpu else 0.0
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started
            if self.with_cpu:
                self.cpu[name] += time.process_time() - cpu

    def add(self, name: str, seconds: float, cpu: float = 0.0) -> None:
        self.seconds[name] += seconds
        self.cpu[name] += cpu

    def per_event_us(self, *, cpu: bool = False) -> dict[str, float]:
        """µs per event by stage, largest first: wall clock, or this process's CPU."""
        n = max(self.events, 1)
        table = self.cpu if cpu else self.seconds
        return {k: round(v / n * 1e6, 2) for k, v in sorted(table.items(), key=lambda kv: -kv[1])}
