"""Baseline webhook receivers, each run as its own process: ``python -m bench.baselines``.

* ``bare``: an aiohttp handler that reads the body and answers 200 — the ceiling of one
  Python process on this machine.
* ``naive``: one INSERT and COMMIT per request with asyncpg (pool of 10, like acklog's) into
  ``naive_events``, a table of the events table's shape (same columns and indexes; the dedup
  index is not unique, since the naive receiver does not resolve duplicates).

Neither authenticates nor deduplicates: they bound what acklog's work costs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import Any

import asyncpg
from aiohttp import web

from eventstore.events import body_key
from eventstore.pool import create_pool
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


def make_app(kind: str, dsn: str | None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    if kind == "bare":
        app.add_routes([web.post("/hooks/{channel}", bare)])
        return app
    assert dsn is not None

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
    p.add_argument("kind", choices=("bare", "naive"))
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
