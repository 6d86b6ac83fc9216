"""The log's lifecycle: what a webhook costs on disk, what an archive of it costs, how fast
archives are written, verified and restored, and what a retention run costs ingest.

- **storage**: ``storage_events`` webhooks of the mix written into the log by the dataset
  loader (bench/dataset.py, as the projection phase does), folded by the projector (its cold
  start: the bulk load, then batches) and derived into the feed by the outbox, then
  ``VACUUM ANALYZE``; per table (``events`` as the sum of its partitions, each ``rm.*`` and
  ``feed.*`` table, summed over its partitions if it has any): heap
  (``pg_relation_size``), TOAST (``pg_total_relation_size`` of the toast relation: its heap
  and its index) and indexes (``pg_indexes_size``), divided by the webhooks.
- **archives**: ``archive_range`` over that whole log into a ``file://`` store in the work
  dir, ``verify`` of it, ``restore`` of it into a fresh migrated database; each timed
  ``runs`` times (a new store and a new database each run), medians reported. The archive's
  size per million webhooks, and its compression against the log's own bytes.
- **retention under ingest**: a log with small partitions (``partition_events``): ``events``
  webhooks loaded, folded and derived once, then vacuumed, analyzed and checkpointed (what
  PostgreSQL does after a load must not land on a measured window); then ``2 * runs + 1``
  pairs, in alternating order, of (a) ingest alone and (b) ingest while ONE
  ``acklog retention run --older-than 0s`` (a real process, archiving to a ``file://`` store)
  archives, verifies, detaches and drops the closed partitions at its default pace
  (``ACKLOG_RETENTION_RATE``), as a run does in production: one long process. The run is
  started before the first (b) window and stopped (SIGSTOP) for each (a) window, at a point
  where its PostgreSQL session is idle and holds no lock on the log but ACCESS SHARE (else it
  is let go on for 50 ms and stopped again), and continued (SIGCONT) for each (b) window; so
  its start-up lands on the first (b) window, once, as it does once per run. Then one pair
  of ingest alone and (c) ingest under a run unpaced (``--rate 0``, a new process, stopped at
  the window's end), for scale. Ingest is ``acklog serve --role ingest`` under the
  closed-loop load of the ingest phase (32 connections), as bench/feed.py measures it; the
  ratios are (b) ÷ (a) and (c) ÷ (a), paired per round.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import db, procs, wrkrun
from bench.dataset import Filler
from bench.ingest import Group, acklog_ingest, one_run
from bench.mix import Mix
from bench.progress import log
from bench.stats import median, paired_ratios, spread
from eventstore import archive, locks, partitions
from eventstore.archive_store import ArchiveStore
from eventstore.pool import connect
from projections import retention
from service.core.config import from_env

#: the target of issue 23: ingest during a retention run ÷ ingest alone
TARGET = 0.9
CONNECTIONS = 32
#: how far ahead of now the retention log's sweep runs: past every ack deadline
SWEEP_AHEAD = dt.timedelta(days=2)

#: every table of the log, the read models and the feed, with its partitions (a table that is
#: not partitioned is its own only member: pg_partition_tree returns nothing for it)
_SIZES = """
WITH t AS (
  SELECT n.nspname AS schema, c.relname AS name, c.oid AS top
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND ((n.nspname = 'public' AND c.relname = 'events') OR n.nspname IN ('rm', 'feed'))
), m AS (
  SELECT t.top, t.top AS relid FROM t
  UNION SELECT t.top, p.relid FROM t, pg_partition_tree(t.top) p
)
SELECT t.schema, t.name,
       count(*) FILTER (WHERE k.relkind = 'r') AS parts,
       coalesce(sum(pg_relation_size(m.relid)), 0) AS heap,
       coalesce(sum(pg_total_relation_size(nullif(k.reltoastrelid, 0))), 0) AS toast,
       coalesce(sum(pg_indexes_size(m.relid)), 0) AS indexes
