"""Ingest: the webhook mix POSTed to ``acklog serve --no-projector`` and to two baselines.

Rounds are interleaved (acklog, bare, naive, acklog, bare, naive…) so that a noisy moment hits
all three alike, and each ratio is taken between runs of the same round. After every acklog
run the rows of the log are counted: every 200 the client saw must be a row (the log may hold
a few more: requests in flight when the load generator stopped are still committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import db, procs, profile, servers, wrkrun
from bench.baselines import NAIVE_TABLE
from bench.mix import Mix
from bench.progress import log
from bench.stats import median_of, paired_ratios

TARGETS = ("acklog", "bare", "naive")
_prefix = itertools.count(10)


def next_prefix() -> str:
    """Two digits unique to one load run, so its ids are new to the log."""
    return f"{next(_prefix):02d}"


async def metric_sums(url: str, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram on /metrics, all label sets added up."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


async def _count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def one_run(
    server: procs.Server,
    dsn: str,
    table: str | None,
    connections: int,
    duration: float,
    use_wrk: bool,
) -> dict[str, Any]:
    before = await _count(dsn, table) if table else 0
    batches = (
        await metric_sums(server.url, "acklog_append_batch_size") if table == "events" else None
    )
    meter = procs.CpuMeter({"server": server.proc.pid})
    meter.start()
    result = await asyncio.to_thread(
        wrkrun.post_mix, server.url, connections, duration, next_prefix(), use_wrk=use_wrk
    )
    result["cpu_cores"] = meter.stop()
    if table:
        await asyncio.sleep(0.5)  # requests in flight at the cut-off commit meanwhile
        stored = await _count(dsn, table) - before
        result["rows_stored"] = stored
        result["stored_minus_ok"] = stored - result["ok"]
        # every 200 is a row; the extra rows are at most the requests in flight at the end
        result["every_200_stored"] = 0 <= stored - result["ok"] <= connections
    if batches is not None:
        after = await metric_sums(server.url, "acklog_append_batch_size")
        n = after[1] - batches[1]
        result["mean_batch"] = (after[0] - batches[0]) / n if n else 0.0
        result["batches_per_s"] = n / result["duration"]
    return result


async def run(
    server_dsn: str,
    workdir: Path,
    *,
    connections: list[int],
    runs: int,
    duration: float,
    use_wrk: bool,
    profile_seconds: float = 0.0,
) -> dict[str, Any]:
    async with db.database(server_dsn, "acklog_bench_ingest") as dsn:
        mix = Mix()
        await db.add_channels(dsn, mix.providers())
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(NAIVE_TABLE)
        finally:
            await conn.close()
        tables = {"acklog": "events", "bare": None, "naive": "naive_events"}
        results: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in TARGETS}
        with contextlib.ExitStack() as stack:
            started = {
                "acklog": stack.enter_context(servers.acklog(dsn, workdir, projector=False)),
                "bare": stack.enter_context(servers.baseline("bare", dsn, workdir)),
                "naive": stack.enter_context(servers.baseline("naive", dsn, workdir)),
            }
            for target, server in started.items():  # warm-up: connections, caches, JIT-free
                await one_run(server, dsn, None, 32, 1.0, use_wrk)
                log(f"  {target} warmed up on port {server.port}")
            for c in connections:
                for i in range(runs):
                    for target in TARGETS:
                        r = await one_run(
                            started[target], dsn, tables[target], c, duration, use_wrk
                        )
                        results[target].setdefault(str(c), []).append(r)
                        log(
                            f"  ingest {target:6} c={c:<3} run {i + 1}/{runs}:"
                            f" {r['ok_rps']:8,.0f} 200/s  p50 {r['latency_ms']['p50']:6.1f} ms"
                            f"  p99 {r['latency_ms']['p99']:6.1f} ms  errors {r['errors']}"
                            f"  cpu {r['cpu_cores']}"
                        )
            if profile_seconds and profile.available():
                profiled = await _profile(started["acklog"], profile_seconds, use_wrk)
            else:
                profiled = None
        summary = summarize(results)
        summary["profile_acklog_32"] = profiled
        summary["log_rows"] = await _count(dsn, "events")
        summary["duplicates_in_log"] = await _duplicates(dsn)
        summary["client"] = "wrk" if use_wrk and wrkrun.wrk_path() else "bench.loadgen"
        summary["duration_s"] = duration
        summary["runs"] = runs
        summary["raw"] = results
        return summary


async def _profile(server: procs.Server, seconds: float, use_wrk: bool) -> dict[str, Any] | None:
    """py-spy on ``acklog serve`` under the 32-connection load (an extra, untimed run)."""
    load = asyncio.create_task(
        asyncio.to_thread(
            wrkrun.post_mix, server.url, 32, seconds + 2, next_prefix(), use_wrk=use_wrk
        )
    )
    await asyncio.sleep(1.0)
    raw = await asyncio.to_thread(profile.record, server.proc.pid, seconds)
    await load
    return profile.summarize(raw, seconds=seconds)


async def _duplicates(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM events WHERE duplicate_of IS NOT NULL")
        )
    finally:
        await conn.close()


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for c in results["acklog"]:
        row: dict[str, Any] = {}
        for target in TARGETS:
            runs = results[target][c]
            row[target] = {
                "ok_rps": median_of(runs, "ok_rps"),
                "p50_ms": median_of(runs, "latency_ms.p50"),
                "p99_ms": median_of(runs, "latency_ms.p99"),
                "max_ms": median_of(runs, "latency_ms.max"),
                "errors": sum(int(r["errors"]) for r in runs),
                "server_cpu": median_of(runs, "cpu_cores.server"),
                "postgres_cpu": median_of(runs, "cpu_cores.postgres"),
            }
            cpu = row[target]["server_cpu"]
            rps = row[target]["ok_rps"]
            row[target]["server_cpu_us_per_request"] = cpu / rps * 1e6 if rps else 0.0
        ack = results["acklog"][c]
        row["acklog"]["ok_total"] = sum(int(r["ok"]) for r in ack)
        row["acklog"]["rows_stored"] = sum(int(r["rows_stored"]) for r in ack)
        row["acklog"]["every_200_stored"] = all(r["every_200_stored"] for r in ack)
        row["acklog"]["mean_batch"] = median_of(ack, "mean_batch")
        row["ratio_vs_bare"] = paired_ratios(ack, results["bare"][c], "ok_rps")
        row["ratio_vs_naive"] = paired_ratios(ack, results["naive"][c], "ok_rps")
        table[c] = row
    return {"by_connections": table}
