"""Instructions per webhook in the ingest server, counted by callgrind: ``python -m bench.callgrind``.

Not part of ``make bench`` (valgrind slows the server some 50 times). Wall-clock and CPU-time
figures on a machine that others share move by tens of percent; instruction counts do not.
The ingest role runs under ``valgrind --tool=callgrind`` with instrumentation off; after a
warm-up it is switched on (``callgrind_control -i on``) for a closed-loop wrk run of the
webhook mix, then off, and the dump's total is divided by the 200s of that run. Each run also
counts the batches it committed (one ``xmin`` per batch in the log). The per-webhook figure of
one run still carries the run's fixed costs (the channel cache's refreshes, timers), so the
runs are fitted with a line: its slope is the marginal instructions per webhook. For an A/B,
run it on each commit and compare the slopes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from bench import db, procs, wrkrun
from bench.ingest import next_prefix
from bench.mix import Mix


def _total(out: Path) -> int:
    total = 0
    for f in out.parent.glob(out.name + "*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


def _start(dsn: str, workdir: Path, port: int, out: Path) -> subprocess.Popen[bytes]:
    env = {"DATABASE_URL": dsn, "ACKLOG_DATA_DIR": str(workdir / "acklog")}
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    argv += [procs.PYTHON, procs.ACKLOG, "serve", "--role", "ingest", "--port", str(port)]
    argv += ["--no-projector"]
    with (workdir / "callgrind-server.log").open("wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=procs.env(**env))


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


async def one_run(dsn: str, workdir: Path, connections: int, seconds: float) -> dict[str, float]:
    port = procs.free_port()
    out = Path(tempfile.mkdtemp(dir=workdir)) / "callgrind.out"
    proc = _start(dsn, workdir, port, out)
    try:
        procs.wait_port(port, proc, timeout=300)
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wrkrun.post_mix, url, connections, 5.0, next_prefix())
        conn = await asyncpg.connect(dsn)
        try:
            last = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            _control(proc.pid, "-i", "on")
            result = await asyncio.to_thread(
                wrkrun.post_mix, url, connections, seconds, next_prefix()
            )
            _control(proc.pid, "-i", "off")
            _control(proc.pid, "-d")
            rows, commits = await conn.fetchrow(
                "SELECT count(*), count(DISTINCT xmin::text) FROM events WHERE position > $1",
                last,
            )
        finally:
            await conn.close()
        await asyncio.sleep(1.0)  # the dump is written by the server process
        return {
            "webhooks": float(result["ok"]),
            "instructions": float(_total(out)),
            "events_per_commit": rows / commits if commits else 0.0,
        }
    finally:
        procs.stop(proc, timeout=30)


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="acklog-callgrind-"))
    with db.server() as (server_dsn, _):
        async with db.database(server_dsn, "acklog_bench_callgrind") as dsn:
            await db.add_channels(dsn, Mix().providers())
            runs = []
            for i in range(args.runs):
                r = await one_run(dsn, workdir, args.connections, args.seconds)
                runs.append(r)
                print(
                    f"run {i + 1}: {r['webhooks']:.0f} webhooks, {r['instructions']:,.0f}"
                    f" instructions, {r['instructions'] / max(r['webhooks'], 1):,.0f} per"
                    f" webhook, {r['events_per_commit']:.1f} events per commit",
                    flush=True,
                )
    if len(runs) >= 2 and len({r["webhooks"] for r in runs}) > 1:
        fit = statistics.linear_regression(
            [r["webhooks"] for r in runs], [r["instructions"] for r in runs]
        )
        print(f"marginal: {fit.slope:,.0f} instructions per webhook over {len(runs)} runs")


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.callgrind", description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="instrumented load per run")
    p.add_argument("--connections", type=int, default=32)
    os.environ.setdefault("ACKLOG_API_KEY", "acklog_bench_api_key")
    asyncio.run(main(p.parse_args()))
