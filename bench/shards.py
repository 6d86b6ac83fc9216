"""Live projection shards: one projector, n shard loops in one process, n shard processes.

``python -m bench.shards [EVENTS]`` (``DATABASE_URL``: the server, else an embedded one)
fills a log with the bench mix, then for each layout empties the live read models and runs
``acklog project`` batch by batch (``ACKLOG_BULK_CATCHUP=0``) until every shard's
checkpoint is at the head: events/s, and CPU µs per event in the projector processes and in
PostgreSQL. ``acklog verify`` checks the last layout's models. Not part of ``make bench``:
docs/operations.md, "Projection shards", quotes a run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import asyncpg

from bench import db, procs
from bench.dataset import Filler
from bench.projection import reset_read_models

#: (shards, process per shard)
LAYOUTS = [(1, False), (2, False), (2, True), (3, True)]


#: how far every live shard has folded (the least of their checkpoints; 0 for one not there)
LIVE_POSITION_SQL = (
    "SELECT coalesce(min(coalesce(c.position, 0)), 0) FROM projector_shards s"
    " CROSS JOIN generate_series(0, s.shards - 1) k LEFT JOIN checkpoints c ON c.name ="
    " CASE WHEN s.shards = 1 THEN 'messages' ELSE 'messages.' || k || '/' || s.shards END"
)


async def _min_checkpoint(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(LIVE_POSITION_SQL) or 0)


async def one_layout(dsn: str, shards: int, processes: bool, target: int) -> dict[str, Any]:
    await reset_read_models(dsn)
    conn = await asyncpg.connect(dsn)
    env = procs.env(DATABASE_URL=dsn, ACKLOG_PROJECTOR_SHARDS=str(shards), ACKLOG_BULK_CATCHUP="0")
    argvs = (
        [[procs.ACKLOG, "project", "--shard", str(k)] for k in range(shards)]
        if processes
        else [[procs.ACKLOG, "project"]]
    )
    postmaster = await db.postmaster_pid(dsn)
    pg0 = procs.postgres_cpu_seconds(postmaster) if postmaster else 0.0
    started = time.perf_counter()
    children = [
        await asyncio.create_subprocess_exec(
            *a, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for a in argvs
    ]
    try:
        while await _min_checkpoint(conn) < target:
            for c in children:
                if c.returncode is not None:
                    raise RuntimeError(f"acklog project exited {c.returncode}")
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - started
        cpu = {c.pid: procs.cpu_seconds(c.pid) for c in children}
        pg = (procs.postgres_cpu_seconds(postmaster) - pg0) if postmaster else 0.0
    finally:
        for c in children:
            if c.returncode is None:
                c.terminate()
            await asyncio.wait_for(c.wait(), 15)
        await conn.close()
    result = {
        "shards": shards,
        "layout": "processes" if processes else "one process",
        "events_per_s": round(target / wall),
        "projector_cpu_us_per_event": round(sum(cpu.values()) / target * 1e6, 1),
        "postgres_cpu_us_per_event": round(pg / target * 1e6, 1),
    }
    print(json.dumps(result), flush=True)
    return result


async def main(events: int) -> list[dict[str, Any]]:
    with db.server() as (server, _):
        async with db.database(server, "acklog_live_shards_bench") as dsn:
            await Filler(dsn).fill(events)
            conn = await asyncpg.connect(dsn)
            target = int(await conn.fetchval("SELECT max(position) FROM events"))
            await conn.close()
            results = [await one_layout(dsn, n, p, target) for n, p in LAYOUTS]
            check = await asyncio.create_subprocess_exec(
                procs.ACKLOG, "verify", env=procs.env(DATABASE_URL=dsn)
            )
            code = await check.wait()
            print(json.dumps({"verify_exit": code}), flush=True)
            return results


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
