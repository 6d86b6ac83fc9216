"""Baseline webhook receivers, each run as its own process: ``python -m bench.baselines``.

* ``bare``: an aiohttp handler that reads the body and answers 200 — the ceiling of one
  Python process on this machine.
* ``naive``: one INSERT and COMMIT per request with asyncpg (pool of 10, like acklog's) into
  ``naive_events``, a table of the events table's shape (same columns and indexes; the dedup
  index is not unique, since the naive receiver does not resolve duplicates).
* ``floor``: the *durable floor* (issue 25), the least any durable ingest must do on top of
  ``bare``: each request's body and headers go on a list, and ONE writer task writes whatever
  has gathered with one binary COPY (``copy_records_to_table``) into ``floor_events``, one
  transaction with ``synchronous_commit = on``, then answers that whole batch (every future
  resolved after the COMMIT). No authentication, dedup, positions drawn under a lock, NOTIFY
  or metrics. ``floor_events`` has the events table's columns, its own identity for
  ``position`` (the primary key) and no other index: one timestamp per batch, the headers as
  received (``[name, value]`` pairs, Latin-1, so any byte is kept), an empty dedup key.

None authenticates nor deduplicates: they bound what acklog's work costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
from typing import Any

import asyncpg
from aiohttp import web

from eventstore.events import body_key
from eventstore.pool import create_pool, encode_json
from service.core import eventloop
from service.ingest.headers import kept_headers

NAIVE_TABLE = """
CREATE TABLE IF NOT EXISTS naive_events (
    LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS,
    PRIMARY KEY (position)
);
CREATE INDEX IF NOT EXISTS naive_events_dedup ON naive_events (channel, dedup_key)
    WHERE duplicate_of IS NULL;
CREATE INDEX IF NOT EXISTS naive_events_channel_position ON naive_events (channel, position);
"""

FLOOR_TABLE = """
CREATE TABLE IF NOT EXISTS floor_events (
    LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS,
    PRIMARY KEY (position)
);
"""
#: the columns of an event as a writer gives them (``position`` comes from the table's
#: identity, ``duplicate_of`` stays NULL): what the floor and the bench's COPYs write
EVENT_COLUMNS = (
    "received_at",
    "channel",
    "provider",
    "content_type",
    "headers",
    "body",
    "dedup_key",
)

_INSERT = (
    "INSERT INTO naive_events (received_at, channel, provider, content_type, headers, body,"
    " dedup_key) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_OK = b'{"status":"stored"}'


async def bare(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_OK, content_type="application/json")


POOL = web.AppKey("pool", asyncpg.Pool)


async def naive(request: web.Request) -> web.Response:
    received_at = dt.datetime.now(dt.UTC)
    body = await request.read()
    channel = request.match_info["channel"]
    await request.app[POOL].execute(
        _INSERT,
        received_at,
        channel,
        channel.removeprefix("bench-"),
        request.headers.get("Content-Type"),
        kept_headers(request.raw_headers)[0],
        body,
        body_key(body),
    )
    return web.Response(body=_OK, content_type="application/json")


class Floor:
    """The durable floor's one writer: a list of requests, one COPY per gathered batch."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pending: list[tuple[web.Request, bytes, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((request, body, fut))
        self._wakeup.set()
        await fut
        return web.Response(body=_OK, content_type="application/json")

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            try:
                await self._write(batch)
            except Exception as exc:  # the database did not take it: the batch fails (500)
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.terminate()
                continue
            for _, _, fut in batch:  # after the COMMIT: the COPY ran as its own transaction
                if not fut.done():
                    fut.set_result(None)

    async def _write(self, batch: list[tuple[web.Request, bytes, asyncio.Future[None]]]) -> None:
        if self._conn is None:
            self._conn = await asyncpg.connect(
                self._dsn, server_settings={"synchronous_commit": "on"}
            )
        now = dt.datetime.now(dt.UTC)
        records = []
        for request, body, _ in batch:
            channel = request.match_info["channel"]
            records.append(
                (
                    now,
                    channel,
                    channel.removeprefix("bench-"),
                    request.headers.get("Content-Type"),
                    encode_json(
                        [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers]
                    ),
                    body,
                    "",
                )
            )
        # one statement outside BEGIN is one transaction: it has committed (and, with
        # synchronous_commit on, its WAL is flushed) when the call returns
        await self._conn.copy_records_to_table(
            "floor_events", records=records, columns=EVENT_COLUMNS
        )


def make_app(kind: str, dsn: str | None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    if kind == "bare":
        app.add_routes([web.post("/hooks/{channel}", bare)])
        return app
    assert dsn is not None
    if kind == "floor":
        floor = Floor(dsn)

        async def writer(app: web.Application) -> Any:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(FLOOR_TABLE)
            finally:
                await conn.close()
            task = asyncio.create_task(floor.run())
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(writer)
        app.add_routes([web.post("/hooks/{channel}", floor.handle)])
        return app

    async def database(app: web.Application) -> Any:
        pool = await create_pool(dsn, min_size=2, max_size=10)
        await pool.execute(NAIVE_TABLE)
        app[POOL] = pool
        yield
        await pool.close()

    app.cleanup_ctx.append(database)
    app.add_routes([web.post("/hooks/{channel}", naive)])
    return app


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baselines")
    p.add_argument("kind", choices=("bare", "naive", "floor"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dsn")
    p.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT: N processes, 1 port")
    args = p.parse_args(argv)
    # the same event loop implementation as acklog's (ACKLOG_LOOP: uvloop where installed)
    factory = eventloop.factory()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    web.run_app(
        make_app(args.kind, args.dsn),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        reuse_port=args.reuse_port or None,
        loop=loop,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
