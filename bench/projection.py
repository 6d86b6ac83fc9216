"""Projection: a cold projector, ``acklog rebuild`` and the live projector, each a subprocess.

The cold projector is ``Projector(dsn).catch_up(conn)`` on empty live read models (the
incremental path: one upsert transaction per batch); ``acklog rebuild`` is the real command
(the bulk path, :mod:`projections.bulk`). Both report events/s and the child's peak RSS,
which must not grow with the log: the same figures at two log sizes show it. A child run of
each also reports its stages (µs per event, wall and CPU). The live projector is
``acklog project`` while the bench appends the mix at a paced rate in small COPY batches (as
group commits arrive); its CPU per event folded is compared with the cold fold's.
``acklog verify`` runs after each of the three and must find no difference.

:func:`shard_rebuilds`: a log of one channel (the mix of one provider), rebuilt with every
task cut in 1, 2 and 4 shards by message key (``projections.bulk.tasks``), each shard reading
the channel itself or fed by one reader (:func:`parse_layout`), rounds interleaved: events/s and CPU µs per event of the fold processes and of PostgreSQL apart;
in the same rounds, the same log rebuilt by the code of commit b441ba9 (:data:`ISSUE_CODE`,
the code when issue 25 asked for twice its events/s), from its own tree (``git archive``) in
a child process of its own: the issue's baseline, measured beside today's code.

``python -m bench.projection cold DSN``, ``… rebuild DSN`` and ``… shards DSN N [reader]`` are the
children; the baseline's child is :data:`_BASELINE_CHILD`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import db, procs, profile
from bench.dataset import COLUMNS, Filler
from bench.mix import Mix
from bench.progress import log
from bench.stats import median_of, paired_ratios, percentiles
from eventstore import partitions
from projections.bulk import default_workers
from projections.runner import Projector

#: the child's own timing, printed as one JSON line on stdout
RESULT = "BENCH_RESULT "
#: how long ``acklog project`` waits after a partial batch for more events (its default)
_LINGER = inspect.signature(Projector).parameters["linger"].default


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


async def _cold(dsn: str, upto: int | None, mode: str) -> dict[str, Any]:
    """What the live projector does from no checkpoint: ``bulk`` as it leads
    (``Projector.cold_start``, the bulk load of a rebuild when the log is long, then batches),
    or ``batches`` (``bulk_catchup=0``: the incremental path, one transaction per batch).
    CPU counts this process and the shard processes it ran (reaped, so in ``os.times``)."""
    from eventstore.pool import connect
    from projections.rebuild import bulk_load
    from projections.runner import Projector
    from projections.stages import Stages

    conn = await connect(dsn)
    # ``batches``: never in bulk; ``bulk``: the projector's own threshold (its default)
    never = {"bulk_catchup": 0} if mode == "batches" else {}
    projector = Projector(dsn, bulk_load=bulk_load, **never)
    projector.stages = Stages(cpu=True)
    backend = int(await conn.fetchval("SELECT pg_backend_pid()"))

    def cpu_now() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    from bench.db import postmaster_pid

    server = await postmaster_pid(dsn)  # None when PostgreSQL runs elsewhere
    try:
        pg_cpu = procs.cpu_seconds(backend)  # 0 when PostgreSQL runs elsewhere
        pg_all = procs.postgres_cpu_seconds(server) if server else 0.0
        cpu, started = cpu_now(), time.perf_counter()
        if mode == "bulk" and upto is None:
            await projector.cold_start(conn)
        n = projector.stages.events + await projector.catch_up(conn, upto=upto)
        seconds, cpu = time.perf_counter() - started, cpu_now() - cpu
        pg_cpu = procs.cpu_seconds(backend) - pg_cpu
        pg_all = (procs.postgres_cpu_seconds(server) - pg_all) if server else 0.0
    finally:
        await conn.close()
    return {
        "events": n,
        "seconds": seconds,
        "cpu_us_per_event": cpu / max(n, 1) * 1e6,
        # the one connection's backend: the whole of PostgreSQL's work only batch by batch
        "pg_cpu_us_per_event": (
            pg_cpu / max(n, 1) * 1e6 if pg_cpu > 0 and mode == "batches" else None
        ),
        # the whole server (every backend and background process) while this fold ran
        "pg_server_cpu_us_per_event": pg_all / max(n, 1) * 1e6 if pg_all > 0 else None,
        "max_rss_kib": procs.vm_hwm_kib(os.getpid()),
        "stages_us": projector.stages.per_event_us(),
        "stages_cpu_us": projector.stages.per_event_us(cpu=True),
    }


async def _rebuild(dsn: str) -> dict[str, Any]:
    """What ``acklog rebuild`` runs, with its stages kept (not the timed figure)."""
    from projections.rebuild import rebuild
    from projections.stages import Stages

    stages = Stages(cpu=True)
    cpu, started = time.process_time(), time.perf_counter()
    await rebuild(dsn, stages=stages)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "events": stages.events,
        "seconds": seconds,
        "cpu_us_per_event": cpu / max(stages.events, 1) * 1e6,
        "stages_us": stages.per_event_us(),
        "stages_cpu_us": stages.per_event_us(cpu=True),
    }


async def _sharded(dsn: str, shards: int, reader: bool) -> dict[str, Any]:
    """A rebuild with every task cut in ``shards`` shards, each reading its channels' events
    itself or fed by one reader per channel group (``procs.timed_rebuild``)."""
    from bench.db import postmaster_pid
    from projections.rebuild import rebuild
    from projections.stages import Stages

    server = await postmaster_pid(dsn)
    return await procs.timed_rebuild(
        rebuild, dsn, Stages(cpu=True), server, bulk_shards=shards, bulk_reader=reader
    )


def child_main(argv: list[str]) -> int:
    if argv[:1] == ["rebuild"] and len(argv) == 2:
        result = asyncio.run(_rebuild(argv[1]))
    elif argv[:1] == ["shards"] and len(argv) in (3, 4) and argv[3:] in ([], ["reader"]):
        result = asyncio.run(_sharded(argv[1], int(argv[2]), argv[3:] == ["reader"]))
    elif argv[:1] in (["bulk"], ["batches"]) and len(argv) in (2, 3):
        upto = int(argv[2]) if len(argv) == 3 else None
        result = asyncio.run(_cold(argv[1], upto, argv[0]))
    else:
        print(
            "usage: python -m bench.projection bulk|batches|rebuild DSN [UPTO]"
            " | shards DSN N [reader]",
            file=sys.stderr,
        )
        return 2
    print(RESULT + json.dumps(result), flush=True)
    return 0


def _inner(out: bytes) -> dict[str, Any]:
    return dict(
        next(
            json.loads(line[len(RESULT) :])
            for line in out.decode().splitlines()
            if line.startswith(RESULT)
        )
    )


async def cold(dsn: str, events: int, timeout: float, mode: str = "bulk") -> dict[str, Any]:
    await reset_read_models(dsn)
    code, wall, rss, out = await asyncio.to_thread(
        procs.run_measured, [procs.PYTHON, "-m", "bench.projection", mode, dsn], {}, timeout
    )
    if code != 0:
        raise RuntimeError(f"cold projector exited with {code}")
    inner = _inner(out)
    if inner["events"] != events:
        raise RuntimeError(f"cold projector folded {inner['events']} events, expected {events}")
    result = {
        "events": events,
        "seconds": inner["seconds"],
        "events_per_s": events / inner["seconds"],
        "wall_seconds": wall,
        "peak_rss_mib": max(rss, inner["max_rss_kib"]) / 1024,
        "cpu_us_per_event": inner["cpu_us_per_event"],
        "pg_cpu_us_per_event": inner.get("pg_cpu_us_per_event"),
        "pg_server_cpu_us_per_event": inner.get("pg_server_cpu_us_per_event"),
        "stages_us": inner["stages_us"],
        "stages_cpu_us": inner["stages_cpu_us"],
    }
    log(
        f"  cold projector ({mode}): {events:,} events in {inner['seconds']:.1f}s"
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


async def profile_cold(dsn: str, upto: int, workdir: Path) -> dict[str, Any] | None:
    """A cold projector folding the first ``upto`` events under py-spy (not timed)."""
    if not profile.available():
        return None
    await reset_read_models(dsn)
    out = workdir / "cold-projector.pyspy.txt"
    started = time.perf_counter()
    proc = profile.start([procs.PYTHON, "-m", "bench.projection", "batches", dsn, str(upto)], out)
    await asyncio.to_thread(proc.wait)
    return profile.summarize(out, seconds=time.perf_counter() - started)


async def rebuild_stages(dsn: str, events: int, timeout: float) -> dict[str, Any]:
    """One more rebuild, in a child that keeps its stages (not a timed figure)."""
    code, _, _, out = await asyncio.to_thread(
        procs.run_measured, [procs.PYTHON, "-m", "bench.projection", "rebuild", dsn], {}, timeout
    )
    if code != 0:
        raise RuntimeError(f"the rebuild child exited with {code}")
    return _inner(out)


async def verify(dsn: str, after: str, timeout: float) -> dict[str, Any]:
    """``acklog verify``: the live models must equal a rebuild from the log."""
    code, wall, _, out = await asyncio.to_thread(
        procs.run_measured, [procs.ACKLOG, "verify"], {"DATABASE_URL": dsn}, timeout
    )
    text = out.decode(errors="replace").strip().splitlines()
    log(f"  acklog verify after {after}: {'equal' if code == 0 else 'DIFFERENT'} ({wall:.1f}s)")
    return {"after": after, "equal": code == 0, "seconds": wall, "output": text[-6:]}


#: the provider whose mix makes the one-channel log (Meta: the common deployment)
ONE_CHANNEL_PROVIDER = "meta"

#: the code when issue 25 was filed ("rebuild of a one-channel log of 1M events ≥ 2x today's
#: events/s"): the one-channel rebuild's baseline, and the target over it
ISSUE_CODE = "b441ba9"
ISSUE_TARGET = 2.0
#: what of that commit's tree the baseline's child has: its packages and migrations (not
#: run: the database is today's); not its ``bench``, so the child measures with today's
#: ``bench.procs``
_BASELINE_PATHS = ("eventstore", "projections", "service", "sql")

#: the baseline's child: ``python <tree>/_baseline_rebuild.py DSN TREE POSTMASTER`` with
#: ``PYTHONPATH=<tree>:<this repository>``, so that eventstore and projections are the old
#: tree's (asserted) and only ``bench`` comes from here. It calls that code's own
#: ``rebuild(dsn, stages=…)`` (its default workers), timed as ``_sharded`` times today's. It
#: runs no migration: the database is today's, whose read-model tables have the columns the
#: old code writes (its rebuild makes them with the database's ``create_read_models``,
#: today's: one index more, sql/089).
_BASELINE_CHILD = """\
import asyncio, json, sys

