"""Progress lines on stderr, stamped with the time since the bench started."""

from __future__ import annotations

import sys
import time

_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def elapsed() -> float:
    return time.monotonic() - _T0
