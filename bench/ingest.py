"""Ingest: the webhook mix POSTed to acklog's ingest and to three baselines, on the same loop.

* Closed loop, 32 and 256 connections: rounds interleaved (acklog, bare, naive, floor,
  acklog…) so a noisy moment hits them all alike; each ratio is taken between runs of the
  same round. ``floor`` is the durable floor (``bench.baselines``): the least any durable
  ingest must do, so acklog ÷ floor is what acklog's own work costs.
* CPU per webhook, separately for the server processes and for the bench's PostgreSQL
  server (this phase runs alone on it; never the machine's other PostgreSQL servers).
* Open loop: a fixed arrival rate (no coordinated omission), acklog and bare at the same rate.
* 1, 2 and 4 processes on one port against as many bare processes (SO_REUSEPORT).
* After every acklog run the rows of the log are counted: every 200 the client saw must be a
  row (the log may hold a few more: requests in flight when the load stopped still commit).

Every server runs on the same event loop implementation (``ACKLOG_LOOP``; uvloop where
installed), so "ingest ÷ bare" compares handlers, not loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench import db, procs, profile, wrkrun
from bench.baselines import FLOOR_TABLE, NAIVE_TABLE
from bench.mix import Mix
from bench.progress import log
from bench.stats import median, median_of, paired_ratios
from service.core import eventloop

#: acklog as shipped (one batch in flight), acklog with two, and the three baselines
TARGETS = ("acklog", "acklog_2w", "bare", "naive", "floor")
#: connection counts the floor's target is stated at (issue 25): always measured
FLOOR_CONNECTIONS = (32, 256)
PROCESSES = (1, 2, 4)
_prefix = itertools.count(10)

#: Where the server CPU per webhook went before this round of issue 11 (commit 5460f41, the
#: quiet-machine ``make bench`` of 2026-12-01 19:00 UTC, uvloop, py-spy 200 Hz at 32
#: connections; its raw figures are in the git history of BENCHMARKS.json, now
#: docs/benchmarks.json): shares of the profile times the measured 68 µs of
#: server CPU per webhook (bare: 30 µs). The same loop as today's runs, so stages compare.
BEFORE = {
    "commit": "5460f41",
    "server_us_per_webhook": 67.7,
    "bare_us_per_webhook": 30.0,
    "loop": "uvloop",
    "by_stage": {
        "ingest: response writing": 0.308,
        "ingest: aiohttp HTTP parsing and dispatch": 0.216,
        "event loop and sockets": 0.189,
        "ingest: receive handler (auth, headers, event id)": 0.111,
        "asyncpg (protocol, encoding rows and arrays)": 0.09,
        "appender (group commit)": 0.036,
        "other": 0.024,
        "decoders (projections/providers)": 0.014,
        "ingest: metrics (prometheus_client)": 0.012,
    },
}


def next_prefix() -> str:
    """Two digits unique to one load run, so its ids are new to the log."""
    return f"{next(_prefix):02d}"


@dataclass
class Group:
    """One or more server processes listening on one port."""

    name: str
    port: int
    procs: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """Every process of the group, children included (a supervisor's workers)."""
        out = []
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(p.pid)
                out.append(parent.pid)
                out += [c.pid for c in parent.children(recursive=True)]
        return out


@contextlib.contextmanager
def _group(
    name: str, argvs: list[list[str]], port: int, workdir: Path, env: dict[str, str]
) -> Iterator[Group]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        for i, argv in enumerate(argvs):
            with (workdir / f"{name}-{i}.log").open("wb") as out:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=procs.env(**env)
                )
            started.append(proc)
            procs.wait_port(port, proc)
        yield Group(name, port, started)
    finally:
        for proc in started:
            procs.stop(proc)


@contextlib.contextmanager
def acklog_ingest(
    dsn: str, workdir: Path, processes: int, writers: int | None = None, **extra_env: str
) -> Iterator[Group]:
    """acklog's ingest role alone: ``acklog serve --role ingest --workers N`` (N > 1: a
    supervisor and N worker processes sharing the port by SO_REUSEPORT)."""
    port = procs.free_port()
    env = {
        "DATABASE_URL": dsn,
        "ACKLOG_DATA_DIR": str(workdir / "acklog"),
        "ACKLOG_API_KEY": "acklog_bench_api_key",
    }
    if writers is not None:
        env["ACKLOG_APPEND_WRITERS"] = str(writers)
    env.update(extra_env)
    argv = [procs.ACKLOG, "serve", "--role", "ingest", "--port", str(port)]
    argv += ["--workers", str(processes), "--no-projector"]
    with _group(f"acklog-x{processes}", [argv], port, workdir, env) as group:
        yield group