import projections.rebuild
from projections.stages import Stages

from bench import procs

dsn, tree, postmaster = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert projections.rebuild.__file__.startswith(tree), projections.rebuild.__file__
assert not procs.__file__.startswith(tree), procs.__file__
result = asyncio.run(
    procs.timed_rebuild(projections.rebuild.rebuild, dsn, Stages(cpu=True), postmaster or None)
)
print("BENCH_RESULT " + json.dumps(result), flush=True)
"""


def baseline_tree(commit: str, into: Path) -> Path:
    """The packages of ``commit`` (``git archive`` of this repository) and the baseline's
    child script in ``into``; the script's path."""
    archive = subprocess.run(
        ["git", "archive", commit, *_BASELINE_PATHS], cwd=procs.ROOT, capture_output=True
    )
    if archive.returncode != 0:
        raise RuntimeError(
            f"the baseline's code: git archive {commit} failed"
            f" ({archive.stderr.decode(errors='replace').strip()}); a full clone has it"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    script = into / "_baseline_rebuild.py"
    script.write_text(_BASELINE_CHILD)
    return script


#: a layout of the one-channel rebuild: today's code with every task in N shards, each
#: reading the channel itself ("N") or fed by one reader ("rN"), or the issue's code
#: (:data:`ISSUE_CODE`)
Layout = str


def parse_layout(layout: str) -> tuple[int, bool]:
    """``"N"`` → (N, False), ``"rN"`` → (N, True); a ValueError for anything else."""
    n = int(layout.removeprefix("r"))
    if n < 1 or layout.lstrip("r") != str(n) or layout.count("r") > 1:
        raise ValueError(f"a rebuild layout is N or rN (N shards fed by one reader): {layout!r}")
    return n, layout.startswith("r")


def layout_name(layout: str) -> str:
    """How the report names a layout of today's code."""
    n, reader = parse_layout(layout)
    return f"a reader + {n} shard(s)" if reader else f"{n} shard(s)"


async def _one_channel_rebuild(
    dsn: str,
    layout: Layout,
    events: int,
    timeout: float,
    script: Path | None,
    server: int | None,
    baseline: str | None,
) -> dict[str, Any]:
    """One timed rebuild of the one-channel log, in a child process."""
    if layout != baseline:
        n, reader = parse_layout(layout)
        argv = [procs.PYTHON, "-m", "bench.projection", "shards", dsn, str(n)]
        argv += ["reader"] if reader else []
        extra: dict[str, str] = {}
        name = layout_name(layout)
    else:
        assert script is not None
        tree = str(script.parent)
        argv = [procs.PYTHON, str(script), dsn, tree, str(server or 0)]
        extra = {"PYTHONPATH": tree + os.pathsep + str(procs.ROOT)}
        name = f"{layout} (the issue's code)"
    code, wall, rss, out = await asyncio.to_thread(procs.run_measured, argv, extra, timeout)
    if code != 0:
        raise RuntimeError(f"the rebuild child ({name}) exited with {code}")
    inner = _inner(out)
    if inner["events"] != events:
        raise RuntimeError(f"{name} folded {inner['events']} of {events} events")
    inner.update(events_per_s=events / inner["seconds"], wall_seconds=wall, peak_rss_mib=rss / 1024)
    pg = inner["pg_cpu_us_per_event"]
    log(
        f"  one channel, {name}: {inner['events_per_s']:,.0f} events/s,"
        f" fold {inner['fold_cpu_us_per_event']:.1f} µs"
        + (f" + PostgreSQL {pg:.1f} µs" if pg else "")
        + f" CPU per event, peak RSS {inner['peak_rss_mib']:.0f} MiB"
    )
    return inner


def _layout_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    pg_all = [x["pg_cpu_us_per_event"] for x in rounds]
    return {
        "events_per_s": median_of(rounds, "events_per_s"),
        "seconds": median_of(rounds, "seconds"),
        "fold_cpu_us_per_event": median_of(rounds, "fold_cpu_us_per_event"),
        "pg_cpu_us_per_event": median_of(rounds, "pg_cpu_us_per_event") if all(pg_all) else None,
        "peak_rss_mib": median_of(rounds, "peak_rss_mib"),
        "stages_cpu_us": rounds[-1]["stages_cpu_us"],
        "each": rounds,
    }


async def shard_rebuilds(
    server_dsn: str,
    events: int,
    runs: int,
    shards: list[str],
    timeout: float = 1800.0,
    baseline: str | None = ISSUE_CODE,
) -> dict[str, Any]:
    """A one-channel log of ``events``, rebuilt in each of the ``shards`` layouts (N shards,
    or rN: N shards fed by one reader; :func:`parse_layout`), a child process each, with
    ``bulk.default_workers()`` processes, and, unless
    ``baseline`` is None, by the code of commit ``baseline`` (its own tree, its own default
    workers), ``runs`` rounds interleaved (the order turns each round). Today's code rebuilds
    last (once more, untimed, if the baseline's turn came last), then ``acklog verify``."""
    provider = ONE_CHANNEL_PROVIDER
    layouts: list[Layout] = [*shards] if baseline is None else [baseline, *shards]
    each: dict[Layout, list[dict[str, Any]]] = {k: [] for k in layouts}
    with tempfile.TemporaryDirectory(prefix=f"acklog-bench-{baseline}-") as tmp:
        script = baseline_tree(baseline, Path(tmp)) if baseline is not None else None
        async with db.database(server_dsn, "acklog_bench_one_channel") as dsn:
            await db.add_channels(dsn, [provider])
            log(f"  filling a one-channel log ({provider}) with {events:,} events (COPY)")
            fill = await Filler(dsn, Mix((provider,))).fill(events)
            server = await db.postmaster_pid(dsn)
            last: Layout | None = None
            for r in range(runs):
                turn = r % len(layouts)
                for k in layouts[turn:] + layouts[:turn]:
                    each[k].append(
                        await _one_channel_rebuild(
                            dsn, k, events, timeout, script, server, baseline
                        )
                    )
                    last = k
            if last == baseline:
                log(
                    "  one more rebuild by today's code (untimed), so that verify checks its models"
                )
                await rebuild_stages(dsn, events, timeout)
            checked = await verify(dsn, f"the one-channel rebuilds ({events:,})", timeout)
    by_shards = {k: _layout_summary(each[k]) for k in shards}
    out: dict[str, Any] = {
        "provider": provider,
        "events": events,
        "runs": runs,
        "workers": default_workers(),  # what rebuild() uses when not told
        "fill": fill,
        "by_shards": by_shards,
        "verify": checked,
    }
    if baseline is not None:
        base = each[baseline]
        # today's best layout by its median; each ratio is of round i to the baseline's round i
        best = max(shards, key=lambda k: by_shards[k]["events_per_s"])
        vs = {k: paired_ratios(each[k], base, "events_per_s") for k in shards}
        out["baseline"] = {
            "commit": baseline,
            "target": ISSUE_TARGET,
            **_layout_summary(base),
            "vs_baseline": vs,
            "best": str(best),
            "met": vs[best]["median"] >= ISSUE_TARGET,
            "one_shard_met": vs["1"]["median"] >= ISSUE_TARGET if "1" in vs else None,
        }
        log(
            f"  today's best ({layout_name(best)}) ÷ {baseline}: {vs[best]['median']:.2f}x"
            f" (rounds {', '.join(f'{x:.2f}' for x in vs[best]['each'])}),"
            f" target ≥ {ISSUE_TARGET:.1f}x"
        )
    return out


async def _paced_appends(filler: Filler, rate: float, seconds: float, every: float = 0.02) -> int:
    """The mix appended at ``rate``/s for ``seconds``: one small COPY per ``every`` seconds."""
    conn = await asyncpg.connect(filler.dsn)
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + json.dumps(v).encode(),
        decoder=lambda b: json.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )
    try:
        head = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        # COPY names its positions: the partitions they need are made first
        await partitions.ensure_upto(conn, head + int(rate * seconds) + 1)
        sent, started = 0, time.perf_counter()
        while (now := time.perf_counter() - started) < seconds:
            due = int(rate * now) - sent
            if due > 0:
                rows = list(filler.records(due, head + sent + 1))
                await conn.copy_records_to_table("events", columns=COLUMNS, records=rows)
                sent += due
            await asyncio.sleep(every)
        await conn.execute(
            "SELECT setval('events_position_seq', (SELECT max(position) FROM events))"
        )
        return sent
    finally:
        await conn.close()


