"""The client address of a request: the peer, or what trusted proxies say it is.

On the hot path: allow-lists and the failed-authentication limiter key on it.
"""

from __future__ import annotations

from aiohttp import web

from service.state import SETTINGS


def client_address(request: web.Request) -> str:
    if request.app[SETTINGS].trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.remote or "unknown"
