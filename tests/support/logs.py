"""Databases of a test's own for the log's migrations: a new database, migrated up to a given
version or with partitions of a given size (tests/eventstore/test_partitions.py)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from eventstore.migrate import SQL_DIR, migrate
from eventstore.pool import connect
from tests.conftest import with_database

_counter = itertools.count()


@contextlib.asynccontextmanager
async def new_database(server_dsn: str) -> AsyncIterator[str]:
    """An empty database (no migration), dropped afterwards."""
    name = f"acklog_log_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_dsn, name)
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def partitioned_log(server_dsn: str, size: int) -> AsyncIterator[str]:
    """A new log migrated with partitions of ``size`` positions (as if
    ``ACKLOG_PARTITION_EVENTS=size`` had been set when it was created)."""
    async with new_database(server_dsn) as dsn:
        conn = await connect(dsn)
        try:
            await conn.execute(f"SET acklog.partition_events = '{int(size)}'")
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn


def sql_before(directory: Path, version: int) -> Path:
    """A copy of the migrations older than ``version`` in ``directory``/sql."""
    old = directory / "sql"
    old.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if int(path.name[:3]) < version:
            shutil.copy(path, old / path.name)
    return old
