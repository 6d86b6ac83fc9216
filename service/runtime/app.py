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

import asyncpg
from aiohttp import web

from eventstore import partitions
from eventstore.append import Appender
from eventstore.errors import DRIVER_ERRORS
from eventstore.pool import close_pool, create_pool
from projections.clock import Clock, utcnow
from projections.rebuild import bulk_load
from projections.runner import Projector
from service import console
from service.api import feed as feed_api
from service.api import openapi
from service.api import routes as api
from service.core.config import CLOCK, SETTINGS, Settings
from service.core.database import API_POOL, API_PRIMARY, DSN, POOL
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
    await close_pool(pool)


#: seconds a standby is behind in replay: 0 on a primary, and when it has replayed all it
#: received (an idle primary sends nothing, and the last replay's age would grow for nothing)
_REPLICA_LAG = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
END::float8
"""


class ReplicaLag:
    """The API standby's last measured lag (None: no standby, or not measured yet)."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    async def measure_forever(self, pool: asyncpg.Pool, interval: float) -> None:
        while True:
            try:
                async with asyncio.timeout(max(interval, 5.0)):
                    self.seconds = float(await pool.fetchval(_REPLICA_LAG))
                metrics.api_replica_lag_seconds.set(self.seconds)
            except DRIVER_ERRORS as exc:
                if self.seconds is not None:
                    log.warning("API standby lag unknown: %s", exc)
                self.seconds = None
            await asyncio.sleep(interval)


REPLICA_LAG = web.AppKey("replica_lag", ReplicaLag)


async def _api_database(app: web.Application) -> AsyncIterator[None]:
    """The API's pool, on the standby when ``ACKLOG_API_DATABASE_URL`` names one (and then
    a small pool on the primary for what must be written or seen at once)."""
    standby = app[SETTINGS].api_database_url
    pool = await create_pool(standby or app[DSN], min_size=1, max_size=10, timeout=5.0)
    app[API_POOL] = pool
    primary = pool
    measuring = None
    if standby:
        primary = await create_pool(app[DSN], min_size=1, max_size=4, timeout=5.0)
        measuring = asyncio.create_task(
            app[REPLICA_LAG].measure_forever(pool, app[SETTINGS].snapshot_interval),
            name="acklog-replica-lag",
        )
    app[API_PRIMARY] = primary
    yield
    if measuring is not None:
        await _cancel(measuring)
    await close_pool(pool)
    if primary is not pool:
        await close_pool(primary)


async def _replica_lag_header(request: web.Request, response: web.StreamResponse) -> None:
    """``X-Acklog-Replica-Lag`` (seconds) on API and console answers read from a standby."""
    lag = request.config_dict[REPLICA_LAG].seconds
    if lag is not None and request.path.startswith(("/v1", "/ui")):
        response.headers["X-Acklog-Replica-Lag"] = f"{lag:.3f}"


async def _api_only_database(app: web.Application) -> AsyncIterator[None]:
    """The API process has no ingest: its health checks use its pool on the primary."""
    app[POOL] = app[API_PRIMARY]
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
    await _partitions_ahead(app[POOL], app[SETTINGS])
    ahead = asyncio.create_task(
        _partitions_ahead_forever(app[POOL], app[SETTINGS]), name="acklog-partitions"
    )
    yield
    await _cancel(ahead)
    await appender.stop()


async def _partitions_ahead(pool: asyncpg.Pool, settings: Settings) -> None:
    """Make the log's partitions ahead of the next position (``partitions.AHEAD`` of
    ``ACKLOG_PARTITION_EVENTS`` positions), then move the dedup floor to the oldest partition
    within ``ACKLOG_DEDUP_WINDOW``. append_events makes a partition itself if these run out,
    and a floor not moved only costs lookups, so a failure here is only logged."""
    try:  # bounded: a database that hangs must not keep ingest from starting
        async with asyncio.timeout(5.0), pool.acquire() as conn:
            made = await partitions.ensure(conn, settings.partition_events)
            await partitions.set_dedup_floor(conn, settings.dedup_window)
    except DRIVER_ERRORS as exc:
        log.warning("could not make log partitions ahead or move the dedup floor: %s", exc)
        return
    if made:
        log.info("log partitions made ahead: %s", ", ".join(made))


async def _partitions_ahead_forever(
    pool: asyncpg.Pool, settings: Settings, every: float = 60.0
) -> None:
    while True:
        await asyncio.sleep(every)
        await _partitions_ahead(pool, settings)


#: seconds a cancelled background task gets to unwind at shutdown
CANCEL_SECONDS = 2.0


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a background task at shutdown; an error it raises while unwinding is logged.

    Cancelling mid-query can surface as a driver error (e.g. a connection reset interrupted
    on its way back to the pool) rather than CancelledError; shutdown must go on regardless.
    It goes on after ``CANCEL_SECONDS`` too: with the database hung, asyncpg's cancel request
    and the connection's release wait on the server without a bound (then ``close_pool``
    cuts the connection).
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_SECONDS)
    if not done:
        log.warning(
            "background task %s did not stop within %.0f s", task.get_name(), CANCEL_SECONDS
        )
        return
    try:
        task.result()
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
        # on the primary: the gauges say where the log and the projector are, not a standby
        snapshot.refresh_forever(app[API_PRIMARY], settings.snapshot_interval, app[CLOCK]),
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
    app[REPLICA_LAG] = ReplicaLag()
    app.on_response_prepare.append(_replica_lag_header)
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
