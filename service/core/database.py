"""Where the database is: ``DATABASE_URL``, or an embedded PostgreSQL in the data directory."""

from __future__ import annotations

import asyncio
import logging
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import asyncpg
from aiohttp import web

from eventstore.migrate import migrate
from eventstore.pool import open_connection
from service.core.config import Settings, from_env
from service.core.embedded import Embedded

log = logging.getLogger(__name__)

_embedded: dict[Path, Embedded] = {}


def database_url(settings: Settings) -> str:
    """The DSN to use, starting the embedded server on first call when needed.

    The embedded server keeps its data in ``<data_dir>/pg`` so it survives restarts, and is
    stopped when the last acklog process using it exits.
    """
    if settings.database_url:
        return settings.database_url
    return _start_embedded(settings).uri


def embedded_server(settings: Settings) -> Embedded | None:
    """The embedded server this process started (``None`` with a ``DATABASE_URL``)."""
    return None if settings.database_url else _start_embedded(settings)


def _start_embedded(settings: Settings) -> Embedded:
    datadir = (settings.data_dir / "pg").resolve()
    server = _embedded.get(datadir)
    if server is None:
        server = _embedded[datadir] = Embedded.start(datadir)
    return server


class DatabaseUnreachable(Exception):
    """The database did not answer within the wait (``ACKLOG_DB_WAIT``) or refused us for
    good (no such database, wrong password): the message says what to do, in one line."""


def where(dsn: str) -> str:
    """host:port/database of a DSN, without its password (for messages)."""
    url = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qs(url.query)
    host = url.hostname or query.get("host", ["localhost"])[0]
    port = f":{url.port}" if url.port else ""
    return f"{host}{port}{url.path or '/'}"


#: refusals that waiting does not cure, with what to do about them
_FATAL: dict[type[Exception], str] = {
    asyncpg.InvalidCatalogNameError: "the database does not exist: create it (createdb NAME)"
    " or fix the name in DATABASE_URL",
    asyncpg.InvalidPasswordError: "PostgreSQL refused the user or password in DATABASE_URL",
    asyncpg.InvalidAuthorizationSpecificationError: "PostgreSQL refused the user in"
    " DATABASE_URL (check pg_hba.conf and the role)",
}


async def connect_waiting(
    dsn: str,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> asyncpg.Connection:
    """Connect, waiting up to ``timeout`` seconds (``ACKLOG_DB_WAIT``, default 60) while the
    server is unreachable or starting; a line on stderr says what we wait for, every 5 s."""
    wait = from_env().db_wait if timeout is None else timeout
    show = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + wait
    next_report = started
    delay = 0.1
    while True:
        remaining = deadline - loop.time()
        try:
            # each host of a multi-host DATABASE_URL on its own (a failover's new primary is
            # found even while the old one swallows connection attempts)
            conn: asyncpg.Connection = await open_connection(
                dsn, timeout=max(min(5.0, remaining), 0.5)
            )
            return conn
        except tuple(_FATAL) as exc:
            what = next(text for kind, text in _FATAL.items() if isinstance(exc, kind))
            raise DatabaseUnreachable(f"cannot use PostgreSQL at {where(dsn)}: {what}") from None
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
            now = loop.time()
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if now >= deadline:
                raise DatabaseUnreachable(
                    f"cannot reach PostgreSQL at {where(dsn)} after {wait:g}s ({reason});"
                    " start it or fix DATABASE_URL (ACKLOG_DB_WAIT sets how long to wait)"
                ) from None
            if now >= next_report:
                show(
                    f"waiting for PostgreSQL at {where(dsn)} ({reason});"
                    f" {now - started:.0f}s of {wait:g}s (ACKLOG_DB_WAIT)"
                )
                next_report = now + 5.0
            await asyncio.sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 2, 2.0)


async def wait_and_migrate(dsn: str, timeout: float | None = None) -> None:
    """Wait for the database to accept connections (bounded, with progress on stderr), then
    apply pending migrations; ``DatabaseUnreachable`` when it does not come."""
    conn = await connect_waiting(dsn, timeout)
    try:
        # a new log's first partitions are sized by the setting too (sql/084 reads it)
        size = from_env().partition_events
        await conn.execute("SELECT set_config('acklog.partition_events', $1, false)", str(size))
        applied = await migrate(conn)
        if applied:
            log.info("applied migrations %s", applied)
    finally:
        await conn.close()


DSN = web.AppKey("dsn", str)
#: the process's pool (ingest's appends and lookups; the API process's health checks)
POOL = web.AppKey("pool", asyncpg.Pool)
#: the query API's own pool: an API query never waits for, nor holds, an ingest connection;
#: on ``ACKLOG_API_DATABASE_URL`` (a read-only standby) when it is set
API_POOL = web.AppKey("api_pool", asyncpg.Pool)
#: what the API process writes or must see at once (console sessions, the projector's
#: advisory lock): on the primary; the same pool as ``API_POOL`` without a standby
API_PRIMARY = web.AppKey("api_primary", asyncpg.Pool)