FROM t JOIN m ON m.top = t.top JOIN pg_class k ON k.oid = m.relid
GROUP BY t.schema, t.name
ORDER BY t.schema <> 'public', t.schema, t.name
"""


async def fold(dsn: str, sweep_ahead: dt.timedelta | None = None) -> dict[str, float]:
    """The projector and the feed's outbox caught up with the log (in this process): the
    projector's cold start when it has no checkpoint (the bulk load), else its batches."""
    from projections.feed.outbox import Outbox
    from projections.rebuild import bulk_load
    from projections.runner import Projector

    conn = await connect(dsn)
    try:
        started = time.perf_counter()
        projector = Projector(dsn, bulk_load=bulk_load)
        folded = await projector.cold_start(conn)
        folded += await projector.catch_up(conn)
        if sweep_ahead:
            # the live projector's sweep, its clock moved past every ack deadline: messages
            # still waiting are marked missed, so none holds its events in the log
            later = dt.datetime.now(dt.UTC) + sweep_ahead
            await Projector(dsn, clock=lambda: later).sweep(conn)
        fold_s = time.perf_counter() - started
        started = time.perf_counter()
        derived = await Outbox(dsn, batch_size=1000).catch_up(conn)
        derive_s = time.perf_counter() - started
    finally:
        await conn.close()
    return {"folded": folded, "fold_s": fold_s, "derived": derived, "derive_s": derive_s}


async def sizes(dsn: str, webhooks: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
        rows = await conn.fetch(_SIZES)
        body_bytes = int(await conn.fetchval("SELECT coalesce(sum(length(body)), 0) FROM events"))
    finally:
        await conn.close()
    tables: list[dict[str, Any]] = []
    for r in rows:
        heap, toast, idx = int(r["heap"]), int(r["toast"]), int(r["indexes"])
        tables.append(
            {
                "table": r["name"] if r["schema"] == "public" else f"{r['schema']}.{r['name']}",
                "partitions": int(r["parts"]),
                "heap": heap,
                "toast": toast,
                "indexes": idx,
                "total": heap + toast + idx,
                "per_webhook": {
                    "heap": heap / webhooks,
                    "toast": toast / webhooks,
                    "indexes": idx / webhooks,
                    "total": (heap + toast + idx) / webhooks,
                },
            }
        )

    def group(pred: Any) -> dict[str, float]:
        chosen = [t for t in tables if pred(t["table"])]
        out = {k: float(sum(t[k] for t in chosen)) for k in ("heap", "toast", "indexes", "total")}
        out["per_webhook"] = out["total"] / webhooks
        out["per_million_mb"] = out["per_webhook"]  # (B / webhook) * 1e6 / 1e6
        return out

    return {
        "webhooks": webhooks,
        "body_bytes_per_webhook": body_bytes / webhooks,
        "tables": tables,
        "groups": {
            "log": group(lambda n: n == "events"),
            "read models": group(lambda n: n.startswith("rm.")),
            "feed": group(lambda n: n.startswith("feed.")),
            "all": group(lambda n: True),
        },
    }


async def archives(
    server_dsn: str, dsn: str, workdir: Path, runs: int, log_bytes: dict[str, float]
) -> dict[str, Any]:
    conn = await connect(dsn)
    try:
        head = await archive.head(conn)
        made: list[dict[str, Any]] = []
        for i in range(runs):
            store = ArchiveStore((workdir / f"lifecycle-archives-{i}").as_uri())
            started = time.perf_counter()
            manifest = await archive.archive_range(conn, store, 1, head)
            archive_s = time.perf_counter() - started
            started = time.perf_counter()
            await archive.verify(store, manifest)
            verify_s = time.perf_counter() - started
            async with db.database(server_dsn, "acklog_bench_lifecycle_restore") as target:
                await db.add_channels(target, Mix().providers())
                rconn = await connect(target)
                try:
                    started = time.perf_counter()
                    restored = await archive.restore(rconn, store, manifest)
                    restore_s = time.perf_counter() - started
                finally:
                    await rconn.close()
            r = {
                "rows": manifest.rows,
                "bytes": manifest.bytes,
                "archive_s": archive_s,
                "verify_s": verify_s,
                "restore_s": restore_s,
                "restored": restored.inserted,
                "archive_events_per_s": manifest.rows / archive_s,
                "verify_events_per_s": manifest.rows / verify_s,
                "restore_events_per_s": restored.inserted / restore_s,
            }
            made.append(r)
            log(
                f"  archive run {i + 1}/{runs}: {manifest.bytes:,} bytes for {manifest.rows:,}"
                f" events; archive {r['archive_events_per_s']:,.0f}/s, verify"
                f" {r['verify_events_per_s']:,.0f}/s, restore {r['restore_events_per_s']:,.0f}/s"
            )
    finally:
        await conn.close()
    rows = made[0]["rows"]
    size = median([r["bytes"] for r in made])
    data = log_bytes["heap"] + log_bytes["toast"]
    return {
        "events": rows,
        "bytes": size,
        "bytes_per_webhook": size / rows,
        "mb_per_million": size / rows,  # (bytes / webhook) * 1e6 / 1e6: MB per million
        "log_mb_per_million": log_bytes["total"] / rows,
        "compression_vs_log_data": data / size,
        "compression_vs_log_total": log_bytes["total"] / size,
        **{
            k: spread([r[k] for r in made])
            for k in ("archive_events_per_s", "verify_events_per_s", "restore_events_per_s")
        },
        "raw": made,
    }


def _retention_process(
    dsn: str, workdir: Path, name: str, env: dict[str, str], rate: int | None
) -> Any:
    argv = [procs.ACKLOG, "retention", "run", "--older-than", "0s"]
    if rate is not None:
        argv += ["--rate", str(rate)]
    out = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, env=procs.env(DATABASE_URL=dsn, **env)
    )
    return proc, out


