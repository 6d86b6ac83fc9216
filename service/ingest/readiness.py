"""Whether appends are failing: ``/readyz`` answers 503 while they do.

``SELECT 1`` succeeds on a full disk; an append does not. The ingest path records each
append's outcome here (a store that did not take it, or one that did). ``/readyz`` is 503
while the last outcome is a failure less than ``RECHECK_AFTER`` seconds old: a success clears
it at once, and without traffic (a load balancer that stopped sending us webhooks) it lapses,
so the next webhooks probe the store again (a half-open circuit).
"""

from __future__ import annotations

import time

from aiohttp import web

#: seconds a failed append keeps ``/readyz`` at 503 when no append succeeds after it
RECHECK_AFTER = 10.0


class AppendHealth:
    def __init__(self) -> None:
        self._failed_at: float | None = None
        self._reason = ""

    def failed(self, reason: str) -> None:
        self._failed_at = time.monotonic()
        self._reason = reason

    def stored(self) -> None:
        self._failed_at = None

    def failing(self, now: float | None = None) -> str | None:
        """Why appends are failing, or None when they are not (as far as we know)."""
        if self._failed_at is None:
            return None
        now = time.monotonic() if now is None else now
        if now - self._failed_at >= RECHECK_AFTER:
            return None
        return self._reason


APPENDS = web.AppKey("appends", AppendHealth)
