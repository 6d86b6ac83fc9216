"""The aiohttp application: ingest, health, metrics, query API; resources in cleanup_ctx."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventstore.append import Appender
from eventstore.pool import create_pool
from service import health, ingest, metrics
from service.auth import FailureLimiter
from service.channels import ChannelCache
from service.config import Settings
from service.responses import json_errors
from service.state import APPENDER, CHANNELS, DSN, LIMITER, POOL, SETTINGS

log = logging.getLogger(__name__)


async def metrics_view(request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _database(app: web.Application) -> AsyncIterator[None]:
    pool = await create_pool(app[DSN], min_size=2, max_size=10, timeout=5.0)
    app[POOL] = pool
    app[CHANNELS] = ChannelCache(pool)
    yield
    await pool.close()


async def _appender(app: web.Application) -> AsyncIterator[None]:
    appender = Appender(app[POOL], on_batch=metrics.append_batch_size.observe)
    await appender.start()
    app[APPENDER] = appender
    yield
    await appender.stop()


def make_app(settings: Settings, dsn: str) -> web.Application:
    """Build the app; migrations must already be applied (``service.database``)."""
    app = web.Application(middlewares=[json_errors], client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app[DSN] = dsn
    app[LIMITER] = FailureLimiter(settings.auth_failures_per_minute)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_appender)
    app.add_routes(ingest.routes())
    app.add_routes(health.routes())
    app.add_routes([web.get("/metrics", metrics_view)])
    return app
