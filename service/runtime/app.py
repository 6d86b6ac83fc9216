"""The aiohttp applications of acklog's process roles; resources live in cleanup_ctx.

- ``ingest_app``: ``/hooks/*`` with the appender and its own pool, ``/healthz``/``/readyz``
  of this process, and every other path forwarded to the API process (``service.http.proxy``).
- ``api_app``: the query API under ``/v1``, ``/openapi.json``, ``/metrics`` and health, with
  a pool of its own and the metrics snapshot.
- ``make_app``: every role in one process (tests, and tools that want one app); the API
  still gets its own pool there, so a slow query never holds a connection ingest needs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from eventstore.append import Appender
from eventstore.pool import create_pool
from projections.clock import Clock, utcnow
from projections.rebuild import bulk_load
from projections.runner import Projector
from service import console
from service.api import feed as feed_api
from service.api import openapi
from service.api import routes as api
from service.core.config import CLOCK, SETTINGS, Settings
from service.core.database import API_POOL, DSN, POOL
from service.http import proxy
from service.http.limiter import KEY_FAILURES, LIMITER, FailureLimiter
from service.http.responses import json_errors
from service.ingest import hooks as ingest
from service.ingest import readiness
from service.ingest.channels import CHANNELS, ChannelCache
from service.ingest.hooks import APPENDER
from service.metrics import registry as metrics
from service.metrics import snapshot
from service.metrics.observe import observe_batch
from service.runtime import health

log = logging.getLogger(__name__)

#: the in-process projector of ``make_app`` (tests wait on it)
PROJECTOR = web.AppKey("projector", Projector)


async def _database(app: web.Application) -> AsyncIterator[None]:
    pool = await create_pool(app[DSN], min_size=2, max_size=10, timeout=5.0)
    app[POOL] = pool
    app[CHANNELS] = ChannelCache(pool)
    yield
    await pool.close()


async def _api_database(app: web.Application) -> AsyncIterator[None]:
    pool = await create_pool(app[DSN], min_size=1, max_size=10, timeout=5.0)
    app[API_POOL] = pool
    yield
    await pool.close()


async def _api_only_database(app: web.Application) -> AsyncIterator[None]:
    """The API process has no ingest: its health checks use the API pool."""
    app[POOL] = app[API_POOL]
    yield


async def _appender(app: web.Application) -> AsyncIterator[None]:
    appender = Appender(
        app[POOL],
        timeout=app[SETTINGS].commit_timeout,
        writers=app[SETTINGS].append_writers,
        on_batch=metrics.append_batch_size.observe,
    )
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
    """The in-process projector of ``make_app`` (leader or standby)."""
    if not app[SETTINGS].run_projector:
        yield
        return
    settings = app[SETTINGS]
    projector = Projector(
        app[DSN],
        clock=app[CLOCK],
        on_batch=observe_batch,
        bulk_catchup=settings.bulk_catchup,
        bulk_load=functools.partial(bulk_load, workers=settings.rebuild_workers or None),
    )
    app[PROJECTOR] = projector
    task = asyncio.create_task(projector.run(), name="acklog-projector")
    yield
    await _cancel(task)


async def _snapshot(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    task = asyncio.create_task(
        snapshot.refresh_forever(app[API_POOL], settings.snapshot_interval, app[CLOCK]),
        name="acklog-metrics-snapshot",
    )
    yield
    await _cancel(task)


def _base(settings: Settings, dsn: str, clock: Clock) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app[DSN] = dsn
    app[CLOCK] = clock
    app[readiness.APPENDS] = readiness.AppendHealth()
    return app


def _add_ingest(app: web.Application) -> None:
    app[LIMITER] = FailureLimiter(app[SETTINGS].auth_failures_per_minute)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_appender)
    app.add_routes(ingest.routes())


def _add_api(app: web.Application) -> None:
    # wrong API keys per client address, counted once for /v1 and the console's sign-in
    app[KEY_FAILURES] = FailureLimiter(app[SETTINGS].auth_failures_per_minute)
    app.cleanup_ctx.append(_api_database)
    app.cleanup_ctx.append(_snapshot)
    app.cleanup_ctx.append(feed_api.hub_ctx)
    if app[SETTINGS].metrics_port is None:  # ACKLOG_METRICS_PORT moves /metrics off the API
        app.add_routes([web.get("/metrics", metrics.metrics_view)])
    app.add_routes(openapi.routes())
    app.add_subapp("/v1", api.make_api(app))
    console.install(app)


def make_app(settings: Settings, dsn: str, *, clock: Clock = utcnow) -> web.Application:
    """Every role in one app; migrations must already be applied (``service.core.database``)."""
    app = _base(settings, dsn, clock)
    _add_ingest(app)
    _add_api(app)
    app.cleanup_ctx.append(_projector)
    app.add_routes(health.routes())
    return app


def ingest_app(settings: Settings, dsn: str, *, clock: Clock = utcnow) -> web.Application:
    """An ingest worker: webhooks and health here, everything else forwarded to the API."""
    app = _base(settings, dsn, clock)
    _add_ingest(app)
    app.add_routes(health.routes())
    proxy.add_forwarding(app, settings.api_upstream)
    return app


def api_app(settings: Settings, dsn: str, *, clock: Clock = utcnow) -> web.Application:
    """The API process: query API, OpenAPI, metrics (all processes'), health."""
    app = _base(settings, dsn, clock)
    _add_api(app)
    app.cleanup_ctx.append(_api_only_database)
    app.add_routes(health.routes())
    return app