@contextlib.contextmanager
def baseline(kind: str, dsn: str, workdir: Path, processes: int = 1) -> Iterator[Group]:
    port = procs.free_port()
    argv = [procs.PYTHON, "-m", "bench.baselines", kind, "--port", str(port), "--dsn", dsn]
    if processes > 1:
        argv.append("--reuse-port")
    with _group(f"{kind}-x{processes}", [argv] * processes, port, workdir, {}) as group:
        yield group


async def _last_position(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    finally:
        await conn.close()


async def _commits_since(dsn: str, position: int) -> int:
    """Transactions that appended after ``position``: each batch is one transaction, so its
    rows share one ``xmin`` (exact, unlike pg_stat_database's counters, which lag)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(DISTINCT xmin::text) FROM events WHERE position > $1", position
            )
        )
    finally:
        await conn.close()


class Meter:
    """CPU seconds of the server's processes and of the PostgreSQL backends of one database."""

    def __init__(self, group: Group, dsn: str, dbname: str) -> None:
        self.group, self.dsn, self.dbname = group, dsn, dbname

    async def _backends(self) -> list[int]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.dbname,
            )
        finally:
            await conn.close()
        return [r["pid"] for r in rows]

    async def _postgres(self) -> dict[int, float]:
        """CPU seconds of the bench's PostgreSQL server (all of it: this phase is alone on
        it), or of this database's backends when the server is not on this host's pids."""
        master = procs._postmaster
        if master is not None:
            return {master: procs.postgres_cpu_seconds(master)}
        return {p: procs.cpu_seconds(p) for p in await self._backends()}

    async def start(self) -> None:
        self._server = {p: procs.cpu_seconds(p) for p in self.group.pids()}
        self._pg = await self._postgres()
        self._t0 = asyncio.get_running_loop().time()

    async def stop(self) -> dict[str, float]:
        """CPU seconds used since ``start``."""
        wall = asyncio.get_running_loop().time() - self._t0
        server = sum(procs.cpu_seconds(p) - self._server.get(p, 0.0) for p in self.group.pids())
        end = await self._postgres()
        pg = sum(max(cpu - self._pg.get(p, 0.0), 0.0) for p, cpu in end.items())
        return {"server_s": server, "postgres_s": pg, "wall_s": wall}


async def _count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def one_run(
    server: Group,
    dsn: str,
    dbname: str,
    table: str | None,
    connections: int,
    duration: float,
    use_wrk: bool,
    rate: float | None = None,
) -> dict[str, Any]:
    before = await _count(dsn, table) if table else 0
    last = await _last_position(dsn) if table == "events" else None
    meter = Meter(server, dsn, dbname)
    await meter.start()
    if rate is None:
        result = await asyncio.to_thread(
            wrkrun.post_mix, server.url, connections, duration, next_prefix(), use_wrk=use_wrk
        )
    else:
        result = await asyncio.to_thread(
            wrkrun.paced_mix, server.url, rate, duration, next_prefix(), connections
        )
    cpu = await meter.stop()
    ok = max(int(result["ok"]), 1)
    result["cpu_cores"] = {
        "server": round(cpu["server_s"] / cpu["wall_s"], 3),
        "postgres": round(cpu["postgres_s"] / cpu["wall_s"], 3),
    }
    result["server_us_per_200"] = cpu["server_s"] / ok * 1e6
    result["postgres_us_per_200"] = cpu["postgres_s"] / ok * 1e6
    if "client_cpu_s" in result:
        result["client_us_per_200"] = result["client_cpu_s"] / ok * 1e6
    if table:
        # requests in flight at the cut-off commit meanwhile: wait until the count is stable
        stored = await _count(dsn, table) - before
        for _ in range(50):
            await asyncio.sleep(0.1)
            now = await _count(dsn, table) - before
            if now == stored:
                break
            stored = now
        result["rows_stored"] = stored
        result["stored_minus_ok"] = stored - result["ok"]
        # every 200 is a row; the extra rows are at most the requests in flight at the end
        result["every_200_stored"] = 0 <= stored - result["ok"] <= connections
    if last is not None:
        commits = await _commits_since(dsn, last)
        result["commits"] = commits
        result["mean_batch"] = result["rows_stored"] / commits if commits else 0.0
        # one batch after another: the wall time of a commit cycle, form + write + COMMIT
        result["cycle_ms"] = result["duration"] * 1000 / commits if commits else None
    return result


