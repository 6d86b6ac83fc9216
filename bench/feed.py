"""The canonical feed: deliveries per second to a local receiver, and what running the feed
costs ingest.

- **deliveries**: a log of ``events`` Meta statuses is derived by the outbox projector
  (in-process, timed: feed events per second and CPU µs per log event), then
  ``acklog serve --role feed`` delivers the whole feed to one subscription whose receiver is
  a separate process on loopback (``python -m bench.feed receiver``); the figure is signed,
  verified-format deliveries per second and the feed process's CPU µs per delivery.
- **ingest cost**: the ingest role alone, closed loop at 32 connections, in interleaved
  rounds with and without a feed process (``serve --role feed``, its default nice 10)
  deriving and delivering what comes in to a receiver; webhooks/s, p99 and the ratio, paired
  per round.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from bench import db, procs, wrkrun
from bench.ingest import Group, acklog_ingest, one_run
from bench.mix import Mix
from bench.progress import log
from bench.stats import median, paired_ratios
from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from projections.feed import subscriptions as subs
from projections.feed.outbox import Outbox


def _status(wamid: str, status: str, ts: int) -> bytes:
    import json

    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1"},
        "statuses": [
            {"id": wamid, "status": status, "timestamp": str(ts), "recipient_id": "15550002222"}
        ],
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(body).encode()


async def _fill(dsn: str, n: int) -> None:
    import datetime as dt

    conn = await connect(dsn)
    try:
        now = dt.datetime.now(dt.UTC)
        batch: list[NewEvent] = []
        for i in range(n):
            status = ("sent", "delivered", "read")[i % 3]
            batch.append(
                NewEvent(
                    channel=db.channel_name("meta"),
                    provider="meta",
                    body=_status(f"wamid.bench.{i // 3}", status, 1_700_000_000 + i),
                    received_at=now,
                    content_type="application/json",
                ).with_dedup_key(None)
            )
            if len(batch) == 5000:
                await write_batch(conn, batch)
                batch = []
        if batch:
            await write_batch(conn, batch)
    finally:
        await conn.close()


@contextlib.contextmanager
def receiver(workdir: Path) -> Iterator[tuple[str, int]]:
    port = procs.free_port()
    argv = [procs.PYTHON, "-m", "bench.feed", "receiver", str(port)]
    with (workdir / "feed-receiver.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=procs.env())
    try:
        procs.wait_port(port, proc)
        yield f"http://127.0.0.1:{port}/hook", port
    finally:
        procs.stop(proc)


@contextlib.contextmanager
def feed_process(
    dsn: str, workdir: Path, name: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    argv = [procs.ACKLOG, "serve", "--role", "feed"]
    with (workdir / f"{name}.log").open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=procs.env(DATABASE_URL=dsn, ACKLOG_FEED_POLL="0.2", **env),
        )
    try:
        yield proc
    finally:
        procs.stop(proc)


async def _received(port: int) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/count") as resp:
            return int(await resp.text())


async def deliveries(server_dsn: str, workdir: Path, events: int) -> dict[str, Any]:
    async with db.database(server_dsn, "acklog_bench_feed") as dsn:
        await db.add_channels(dsn, ["meta"])
        await _fill(dsn, events)
        conn = await connect(dsn)
        try:
            outbox = Outbox(dsn, batch_size=1000)
            cpu, wall = time.process_time(), time.perf_counter()
            await outbox.catch_up(conn)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            feed_events = int(await conn.fetchval("SELECT count(*) FROM feed.events"))
            with receiver(workdir) as (url, port):
                await subs.add(conn, "bench", url, from_start=True)
                with feed_process(dsn, workdir, "feed-deliveries", ACKLOG_FEED_NICE="0") as proc:
                    started = time.perf_counter()
                    cpu0 = procs.cpu_seconds(proc.pid)
                    got = 0
                    while got < feed_events and time.perf_counter() - started < 600:
                        await asyncio.sleep(0.25)
                        got = await _received(port)
                    took = time.perf_counter() - started
                    feed_cpu = procs.cpu_seconds(proc.pid) - cpu0
        finally:
            await conn.close()
    return {
        "log_events": events,
        "feed_events": feed_events,
        "derive_events_per_s": feed_events / wall if wall else 0.0,
        "derive_cpu_us_per_log_event": cpu / events * 1e6,
        "delivered": got,
        "deliveries_per_s": got / took if took else 0.0,
        "feed_process_cpu_us_per_delivery": feed_cpu / max(got, 1) * 1e6,
        "note": "includes the feed process's start-up (a second or so) in the time",
    }


async def ingest_cost(
    server_dsn: str, workdir: Path, runs: int, duration: float, use_wrk: bool
) -> dict[str, Any]:
    dbname = "acklog_bench_feed_ingest"
    async with db.database(server_dsn, dbname) as dsn:
        await db.add_channels(dsn, Mix().providers())
        rounds: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        with receiver(workdir) as (url, _), acklog_ingest(dsn, workdir, 1) as group:
            conn = await asyncpg.connect(dsn)
            try:
                await subs.add(conn, "bench", url)
            finally:
                await conn.close()
            await one_run(group, dsn, dbname, None, 32, 1.0, use_wrk)  # warm-up
            for i in range(runs):
                for mode in ("without", "with") if i % 2 == 0 else ("with", "without"):
                    r = await _one(group, dsn, dbname, workdir, mode, duration, use_wrk)
                    rounds[mode].append(r)
                    log(
                        f"  feed {mode:<7} run {i + 1}/{runs}: {r['ok_rps']:,.0f} webhooks/s,"
                        f" p99 {r['latency_ms']['p99']:.1f} ms"
                    )
    ratios = paired_ratios(rounds["with"], rounds["without"], "ok_rps")
    p99 = paired_ratios(rounds["with"], rounds["without"], "latency_ms.p99")
    return {
        "runs": runs,
        "duration_s": duration,
        "connections": 32,
        "without": {"ok_rps": median([r["ok_rps"] for r in rounds["without"]])},
        "with": {"ok_rps": median([r["ok_rps"] for r in rounds["with"]])},
        "with_over_without": ratios,
        "p99_with_over_without": p99,
        "raw": rounds,
    }


async def _one(
    group: Group, dsn: str, dbname: str, workdir: Path, mode: str, duration: float, use_wrk: bool
) -> dict[str, Any]:
    if mode == "without":
        return await one_run(group, dsn, dbname, "events", 32, duration, use_wrk)
    with feed_process(dsn, workdir, "feed-ingest-cost"):
        await asyncio.sleep(1.0)  # started and caught up with what the last round left
        return await one_run(group, dsn, dbname, "events", 32, duration, use_wrk)


async def run(
    server_dsn: str, workdir: Path, *, runs: int, duration: float, events: int, use_wrk: bool
) -> dict[str, Any]:
    log(f"feed: derive {events:,} log events, deliver them to a local receiver")
    out: dict[str, Any] = {"deliveries": await deliveries(server_dsn, workdir, events)}
    d = out["deliveries"]
    log(
        f"  {d['feed_events']:,} feed events derived at {d['derive_events_per_s']:,.0f}/s;"
        f" {d['delivered']:,} delivered at {d['deliveries_per_s']:,.0f}/s"
    )
    log("feed: ingest with and without the feed process, interleaved")
    out["ingest_cost"] = await ingest_cost(server_dsn, workdir, runs, duration, use_wrk)
    out["client"] = "wrk" if use_wrk and wrkrun.wrk_path() else "bench.loadgen"
    return out


# --- the receiver process ------------------------------------------------------------------


def _receiver_main(port: int) -> None:
    from aiohttp import web

    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.Response(status=204)

    async def counted(request: web.Request) -> web.Response:
        return web.Response(text=str(count))

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", counted)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    if sys.argv[1:2] == ["receiver"]:
        _receiver_main(int(sys.argv[2]))
