"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from aiohttp import web

from eventstore.errors import store_boundary
from service.core.database import POOL
from service.http.errors import UNAVAILABLE
from service.http.responses import error, json_response
from service.ingest.readiness import APPENDS
from service.metrics import registry as metrics


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when appends succeed and the database answers; load balancers stop routing
    webhooks to us if not."""
    failing = request.app[APPENDS].failing()
    if failing is not None:
        return error(
            503,
            "appends_failing",
            f"the last append failed: {failing}",
            headers={"Retry-After": "5"},
        )
    try:
        async with asyncio.timeout(2.0):
            with store_boundary():
                await request.app[POOL].fetchval("SELECT 1")
    except UNAVAILABLE as exc:
        metrics.database_up.set(0)
        return error(503, "database_unavailable", f"database unreachable: {type(exc).__name__}")
    metrics.database_up.set(1)
    return json_response({"status": "ready", "database": "ok"})


def routes() -> list[web.RouteDef]:
    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