def _line(target: str, what: str, r: dict[str, Any]) -> str:
    return (
        f"  ingest {target:9} {what}: {r['ok_rps']:8,.0f} 200/s"
        f"  p50 {r['latency_ms']['p50']:6.1f} ms  p99 {r['latency_ms']['p99']:6.1f} ms"
        f"  errors {r['errors']}  µs/200 server {r['server_us_per_200']:.0f}"
        f" PG {r['postgres_us_per_200']:.0f}"
    )


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
    dbname = "acklog_bench_ingest"
    async with db.database(server_dsn, dbname) as dsn:
        mix = Mix()
        await db.add_channels(dsn, mix.providers())
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(NAIVE_TABLE)
            await conn.execute(FLOOR_TABLE)
        finally:
            await conn.close()
        tables = {
            "acklog": "events",
            "acklog_2w": "events",
            "bare": None,
            "naive": "naive_events",
            "floor": "floor_events",
        }
        results: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in TARGETS}
        out: dict[str, Any] = {}

        async def measure(target: str, group: Group, c: int, **kw: Any) -> dict[str, Any]:
            table = tables[target]
            return await one_run(group, dsn, dbname, table, c, duration, use_wrk, **kw)

        with contextlib.ExitStack() as stack:
            started = {
                "acklog": stack.enter_context(acklog_ingest(dsn, workdir, 1)),
                "acklog_2w": stack.enter_context(acklog_ingest(dsn, workdir, 1, writers=2)),
                "bare": stack.enter_context(baseline("bare", dsn, workdir)),
                "naive": stack.enter_context(baseline("naive", dsn, workdir)),
                "floor": stack.enter_context(baseline("floor", dsn, workdir)),
            }
            for target, server in started.items():  # warm-up: connections, caches
                await one_run(server, dsn, dbname, None, 32, 1.0, use_wrk)
                log(f"  {target} warmed up on port {server.port}")
            # the floor's target is stated at 32 and 256 connections: those are always run
            for c in dict.fromkeys([*connections, *FLOOR_CONNECTIONS]):
                for i in range(runs):
                    for target in TARGETS:
                        r = await measure(target, started[target], c)
                        results[target].setdefault(str(c), []).append(r)
                        log(_line(target, f"c={c:<3} run {i + 1}/{runs}", r))
            # open loop at a fixed rate: ~60 % of what acklog took closed-loop at 32
            closed = results["acklog"].get("32") or next(iter(results["acklog"].values()))
            rate = round(0.6 * median([r["ok_rps"] for r in closed]), -2) or 500.0
            paced: dict[str, list[dict[str, Any]]] = {"acklog": [], "bare": []}
            for i in range(max(runs - 1, 1)):
                for target in paced:
                    r = await measure(target, started[target], 256, rate=rate)
                    paced[target].append(r)
                    log(_line(target, f"paced {rate:,.0f}/s run {i + 1}", r))
            out["open_loop"] = {
                "rate": rate,
                **{t: _paced_summary(rs) for t, rs in paced.items()},
            }
            if profile_seconds and profile.available():
                out["profile_acklog_32"] = await _profile(
                    started["acklog"], dsn, dbname, profile_seconds, use_wrk
                )
        out["processes"] = await _processes(
            dsn, dbname, workdir, max(runs - 1, 1), duration, use_wrk
        )
        summary = summarize(results)
        summary.update(out)
        summary["before"] = BEFORE
        summary["loop"] = eventloop.name()
        summary["workers_from"] = "acklog serve --role ingest --workers N"
        summary["log_rows"] = await _count(dsn, "events")
        summary["duplicates_in_log"] = await _duplicates(dsn)
        summary["client"] = "wrk" if use_wrk and wrkrun.wrk_path() else "bench.loadgen"
        summary["duration_s"] = duration
        summary["runs"] = runs
        summary["raw"] = results
        return summary


def _paced_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ok_rps": median_of(runs, "ok_rps"),
        "p50_ms": median_of(runs, "latency_ms.p50"),
        "p99_ms": median_of(runs, "latency_ms.p99"),
        "max_ms": median_of(runs, "latency_ms.max"),
        "errors": sum(int(r["errors"]) for r in runs),
        "server_us_per_200": median_of(runs, "server_us_per_200"),
        "postgres_us_per_200": median_of(runs, "postgres_us_per_200"),
        "every_200_stored": all(r.get("every_200_stored", True) for r in runs),
    }


