"""The canonical feed: deliveries per second to a local receiver, and what running the feed
costs ingest.

- **deliveries**: a log of ``events`` Meta statuses is derived by the outbox projector
  (in-process, timed: feed events per second and CPU µs per log event), then
  ``acklog serve --role feed`` (at nice 0 here: this measures its speed) delivers the whole
  feed to one subscription whose receiver is a separate process on loopback
  (``python -m bench.feed receiver``); the figure is signed, verified-format deliveries per
  second and the feed process's CPU µs per delivery.
- **ingest cost**: the ingest role alone, closed loop at 32 connections, in interleaved
  rounds with and without a feed process (``serve --role feed`` at its default priority,
  SCHED_IDLE) deriving and delivering what comes in; webhooks/s, p99 and the ratio, paired
  per round. Each round with the feed starts with it caught up (what the rounds without it
  logged is skipped: its checkpoint and the cursor are moved to the ends); the report gives
  what it derived and delivered during the round, and how long it took to catch up after.
  The receiver stands in for the subscriber's own system, which runs elsewhere: here it
  runs under SCHED_IDLE too. CPU seconds are split per party: ingest, the feed process, the
  feed's PostgreSQL backends (``application_name`` ``acklog-feed…``), the other PostgreSQL
  processes, the receiver, the load client, and the whole machine's busy time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import psutil

from bench import db, procs, wrkrun
from bench.ingest import Group, acklog_ingest, one_run
from bench.mix import Mix
from bench.progress import log
from bench.stats import median, paired_ratios, spread
from eventstore import checkpoint
from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from projections.feed import store
from projections.feed import subscriptions as subs
from projections.feed.outbox import FEED_CHECKPOINT, Outbox


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
def receiver(workdir: Path, *, idle: bool = False) -> Iterator[tuple[str, int, int]]:
    """The subscriber's endpoint: (URL, port, pid). ``idle``: under SCHED_IDLE, standing in
    for a system that runs elsewhere (it then takes no CPU ingest wants)."""
    port = procs.free_port()
    argv = [procs.PYTHON, "-m", "bench.feed", "receiver", str(port)]
    with (workdir / "feed-receiver.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=procs.env())
    try:
        if idle:
            os.sched_setscheduler(proc.pid, os.SCHED_IDLE, os.sched_param(0))
        procs.wait_port(port, proc)
        yield f"http://127.0.0.1:{port}/hook", port, proc.pid
    finally:
        procs.stop(proc)


def policy_name(pid: int) -> str:
    try:
        policy = os.sched_getscheduler(pid)
    except OSError:
        return "?"
    if policy == getattr(os, "SCHED_IDLE", None):
        return "SCHED_IDLE"
    return f"nice {psutil.Process(pid).nice()}"


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
            with receiver(workdir) as (url, port, _):
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


def _named(dsn: str, application_name: str) -> str:
    """``dsn`` with an ``application_name`` for the connections that set none of their own,
    so the bench can tell the feed's PostgreSQL backends from the others."""
    parts = urllib.parse.urlsplit(dsn)
    query = [*urllib.parse.parse_qsl(parts.query), ("application_name", application_name)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class Breakdown:
    """CPU seconds of each party during one round: the ingest server, the feed process, the
    feed's PostgreSQL backends (``application_name`` ``acklog-feed…``), the other backends
    and PostgreSQL processes, the receiver, and the whole machine's busy time (the bench's
    load client is counted by the caller from ``client_cpu_s``)."""

    def __init__(self, dsn: str, pids: dict[str, Callable[[], list[int]]]) -> None:
        self.dsn, self.pids = dsn, pids

    async def _feed_backends(self) -> dict[int, float]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'acklog-feed%'"
            )
        finally:
            await conn.close()
        return {r["pid"]: procs.cpu_seconds(r["pid"]) for r in rows}

    async def _sample(self) -> tuple[dict[str, float], dict[int, float], float, float]:
        own = {k: sum(procs.cpu_seconds(p) for p in f()) for k, f in self.pids.items()}
        master = procs._postmaster
        pg = procs.postgres_cpu_seconds(master) if master is not None else 0.0
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        return own, await self._feed_backends(), pg, busy

    async def _wal(self, since: str | None = None) -> str:
        """The WAL's insert position, or the bytes written since ``since``."""
        conn = await asyncpg.connect(self.dsn)
        try:
            if since is None:
                return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))
            return str(
                await conn.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", since
                )
            )
        finally:
            await conn.close()

    async def start(self) -> None:
        self._t0 = time.perf_counter()
        self._lsn = await self._wal()
        self._own, self._fb, self._pg, self._busy = await self._sample()

    async def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        #: WAL bytes written meanwhile, by everyone (ingest and, in a round with it, the feed)
        self.wal_bytes = float(await self._wal(self._lsn))
        own, fb, pg, busy = await self._sample()
        out = {k: max(v - self._own.get(k, 0.0), 0.0) for k, v in own.items()}
        feed_pg = sum(max(v - self._fb.get(p, 0.0), 0.0) for p, v in fb.items())
        out["postgres_feed"] = feed_pg
        out["postgres_other"] = max(pg - self._pg - feed_pg, 0.0)
        out["machine_busy"] = busy - self._busy
        out["machine_capacity"] = wall * (psutil.cpu_count() or 1)
        out["wall"] = wall
        return {k: round(v, 3) for k, v in out.items()}