class LongRun:
    """One paced ``acklog retention run`` across every (b) window: continued for a window,
    stopped between them (see the module's docstring)."""

    def __init__(self, dsn: str, workdir: Path, env: dict[str, str]) -> None:
        self.dsn, self.workdir, self.env = dsn, workdir, env
        self.proc: Any = None
        self.out: Any = None
        self.started = 0
        #: how often a stop found the run mid-statement or holding a lock and let it go on
        self.let_go = 0

    def _start(self) -> None:
        name = f"lifecycle-retention-long-{self.started}"
        self.proc, self.out = _retention_process(self.dsn, self.workdir, name, self.env, None)
        self.log = self.workdir / f"{name}.log"
        self.started += 1

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.started else ""

    async def go(self) -> None:
        """Continue the run (a new one when the last has finished)."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.out.close()
            self._start()
        else:
            self.proc.send_signal(signal.SIGCONT)

    async def _safe(self, conn: asyncpg.Connection) -> bool:
        """Whether the stopped run's session is idle and holds nothing that ingest could
        wait for (ACCESS SHARE on the log is its read's; an advisory lock is only its own)."""
        held = await locks.holder(conn, locks.RETENTION)
        if held is None:
            return True  # starting, or between its connection and its lock: no transaction
        state = await conn.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", held.pid)
        if state not in ("idle", "idle in transaction"):
            return False
        strong = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'relation'"
            " AND (mode <> 'AccessShareLock' OR NOT granted)",
            held.pid,
        )
        return int(strong) == 0

    async def pause(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        conn = await asyncpg.connect(self.dsn)
        try:
            for _ in range(400):
                self.proc.send_signal(signal.SIGSTOP)
                await asyncio.sleep(0.02)  # what was in flight reaches the database
                if await self._safe(conn):
                    return
                self.let_go += 1
                self.proc.send_signal(signal.SIGCONT)
                await asyncio.sleep(0.05)
            raise RuntimeError("the retention run never stopped at a safe point")
        finally:
            await conn.close()

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
                procs.stop(self.proc)
            self.out.close()


async def _round_long(
    group: Group, dsn: str, dbname: str, run: LongRun, duration: float, use_wrk: bool
) -> dict[str, Any]:
    """Ingest while the long run works, continued for this window only."""
    low, parts = await _oldest(dsn)
    before = run.text()
    started = time.perf_counter()
    await run.go()
    try:
        r = await one_run(group, dsn, dbname, "events", CONNECTIONS, duration, use_wrk)
    finally:
        await run.pause()
    took = time.perf_counter() - started
    text = run.text()
    new = text[len(before) :] if text.startswith(before) else text
    r["retention"] = {
        "rate": None,
        "long_run": True,
        "processes_started": run.started,
        "cut_at_window_end": False,
        "exit": run.proc.poll(),
        **await _what_it_took(dsn, new, took, low, parts),
        "covered_round": True,
        "ingest_window_s": round(took, 2),
    }
    return r


async def _what_it_took(
    dsn: str, output: str, seconds: float, low: int, parts: int
) -> dict[str, Any]:
    """What a run did in ``seconds``, from its ``output`` and the log's lowest position and
    partition count before it (``low``, ``parts``) and now."""
    new_low, new_parts = await _oldest(dsn)
    taken = new_low - low
    return {
        "seconds": round(seconds, 2),
        "partitions_dropped": sum(1 for line in output.splitlines() if line.startswith("drop ")),
        "partitions_before": parts,
        "partitions_after": new_parts,
        "positions_taken": taken,
        "events_per_s": taken / seconds if seconds else 0.0,
    }


async def _oldest(dsn: str) -> tuple[int, int]:
    """(the log's lowest position, its partitions)."""
    conn = await asyncpg.connect(dsn)
    try:
        low = int(await conn.fetchval("SELECT coalesce(min(position), 0) FROM events"))
        parts = len(await partitions.list_partitions(conn, count=False))
    finally:
        await conn.close()
    return low, parts


async def _round_with(
    group: Group,
    dsn: str,
    dbname: str,
    workdir: Path,
    env: dict[str, str],
    i: int,
    duration: float,
    use_wrk: bool,
    rate: int | None,
) -> dict[str, Any]:
    """Ingest while a retention run works (``rate``: its ``--rate``; None: the default
    pace), the run stopped when the ingest window ends if it is still working."""
    low, parts = await _oldest(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        todo = await retention.plan(conn, dt.timedelta(0))
    finally:
        await conn.close()
    started = time.perf_counter()
    name = f"lifecycle-retention-{i}-{'default' if rate is None else rate}"
    proc, out = _retention_process(dsn, workdir, name, env, rate)

    def ended() -> tuple[int, float]:
        """The process's exit code and the moment it exited (not when the bench looked)."""
        rc = proc.wait(900)
        return rc, time.perf_counter()

    try:
        waiting = asyncio.ensure_future(asyncio.to_thread(ended))
        r = await one_run(group, dsn, dbname, "events", CONNECTIONS, duration, use_wrk)
        ingest_done = time.perf_counter() - started
        cut = proc.poll() is None
        if cut:
            proc.terminate()  # resumed by the next run: a cut-short run is one of its cases
        rc, end = await waiting
        took = end - started
    finally:
        if proc.poll() is None:
            procs.stop(proc)
        out.close()
    text = (workdir / f"{name}.log").read_text(errors="replace")
    if rc != 0 and not cut:
        raise RuntimeError(f"acklog retention run exited {rc}: {text[-500:]}")
    r["retention"] = {
        "rate": rate,
        "cut_at_window_end": cut,
        "exit": rc,
        "planned": len(todo.take),
        "horizon": todo.horizon.reason,
        **await _what_it_took(dsn, text, took, low, parts),
        # the run outlasted the ingest window: the whole round ran under it
        "covered_round": took >= ingest_done,
        "ingest_window_s": round(ingest_done, 2),
    }
    return r


async def _settle(dsn: str) -> float:
    """After a load of ``events`` webhooks, what PostgreSQL would do next on its own
    (autovacuum of the new rows, a checkpoint of the dirtied buffers) done now, before the
    round measures: else it lands on whichever mode the round measures first (seen: that
    mode 20-45% slower, whatever it was). Seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _known_firsts(dsn: str, filler: Filler) -> None:
    """The loader points its constant bodies at their first copy in the log: ingest, and
    retention (which drops first copies), move those between loads, so they are read back."""
    probe = Filler(dsn)
    for _ in probe.records(len(probe.mix.deck), 1):
        pass
    keys = list(probe.first_seen)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT channel, dedup_key, min(position) AS first FROM events"
            " WHERE duplicate_of IS NULL AND (channel, dedup_key) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[])) GROUP BY 1, 2",
            [c for c, _ in keys],
            [k for _, k in keys],
        )
    finally:
        await conn.close()
    filler.first_seen = {(r["channel"], r["dedup_key"]): int(r["first"]) for r in rows}


async def _window(
    group: Group,
    dsn: str,
    dbname: str,
    workdir: Path,
    env: dict[str, str],
    n: int,
    mode: str,
    long_run: LongRun,
    duration: float,
    use_wrk: bool,
) -> dict[str, Any]:
    """One ingest window of ``mode``: alone, under the long paced run, or under a run unpaced."""
    if mode == "alone":
        return await one_run(group, dsn, dbname, "events", CONNECTIONS, duration, use_wrk)
    if mode == "retention":
        return await _round_long(group, dsn, dbname, long_run, duration, use_wrk)
    long_run.stop()
    return await _round_with(group, dsn, dbname, workdir, env, n, duration, use_wrk, 0)


def _described(r: dict[str, Any]) -> str:
    t = r.get("retention")
    if t is None:
        return ""
    return (
        f"; retention {t['seconds']:.1f} s, {t['partitions_dropped']}"
        f" partitions, {t['positions_taken']:,} events archived and dropped"
        f" ({t['events_per_s']:,.0f}/s)"
        f"{', cut at the window end' if t['cut_at_window_end'] else ''}"
        f"{', one run continued' if t.get('long_run') else ''}"
    )


async def retention_under_ingest(
    server_dsn: str,
    workdir: Path,
    *,
    runs: int,
    events: int,
    partition_events: int,
    duration: float,
    use_wrk: bool,
) -> dict[str, Any]:
    dbname = "acklog_bench_lifecycle_retention"
    env = {
        "ACKLOG_PARTITION_EVENTS": str(partition_events),
        "ACKLOG_ARCHIVE_URL": (workdir / "lifecycle-retention-archives").as_uri(),
    }
    first_size = {"acklog.partition_events": str(partition_events)}
    async with db.database(server_dsn, dbname, first_size) as dsn:
        await db.add_channels(dsn, Mix().providers())
        conn = await asyncpg.connect(dsn)
        try:
            await partitions.ensure(conn, partition_events)
        finally:
            await conn.close()
        filler = Filler(dsn)
        rounds: dict[str, list[dict[str, Any]]] = {
            "alone": [],
            "retention": [],
            "alone_unpaced": [],
            "unpaced": [],
        }
        # more pairs than the other phases' runs: a ratio of two noisy rates needs them
        pairs = 2 * runs + 1
        prepared: list[dict[str, float]] = []
        with acklog_ingest(dsn, workdir, 1, ACKLOG_PARTITION_EVENTS=str(partition_events)) as group:
            await one_run(group, dsn, dbname, None, CONNECTIONS, 1.0, use_wrk)  # warm-up
            await _known_firsts(dsn, filler)
            filled = await filler.fill(events)
            folded = await fold(dsn, SWEEP_AHEAD)
            folded["settle_s"] = await _settle(dsn)
            # the client's connections and the server's caches again after the load
            await one_run(group, dsn, dbname, None, CONNECTIONS, 1.0, use_wrk)
            prepared.append({**filled, **folded})
            log(
                f"  {events:,} events loaded ({filled['rows_per_s']:,.0f}/s),"
                f" {folded['folded']:,} folded in {folded['fold_s']:.1f} s,"
                f" {folded['derived']:,} feed events derived in {folded['derive_s']:.1f} s;"
                f" VACUUM ANALYZE and CHECKPOINT {folded['settle_s']:.1f} s"
            )
            plan: list[tuple[str, str]] = []
            for i in range(pairs):
                pair = [("alone", "retention"), ("retention", "alone")][i % 2]
                plan += [(m, "retention") for m in pair]
            plan += [("alone", "unpaced"), ("unpaced", "unpaced")]
            long_run = LongRun(dsn, workdir, env)
            try:
                for n, (mode, pair_of) in enumerate(plan):
                    r = await _window(
                        group, dsn, dbname, workdir, env, n, mode, long_run, duration, use_wrk
                    )
                    key = "alone_unpaced" if mode == "alone" and pair_of == "unpaced" else mode
                    rounds[key].append(r)
                    label = (
                        f"pair {n // 2 + 1}/{pairs}" if pair_of == "retention" else "unpaced pair"
                    )
                    log(
                        f"  ingest {mode:<9} {label}: {r['ok_rps']:,.0f} webhooks/s,"
                        f" p99 {r['latency_ms']['p99']:.1f} ms{_described(r)}"
                    )
            finally:
                long_run.stop()
            let_go = long_run.let_go
    ratios = paired_ratios(rounds["retention"], rounds["alone"], "ok_rps")
    rets = [r["retention"] for r in rounds["retention"]]
    unpaced = [r["retention"] for r in rounds["unpaced"]]
    return {
        "runs": pairs,
        "events_per_round": events,
        "partition_events": partition_events,
        "duration_s": duration,
        "connections": CONNECTIONS,
        "target": TARGET,
        "prepared": prepared,
        "alone": {"ok_rps": median([r["ok_rps"] for r in rounds["alone"]])},
        "retention": {"ok_rps": median([r["ok_rps"] for r in rounds["retention"]])},
        "rate": from_env(os.environ).retention_rate,  # what the runs it starts read
        "with_over_alone": ratios,
        "unpaced": {"ok_rps": median([r["ok_rps"] for r in rounds["unpaced"]])},
        "unpaced_over_alone": paired_ratios(rounds["unpaced"], rounds["alone_unpaced"], "ok_rps"),
        "unpaced_runs": {
            "events_per_s": spread([t["events_per_s"] for t in unpaced]),
            "positions_taken": [t["positions_taken"] for t in unpaced],
        },
        "p99_with_over_alone": paired_ratios(
            rounds["retention"], rounds["alone"], "latency_ms.p99"
        ),
        #: how often a stop found the long run mid-statement or holding a lock, and let it go on
        "stops_let_go": let_go,
        "processes_started": long_run.started,
        "retention_runs": {
            "seconds": spread([t["seconds"] for t in rets]),
            "events_per_s": spread([t["events_per_s"] for t in rets]),
            "positions_taken": [t["positions_taken"] for t in rets],
            "partitions_dropped": [t["partitions_dropped"] for t in rets],
            "covered_round": [t["covered_round"] for t in rets],
        },
        "raw": rounds,
    }


async def run(
    server_dsn: str,
    workdir: Path,
    *,
    runs: int,
    storage_events: int,
    events: int,
    partition_events: int,
    duration: float,
    use_wrk: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with db.database(server_dsn, "acklog_bench_lifecycle") as dsn:
        await db.add_channels(dsn, Mix().providers())
        log(f"lifecycle: storage of {storage_events:,} webhooks of the mix, folded and derived")
        filled = await Filler(dsn).fill(storage_events)
        folded = await fold(dsn)
        storage = await sizes(dsn, storage_events)
        storage["prepared"] = {**filled, **folded}
        out["storage"] = storage
        for t in storage["tables"]:
            if t["total"]:
                p = t["per_webhook"]
                log(
                    f"  {t['table']}: heap {p['heap']:.0f} + TOAST {p['toast']:.0f} + indexes"
                    f" {p['indexes']:.0f} = {p['total']:.0f} bytes per webhook"
                )
        log(f"lifecycle: archive, verify, restore {storage_events:,} events, {runs} runs")
        out["archives"] = await archives(server_dsn, dsn, workdir, runs, storage["groups"]["log"])
    log(
        f"lifecycle: retention under ingest, {2 * runs + 1} pairs after one load of"
        f" {events:,} events (partitions of {partition_events:,})"
    )
    out["retention_under_ingest"] = await retention_under_ingest(
        server_dsn,
        workdir,
        runs=runs,
        events=events,
        partition_events=partition_events,
        duration=duration,
        use_wrk=use_wrk,
    )
    out["client"] = "wrk" if use_wrk and wrkrun.wrk_path() else "bench.loadgen"
    return out