async def _processes(
    dsn: str, dbname: str, workdir: Path, runs: int, duration: float, use_wrk: bool
) -> dict[str, Any]:
    """acklog with N ingest processes against N bare processes, interleaved, 64 connections."""
    out: dict[str, Any] = {}
    for n in PROCESSES:
        rounds: dict[str, list[dict[str, Any]]] = {"acklog": [], "bare": []}
        with (
            acklog_ingest(dsn, workdir, n) as ack,
            baseline("bare", dsn, workdir, n) as bare,
        ):
            groups = {"acklog": ack, "bare": bare}
            for group in groups.values():
                await one_run(group, dsn, dbname, None, 64, 1.0, use_wrk)
            for i in range(runs):
                for target, group in groups.items():
                    table = "events" if target == "acklog" else None
                    r = await one_run(group, dsn, dbname, table, 64, duration, use_wrk)
                    rounds[target].append(r)
                    log(_line(target, f"x{n} processes run {i + 1}", r))
        out[str(n)] = {
            "acklog_rps": median_of(rounds["acklog"], "ok_rps"),
            "bare_rps": median_of(rounds["bare"], "ok_rps"),
            "acklog_p99_ms": median_of(rounds["acklog"], "latency_ms.p99"),
            "acklog_server_us": median_of(rounds["acklog"], "server_us_per_200"),
            "acklog_postgres_us": median_of(rounds["acklog"], "postgres_us_per_200"),
            "bare_server_us": median_of(rounds["bare"], "server_us_per_200"),
            "ratio": paired_ratios(rounds["acklog"], rounds["bare"], "ok_rps"),
            "every_200_stored": all(r["every_200_stored"] for r in rounds["acklog"]),
        }
    return out


async def _profile(
    server: Group, dsn: str, dbname: str, seconds: float, use_wrk: bool
) -> dict[str, Any] | None:
    """py-spy on the ingest process under the 32-connection load (an extra, untimed run)."""
    pid = max(server.pids())  # the worker when a supervisor runs it, else the server itself
    load = asyncio.create_task(
        asyncio.to_thread(
            wrkrun.post_mix, server.url, 32, seconds + 2, next_prefix(), use_wrk=use_wrk
        )
    )
    await asyncio.sleep(1.0)
    before = procs.cpu_seconds(pid)
    raw = await asyncio.to_thread(profile.record, pid, seconds)
    cpu = procs.cpu_seconds(pid) - before
    result = await load
    summary = profile.summarize(raw, seconds=seconds)
    if summary is not None and result["ok"]:
        # py-spy slows the process a little; the µs are those of the profiled run
        summary["server_us_per_webhook"] = cpu / (result["ok"] * seconds / result["duration"]) * 1e6
    return summary


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
                "server_cpu_us_per_request": median_of(runs, "server_us_per_200"),
                "postgres_us_per_request": median_of(runs, "postgres_us_per_200"),
                "client_us_per_request": median_of(runs, "client_us_per_200"),
            }
        for target in ("acklog", "acklog_2w", "floor"):
            row[target]["every_200_stored"] = all(r["every_200_stored"] for r in results[target][c])
        ack = results["acklog"][c]
        row["acklog"]["ok_total"] = sum(int(r["ok"]) for r in ack)
        row["acklog"]["rows_stored"] = sum(int(r["rows_stored"]) for r in ack)
        row["acklog"]["every_200_stored"] = all(r["every_200_stored"] for r in ack)
        batches = [r["mean_batch"] for r in ack if "mean_batch" in r]
        row["acklog"]["mean_batch"] = median(batches) if batches else None
        cycles = [r["cycle_ms"] for r in ack if r.get("cycle_ms")]
        row["acklog"]["cycle_ms"] = median(cycles) if cycles else None
        row["ratio_vs_bare"] = paired_ratios(ack, results["bare"][c], "ok_rps")
        row["ratio_vs_naive"] = paired_ratios(ack, results["naive"][c], "ok_rps")
        row["ratio_vs_floor"] = paired_ratios(ack, results["floor"][c], "ok_rps")
        row["floor_vs_bare"] = paired_ratios(results["floor"][c], results["bare"][c], "ok_rps")
        row["cpu_ratio_vs_floor"] = paired_ratios(ack, results["floor"][c], "server_us_per_200")
        row["cpu_ratio_vs_bare"] = paired_ratios(ack, results["bare"][c], "server_us_per_200")
        row["two_vs_one_in_flight"] = paired_ratios(results["acklog_2w"][c], ack, "ok_rps")
        table[c] = row
    return {"by_connections": table}