async def _checkpoint(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT position FROM checkpoints WHERE name = 'messages'")
    return int(value or 0)


async def live(filler: Filler, rate: float, seconds: float) -> dict[str, Any]:
    """``acklog project`` folding appends as they come: its CPU per event, and the lag."""
    dsn = filler.dsn
    conn = await asyncpg.connect(dsn)
    proc = await asyncio.create_subprocess_exec(
        procs.ACKLOG,
        "project",
        env=procs.env(DATABASE_URL=dsn),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        head = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        deadline = time.monotonic() + 120
        while await _checkpoint(conn) < head:  # the projector starts where rebuild left it
            if time.monotonic() > deadline or proc.returncode is not None:
                raise RuntimeError("acklog project did not catch up before the live run")
            await asyncio.sleep(0.1)
        cpu0, start = procs.cpu_seconds(proc.pid), await _checkpoint(conn)
        lags: list[float] = []

        async def sample() -> None:
            while True:
                lags.append(
                    float(
                        await conn.fetchval(
                            "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(e.received_at))"
                            ", 0) FROM events e WHERE e.position > (SELECT position FROM"
                            " checkpoints WHERE name = 'messages')"
                        )
                    )
                )
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        try:
            sent = await _paced_appends(filler, rate, seconds)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        target = head + sent
        deadline = time.monotonic() + 60
        while (cp := await _checkpoint(conn)) < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"acklog project stopped at {cp} of {target}")
            await asyncio.sleep(0.05)
        cpu = procs.cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        await conn.close()
    folded = target - start
    result = {
        "rate": rate,
        "seconds": seconds,
        "linger_s": _LINGER,
        "events": folded,
        "cpu_us_per_event": cpu / max(folded, 1) * 1e6,
        "cpu_cores": cpu / seconds,
        "lag_s": percentiles(sorted(lags)),
    }
    log(
        f"  live projector at {rate:,.0f}/s: {folded:,} events,"
        f" {result['cpu_us_per_event']:.1f} µs CPU per event, lag p99 {result['lag_s']['p99']:.2f}s"
    )
    return result


async def run(
    dsn: str,
    workdir: Path,
    *,
    sizes: list[tuple[int, int]],
    profile_events: int | None,
    live_rate: float = 3000.0,
    live_seconds: float = 8.0,
) -> dict[str, Any]:
    """For each (log size, runs): fill the log up to that size, then time both folds; at the
    smaller size also the live projector. ``acklog verify`` after each of them."""
    filler = Filler(dsn)
    fills: list[dict[str, float]] = []
    results: dict[str, Any] = {}
    verifies: list[dict[str, Any]] = []
    out: dict[str, Any] = {"by_size": results, "fills": fills, "verify": verifies}
    have = 0
    timeout = 900.0
    for size, runs in sizes:
        if size > have:
            log(f"  filling the log with {size - have:,} events (COPY)")
            fills.append(await filler.fill(size - have))
            have = size
            log(f"  … {fills[-1]['rows_per_s']:,.0f} rows/s")
        colds = [await cold(dsn, size, timeout) for _ in range(runs)]
        verifies.append(await verify(dsn, f"the cold projector ({size:,})", timeout))
        batches = await cold(dsn, size, timeout, mode="batches")
        verifies.append(await verify(dsn, f"batch by batch ({size:,})", timeout))
        if profile_events and "profile_cold" not in out:
            # between the timed runs, so that the last rebuild leaves full read models
            out["profile_cold"] = await profile_cold(dsn, min(profile_events, size), workdir)
        rebuilds = [await rebuild(dsn, size, timeout) for _ in range(runs)]
        verifies.append(await verify(dsn, f"acklog rebuild ({size:,})", timeout))
        results[str(size)] = {
            "runs": runs,
            "cold": {
                "events_per_s": median_of(colds, "events_per_s"),
                "peak_rss_mib": median_of(colds, "peak_rss_mib"),
                "seconds": median_of(colds, "seconds"),
                "cpu_us_per_event": median_of(colds, "cpu_us_per_event"),
                "pg_server_cpu_us_per_event": (
                    median_of(colds, "pg_server_cpu_us_per_event")
                    if all(c.get("pg_server_cpu_us_per_event") for c in colds)
                    else None
                ),
                "each": colds,
            },
            "batches": {**batches, "each": [batches]},
            "rebuild": {
                "events_per_s": median_of(rebuilds, "events_per_s"),
                "peak_rss_mib": median_of(rebuilds, "peak_rss_mib"),
                "seconds": median_of(rebuilds, "seconds"),
                "each": rebuilds,
            },
        }
        if "live" not in out:
            staged = await rebuild_stages(dsn, size, timeout)
            results[str(size)]["rebuild"].update(
                cpu_us_per_event=staged["cpu_us_per_event"],
                stages_us=staged["stages_us"],
                stages_cpu_us=staged["stages_cpu_us"],
            )
            out["live"] = await live(filler, live_rate, live_seconds)
            have = int(await _head(dsn))
            verifies.append(await verify(dsn, "the live projector", timeout))
    out["read_models"] = await _read_model_counts(dsn)
    return out


async def _head(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    finally:
        await conn.close()


async def _read_model_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            t: int(await conn.fetchval(f"SELECT count(*) FROM rm.{t}"))
            for t in ("messages", "timeline", "instance_history", "quarantine")
        }
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
