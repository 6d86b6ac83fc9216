"""Failed authentications per client address: past a budget a client is refused for a while
(ingest's webhooks and the console's sign-in, each app with its own limiter)."""

from __future__ import annotations

import time
from collections import OrderedDict

from aiohttp import web


class FailureLimiter:
    """Counts failed authentications per client address in a sliding minute (bounded memory).

    Only failures are limited: a request with valid credentials is never refused, because
    providers drop webhooks after their retries run out.
    """

    def __init__(self, per_minute: int, max_clients: int = 100_000) -> None:
        self.per_minute = per_minute
        self._max = max_clients
        self._hits: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> list[float]:
        hits = [t for t in self._hits.get(client, ()) if now - t < 60.0]
        return hits

    def blocked_for(self, client: str, now: float | None = None) -> float:
        """Seconds until ``client`` may fail again (0 when it is not blocked)."""
        now = time.monotonic() if now is None else now
        hits = self._recent(client, now)
        if len(hits) < self.per_minute:
            return 0.0
        return max(1.0, 60.0 - (now - hits[-self.per_minute]))

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        hits = self._recent(client, now)
        hits.append(now)
        self._hits[client] = hits[-max(self.per_minute, 1) :]
        self._hits.move_to_end(client)
        while len(self._hits) > self._max:
            self._hits.popitem(last=False)


LIMITER = web.AppKey("limiter", FailureLimiter)
#: wrong API keys per client address, one count for ``/v1`` and the console's sign-in alike
KEY_FAILURES = web.AppKey("key_failures", FailureLimiter)