class FeedState(msgspec.Struct, frozen=True):
    log_last: int  # the log's last position
    derived_to: int  # the outbox's checkpoint
    feed_last: int  # the feed's last seq
    cursor: int  # the subscription's cursor
    received: int  # requests the receiver answered

    @property
    def caught_up(self) -> bool:
        return self.derived_to >= self.log_last and self.cursor >= self.feed_last


async def _state(dsn: str, port: int) -> FeedState:
    conn = await asyncpg.connect(dsn)
    try:
        log_last = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        derived_to = await checkpoint.load(conn, FEED_CHECKPOINT)
        feed_last = await store.last_seq(conn)
        cursor = (await subs.get(conn, "bench")).cursor
    finally:
        await conn.close()
    return FeedState(log_last, derived_to, feed_last, cursor, await _received(port))


async def _skip_to_end(dsn: str) -> None:
    """The feed (stopped) skips what the rounds without it logged: its checkpoint and the
    subscription's cursor move to the ends, so a round with the feed starts caught up."""
    conn = await asyncpg.connect(dsn)
    try:
        last = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        async with conn.transaction():
            await checkpoint.reset(conn, FEED_CHECKPOINT, last)
        await subs.rewind(conn, "bench", await store.last_seq(conn))
    finally:
        await conn.close()


#: seconds a feed gets to catch up after a round before the bench gives up waiting
CATCH_UP_LIMIT = 300.0


