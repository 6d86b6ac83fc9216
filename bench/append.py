"""The append alone, on a log of a million rows: ``python -m bench.append [--rows N]``.

Not part of ``make bench`` (filling the log takes a minute); run it when the append SQL
changes. One connection appends batches of fresh events, each batch its own commit, in
interleaved rounds of:

* ``append_events`` as acklog calls it (one statement: lock, positions, dedup, insert);
* the same with no dedup window (``ACKLOG_DEDUP_WINDOW=off``): the lookup probes every
  partition's index, not only those of the partitions within the window (sql/092); the log
  is filled with events received 60 days ago, in ``--partitions`` partitions, so the
  window's floor leaves them all out;
* the same plus the reset query an asyncpg pool runs on every release (acklog before its
  writers kept their connections);
* a binary COPY straight into ``events`` in a transaction: no dedup, no positions returned,
  so a lower bound, not a design (the dedup index would refuse a duplicate "first").

It prints milliseconds per batch and the backend's and the client's CPU µs per event
(``psutil`` on the backend's pid, so the server must run on this host).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import psutil

from bench import db
from bench.baselines import EVENT_COLUMNS
from eventstore import partitions
from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import init_connection
from service.core.config import Settings


def events(n: int, base: int) -> list[NewEvent]:
    now = dt.datetime.now(dt.UTC)
    out = []
    for i in range(n):
        body = b'{"event":"msg_state","msg_data":{"msg_id":%d,"state":"delivered"}}' % (base + i)
        headers = {"user-agent": "wamm/1", "content-type": "application/json", "accept": "*/*"}
        out.append(
            NewEvent(
                channel="bench-wamm",
                provider="wamm",
                body=body,
                received_at=now,
                content_type="application/json",
                headers=headers,
                dedup_key="sha256:" + hashlib.sha256(body).hexdigest(),
            )
        )
    return out


#: seconds: acklog's default dedup window (ACKLOG_DEDUP_WINDOW)
WINDOW = Settings().dedup_window


async def fill(conn: asyncpg.Connection, rows: int) -> None:
    """``rows`` events received 60 days ago, in partitions of the stored size."""
    await partitions.ensure_upto(conn, rows + 1)  # a plain INSERT makes no partition itself
    await conn.execute(
        "INSERT INTO events (received_at, channel, provider, content_type, headers, body,"
        " dedup_key) SELECT now() - interval '60 days', 'bench-' || (i % 11), 'wamm',"
        " 'application/json',"
        " '{\"user-agent\":\"x\"}', convert_to(repeat('x', 300) || i, 'UTF8'),"
        " 'sha256:' || md5(i::text) || md5((i + 1)::text) FROM generate_series(1, $1) i",
        rows,
    )
    await conn.execute("VACUUM ANALYZE events")


async def main(args: argparse.Namespace) -> None:
    with db.server() as (server_dsn, _):
        # the log's partition size, set before it is migrated so that the first partition has
        # it too: acklog's 1M, or --rows / --partitions
        first = None
        if args.partitions:
            first = {"acklog.partition_events": str(max(args.rows // args.partitions, 1))}
        async with db.database(server_dsn, "acklog_bench_append", first) as dsn:
            conn = await asyncpg.connect(dsn)
            await init_connection(conn)
            copy_conn = await asyncpg.connect(dsn)
            await copy_conn.set_type_codec(
                "jsonb",
                encoder=lambda v: b"\x01" + msgspec.json.encode(v),
                decoder=lambda b: msgspec.json.decode(b[1:]),
                schema="pg_catalog",
                format="binary",
            )
            started = time.perf_counter()
            await fill(conn, args.rows)
            kept = len(await partitions.list_partitions(conn, count=False))
            print(
                f"log of {args.rows:,} rows in {kept} partitions filled in"
                f" {time.perf_counter() - started:.1f} s"
            )
            reset = conn.get_reset_query()
            base = 10**9

            async def today(c: asyncpg.Connection, evs: list[NewEvent]) -> None:
                await write_batch(c, evs)

            async def with_reset(c: asyncpg.Connection, evs: list[NewEvent]) -> None:
                await write_batch(c, evs)
                await c.execute(reset)

            async def copy(c: asyncpg.Connection, evs: list[NewEvent]) -> None:
                records = [
                    (e.received_at, e.channel, e.provider, e.content_type, e.headers, e.body,
                     e.dedup_key)
                    for e in evs
                ]  # fmt: skip
                async with c.transaction():
                    await c.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)

            Variant = tuple[str, asyncpg.Connection, Callable[..., Awaitable[Any]], float | None]
            variants: list[Variant] = [
                ("append_events (acklog)", conn, today, WINDOW),
                ("append_events, no dedup window", conn, today, None),
                ("append_events + pool reset query", conn, with_reset, WINDOW),
                ("binary COPY, no dedup (lower bound)", copy_conn, copy, WINDOW),
            ]
            for size in (16, 64):
                for rnd in range(args.rounds):
                    for name, c, fn, window in variants:
                        batches = max(args.events // size, 1)
                        # the partitions this round writes, made ahead as the ingest role
                        # makes them (the COPY variant makes none itself); no more, since the
                        # lookup probes every partition above the floor, empty ones too
                        await partitions.ensure_upto(
                            conn, await partitions.next_position(conn) + batches * size
                        )
                        await partitions.set_dedup_floor(conn, window)
                        backend = psutil.Process(await c.fetchval("SELECT pg_backend_pid()"))
                        me = psutil.Process()
                        b0, c0 = sum(backend.cpu_times()[:2]), sum(me.cpu_times()[:2])
                        t0 = time.perf_counter()
                        for _ in range(batches):
                            evs = events(size, base)
                            base += size
                            await fn(c, evs)
                        wall = time.perf_counter() - t0
                        n = batches * size
                        b = (sum(backend.cpu_times()[:2]) - b0) / n * 1e6
                        cl = (sum(me.cpu_times()[:2]) - c0) / n * 1e6
                        print(
                            f"batch {size:3} round {rnd + 1}  {name:38}"
                            f" {wall / batches * 1000:6.2f} ms/batch  backend {b:5.1f} µs/event"
                            f"  client {cl:5.1f} µs/event"
                        )
            await conn.close()
            await copy_conn.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.append", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the log first")
    p.add_argument("--events", type=int, default=4800, help="events appended per variant")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--partitions", type=int, default=0, help="partitions of the filled log (0: 1M each)"
    )
    asyncio.run(main(p.parse_args()))
