"""Projection: a cold projector and ``acklog rebuild`` folding a big log, each in a subprocess.

The cold projector is ``Projector(dsn).catch_up(conn)`` on empty live read models; ``acklog
rebuild`` is the real command. Both report events/s and the child's peak RSS (``wait4``),
which must not grow with the log: the same figures at two log sizes show it.

``python -m bench.projection cold DSN`` is the child that runs the cold projector.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import procs, profile
from bench.dataset import Filler
from bench.progress import log
from bench.stats import median_of

#: the child's own timing, printed as one JSON line on stdout
RESULT = "BENCH_RESULT "


async def reset_read_models(dsn: str) -> None:
    """Empty live read models and no checkpoint: what a cold projector starts from."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("DROP SCHEMA IF EXISTS rm CASCADE")
            await conn.execute("SELECT create_read_models('rm')")
            await conn.execute("DELETE FROM checkpoints")
    finally:
        await conn.close()


async def _cold(dsn: str, upto: int | None) -> dict[str, Any]:
    from eventstore.pool import connect
    from projections.runner import Projector

    conn = await connect(dsn)
    try:
        started = time.perf_counter()
        n = await Projector(dsn).catch_up(conn, upto=upto)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return {"events": n, "seconds": seconds, "max_rss_kib": procs.vm_hwm_kib(os.getpid())}


def child_main(argv: list[str]) -> int:
    if argv[:1] != ["cold"] or len(argv) not in (2, 3):
        print("usage: python -m bench.projection cold DSN [UPTO]", file=sys.stderr)
        return 2
    result = asyncio.run(_cold(argv[1], int(argv[2]) if len(argv) == 3 else None))
    print(RESULT + json.dumps(result), flush=True)
    return 0


async def cold(dsn: str, events: int, timeout: float) -> dict[str, Any]:
    await reset_read_models(dsn)
    code, wall, rss, out = await asyncio.to_thread(
        procs.run_measured, [procs.PYTHON, "-m", "bench.projection", "cold", dsn], {}, timeout
    )
    if code != 0:
        raise RuntimeError(f"cold projector exited with {code}")
    inner = next(
        json.loads(line[len(RESULT) :])
        for line in out.decode().splitlines()
        if line.startswith(RESULT)
    )
    if inner["events"] != events:
        raise RuntimeError(f"cold projector folded {inner['events']} events, expected {events}")
    result = {
        "events": events,
        "seconds": inner["seconds"],
        "events_per_s": events / inner["seconds"],
        "wall_seconds": wall,
        "peak_rss_mib": max(rss, inner["max_rss_kib"]) / 1024,
    }
    log(
        f"  cold projector: {events:,} events in {inner['seconds']:.1f}s"
        f" = {result['events_per_s']:,.0f}/s, peak RSS {result['peak_rss_mib']:.0f} MiB"
    )
    return result


async def rebuild(dsn: str, events: int, timeout: float) -> dict[str, Any]:
    """``acklog rebuild`` as a subprocess: wall time (start-up included) and peak RSS."""
    code, wall, rss, out = await asyncio.to_thread(
        procs.run_measured, [procs.ACKLOG, "rebuild"], {"DATABASE_URL": dsn}, timeout
    )
    if code != 0:
        raise RuntimeError(f"acklog rebuild exited with {code}")
    result = {
        "events": events,
        "seconds": wall,
        "events_per_s": events / wall,
        "peak_rss_mib": rss / 1024,
        "output": out.decode(errors="replace").strip().splitlines()[-1:],
    }
    log(
        f"  acklog rebuild: {events:,} events in {wall:.1f}s"
        f" = {result['events_per_s']:,.0f}/s, peak RSS {result['peak_rss_mib']:.0f} MiB"
    )
    return result


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))


async def profile_cold(dsn: str, upto: int, workdir: Path) -> dict[str, Any] | None:
    """A cold projector folding the first ``upto`` events under py-spy (not timed)."""
    if not profile.available():
        return None
    await reset_read_models(dsn)
    out = workdir / "cold-projector.pyspy.txt"
    started = time.perf_counter()
    proc = profile.start([procs.PYTHON, "-m", "bench.projection", "cold", dsn, str(upto)], out)
    await asyncio.to_thread(proc.wait)
    return profile.summarize(out, seconds=time.perf_counter() - started)


async def run(
    dsn: str, workdir: Path, *, sizes: list[tuple[int, int]], profile_events: int | None
) -> dict[str, Any]:
    """For each (log size, runs): fill the log up to that size, then time both folds."""
    filler = Filler(dsn)
    fills: list[dict[str, float]] = []
    results: dict[str, Any] = {}
    out: dict[str, Any] = {"by_size": results, "fills": fills}
    have = 0
    timeout = 900.0
    for size, runs in sizes:
        if size > have:
            log(f"  filling the log with {size - have:,} events (COPY)")
            fills.append(await filler.fill(size - have))
            have = size
            log(f"  … {fills[-1]['rows_per_s']:,.0f} rows/s")
        colds = [await cold(dsn, size, timeout) for _ in range(runs)]
        if profile_events and "profile_cold" not in out:
            # between the timed runs, so that the last rebuild leaves full read models
            out["profile_cold"] = await profile_cold(dsn, min(profile_events, size), workdir)
        rebuilds = [await rebuild(dsn, size, timeout) for _ in range(runs)]
        results[str(size)] = {
            "runs": runs,
            "cold": {
                "events_per_s": median_of(colds, "events_per_s"),
                "peak_rss_mib": median_of(colds, "peak_rss_mib"),
                "seconds": median_of(colds, "seconds"),
                "each": colds,
            },
            "rebuild": {
                "events_per_s": median_of(rebuilds, "events_per_s"),
                "peak_rss_mib": median_of(rebuilds, "peak_rss_mib"),
                "seconds": median_of(rebuilds, "seconds"),
                "each": rebuilds,
            },
        }
    out["read_models"] = await _read_model_counts(dsn)
    return out


async def _read_model_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            t: int(await conn.fetchval(f"SELECT count(*) FROM rm.{t}"))
            for t in ("messages", "timeline", "instance_history", "quarantine")
        }
    finally:
        await conn.close()