async def ingest_cost(
    server_dsn: str, workdir: Path, runs: int, duration: float, use_wrk: bool, **feed_env: str
) -> dict[str, Any]:
    dbname = "acklog_bench_feed_ingest"
    async with db.database(server_dsn, dbname) as dsn:
        await db.add_channels(dsn, Mix().providers())
        rounds: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        with (
            receiver(workdir, idle=True) as (url, port, receiver_pid),
            acklog_ingest(dsn, workdir, 1) as group,
        ):
            conn = await asyncpg.connect(dsn)
            try:
                await subs.add(conn, "bench", url)
            finally:
                await conn.close()
            await one_run(group, dsn, dbname, None, 32, 1.0, use_wrk)  # warm-up
            for i in range(runs):
                for mode in ("without", "with") if i % 2 == 0 else ("with", "without"):
                    r = await _one(
                        group,
                        dsn,
                        dbname,
                        workdir,
                        (port, receiver_pid),
                        mode,
                        duration,
                        use_wrk,
                        feed_env,
                    )
                    rounds[mode].append(r)
                    extra = ""
                    if mode == "with":
                        f = r["feed"]
                        extra = (
                            f"; feed during it: {f['log_events_derived']:,} log events derived,"
                            f" {f['delivered']:,} delivered; caught up {f['catch_up_s']:.1f} s"
                            f" after ({f['delivered_after']:,} more)"
                        )
                    cpu = r["cpu_s"]
                    log(
                        f"  feed {mode:<7} run {i + 1}/{runs}: {r['ok_rps']:,.0f} webhooks/s,"
                        f" p99 {r['latency_ms']['p99']:.1f} ms, commit cycle"
                        f" {r.get('cycle_ms') or 0:.2f} ms, WAL {r['wal_bytes_per_200']:,.0f}"
                        f" B/webhook{extra}; CPU s: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                    )
            receiver_priority = policy_name(receiver_pid)
    ratios = paired_ratios(rounds["with"], rounds["without"], "ok_rps")
    p99 = paired_ratios(rounds["with"], rounds["without"], "latency_ms.p99")
    # ingest's own CPU per webhook: what sharing the machine with the feed costs each request
    # (caches, preemption), less moved by the machine's load than the rate
    us = paired_ratios(rounds["with"], rounds["without"], "server_us_per_200")
    feeds = [r["feed"] for r in rounds["with"]]
    return {
        "runs": runs,
        "duration_s": duration,
        "connections": 32,
        "feed_env": feed_env,
        "feed_priority": feeds[0]["priority"] if feeds else "?",
        "receiver_priority": receiver_priority,
        "feed_during": {
            k: sum(f[k] for f in feeds)
            for k in (
                "log_events_logged",
                "log_events_derived",
                "feed_events_derived",
                "delivered",
                "feed_events_total",
                "delivered_after",
            )
        },
        "catch_up_s": spread([f["catch_up_s"] for f in feeds]),
        "all_caught_up": all(f["caught_up"] for f in feeds),
        "cpu_cores": {
            mode: {
                k: round(median([r["cpu_s"][k] / r["cpu_s"]["wall"] for r in rs]), 3)
                for k in rs[0]["cpu_s"]
                if k != "wall"
            }
            for mode, rs in rounds.items()
            if rs
        },
        "without": {"ok_rps": median([r["ok_rps"] for r in rounds["without"]])},
        "with": {"ok_rps": median([r["ok_rps"] for r in rounds["with"]])},
        "with_over_without": ratios,
        "p99_with_over_without": p99,
        "ingest_us_per_webhook": {
            m: median([r["server_us_per_200"] for r in rs]) for m, rs in rounds.items()
        },
        "ingest_us_with_over_without": us,
        # ingest is bound by its commit cycle (one WAL flush per batch): the feed's WAL rides
        # along in those flushes
        "wal_bytes_per_webhook": {
            m: median([r["wal_bytes_per_200"] for r in rs]) for m, rs in rounds.items()
        },
        "commit_cycle_ms": {
            m: median([r.get("cycle_ms") or 0.0 for r in rs]) for m, rs in rounds.items()
        },
        "cycle_with_over_without": paired_ratios(rounds["with"], rounds["without"], "cycle_ms"),
        "raw": rounds,
    }


async def _one(
    group: Group,
    dsn: str,
    dbname: str,
    workdir: Path,
    receiver: tuple[int, int],
    mode: str,
    duration: float,
    use_wrk: bool,
    feed_env: dict[str, str],
) -> dict[str, Any]:
    port, receiver_pid = receiver
    pids: dict[str, Callable[[], list[int]]] = {
        "ingest": group.pids,
        "receiver": lambda: [receiver_pid],
    }
    if mode == "without":
        meter = Breakdown(dsn, pids)
        await meter.start()
        r = await one_run(group, dsn, dbname, "events", 32, duration, use_wrk)
        r["cpu_s"] = {**await meter.stop(), "client": round(r.get("client_cpu_s", 0.0), 3)}
        r["wal_bytes_per_200"] = meter.wal_bytes / max(r["ok"], 1)
        return r
    await _skip_to_end(dsn)
    with feed_process(
        _named(dsn, "acklog-feed-bench"), workdir, "feed-ingest-cost", **feed_env
    ) as proc:
        await _started(dsn)
        pids["feed"] = lambda: [proc.pid]
        priority = policy_name(proc.pid)
        meter = Breakdown(dsn, pids)
        before = await _state(dsn, port)
        await meter.start()
        r = await one_run(group, dsn, dbname, "events", 32, duration, use_wrk)
        cpu = await meter.stop()
        during = await _state(dsn, port)
        started = time.perf_counter()
        after = during
        while not after.caught_up and time.perf_counter() - started < CATCH_UP_LIMIT:
            await asyncio.sleep(0.25)
            after = await _state(dsn, port)
        catch_up = time.perf_counter() - started
        r["cpu_s"] = {**cpu, "client": round(r.get("client_cpu_s", 0.0), 3)}
        r["wal_bytes_per_200"] = meter.wal_bytes / max(r["ok"], 1)
        r["feed"] = {
            "log_events_logged": during.log_last - before.log_last,
            "log_events_derived": during.derived_to - before.derived_to,
            "feed_events_derived": during.feed_last - before.feed_last,
            "delivered": during.received - before.received,
            "catch_up_s": round(catch_up, 2),
            "caught_up": after.caught_up,
            "derived_after": after.derived_to - during.derived_to,
            "delivered_after": after.received - during.received,
            "feed_events_total": after.feed_last - before.feed_last,
            "priority": priority,
        }
        return r


async def _started(dsn: str) -> None:
    """Until the feed process leads both its locks (its backends are then connected)."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(400):
            n = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'acklog-feed-%'"
                " AND application_name NOT LIKE 'acklog-feed-bench%'"
            )
            if n >= 2:
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


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
