"""The clock deadlines, sweeps and health run on: ours (invariant 7), injectable in tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
