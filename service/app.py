"""The aiohttp application: ingest, health, metrics, query API; resources in cleanup_ctx."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventstore.append import Appender
from eventstore.pool import create_pool
from projections.runner import Clock, Projector, utcnow
from service import api, health, ingest, metrics, openapi, snapshot
from service.auth import FailureLimiter
from service.channels import ChannelCache
from service.config import Settings
from service.observe import observe_batch
from service.responses import json_errors
from service.state import APPENDER, CHANNELS, CLOCK, DSN, LIMITER, POOL, PROJECTOR, SETTINGS

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


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a background task at shutdown; an error it raises while unwinding is logged.

    Cancelling mid-query can surface as a driver error (e.g. a connection reset interrupted
    on its way back to the pool) rather than CancelledError; shutdown must go on regardless.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.warning("background task %s failed while stopping", task.get_name(), exc_info=True)


async def _projector(app: web.Application) -> AsyncIterator[None]:
    """The projector runs beside ingest (leader or standby); ``--no-projector`` turns it off."""
    if not app[SETTINGS].run_projector:
        yield
        return
    projector = Projector(app[DSN], clock=app[CLOCK], on_batch=observe_batch)
    app[PROJECTOR] = projector
    task = asyncio.create_task(projector.run(), name="acklog-projector")
    yield
    await _cancel(task)


async def _snapshot(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    task = asyncio.create_task(
        snapshot.refresh_forever(app[POOL], settings.snapshot_interval, app[CLOCK]),
        name="acklog-metrics-snapshot",
    )
    yield
    await _cancel(task)


def make_app(settings: Settings, dsn: str, *, clock: Clock = utcnow) -> web.Application:
    """Build the app; migrations must already be applied (``service.database``)."""
    app = web.Application(middlewares=[json_errors], client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app[DSN] = dsn
    app[CLOCK] = clock
    app[LIMITER] = FailureLimiter(settings.auth_failures_per_minute)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_appender)
    app.cleanup_ctx.append(_projector)
    app.cleanup_ctx.append(_snapshot)
    app.add_routes(ingest.routes())
    app.add_routes(health.routes())
    app.add_routes([web.get("/metrics", metrics_view)])
    app.add_routes(openapi.routes())
    app.add_subapp("/v1", api.make_api(app))
    return app
