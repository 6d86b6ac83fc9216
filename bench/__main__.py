"""``make bench`` / ``python -m bench``: every acklog benchmark, then docs/benchmarks.md.

Phases (``--only`` picks some): decode, ingest, e2e, projection, query, feed, lifecycle. Each runs against a
database of its own on a fresh embedded PostgreSQL (or ``DATABASE_URL``); load comes from
separate processes on loopback; every figure is a median of ``--runs`` runs, and every ratio
is taken between runs made back to back in the same bench. Raw results go to
``bench/results/<time>.json`` and ``docs/benchmarks.json``; the report to ``docs/benchmarks.md``.
With ``--only``, the phases not run are carried over from the previous docs/benchmarks.json,
each labelled on the page with the run it came from.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from bench import (
    db,
    decoders,
    endtoend,
    feed,
    hotpath,
    ingest,
    lifecycle,
    machine,
    procs,
    projection,
    query,
    report,
    wrkrun,
)
from bench.mix import Mix, check
from bench.progress import elapsed, log

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("decode", "ingest", "e2e", "projection", "query", "feed", "lifecycle")
#: the keys of the results each phase writes
PHASE_KEYS = {"decode": ("decode", "hotpath"), "projection": ("projection", "rebuild_shards")}
MIN_RUNS = 3
T = TypeVar("T")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--only", help=f"comma-separated phases of {', '.join(PHASES)}")
    p.add_argument(
        "--runs", type=int, default=MIN_RUNS, help=f"runs per figure (median), ≥{MIN_RUNS}"
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds per ingest run")
    p.add_argument(
        "--connections",
        default="32,256",
        help="ingest connection counts (32 and 256, where the floor's target is, always run)",
    )
    p.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="the big log (projection); the events loaded per retention round (lifecycle)",
    )
    p.add_argument(
        "--storage-events",
        type=int,
        default=200_000,
        help="the log measured and archived (lifecycle)",
    )
    p.add_argument(
        "--partition-events",
        type=int,
        default=100_000,
        help="positions per partition of the retention log (lifecycle)",
    )
    p.add_argument(
        "--small-events", type=int, default=300_000, help="the smaller log, for memory growth"
    )
    p.add_argument(
        "--one-channel-events",
        type=int,
        default=1_000_000,
        help="the one-channel log rebuilt with its tasks in --rebuild-shards shards and by"
        " the issue's code, b441ba9 (projection)",
    )
    p.add_argument(
        "--rebuild-shards",
        default="1,2,4,r1,r2",
        help="layouts of the one-channel rebuild: N shards each reading the channel, rN: N"
        " shards fed by one reader",
    )
    p.add_argument("--big-runs", type=int, default=1, help="runs at --events (1: time budget)")
    p.add_argument(
        "--retention-seconds",
        type=float,
        default=15.0,
        help="seconds per ingest round of the retention-under-ingest figure (lifecycle)",
    )
    p.add_argument("--messages", type=int, default=1_000_000, help="messages for the query phase")
    p.add_argument("--step-seconds", type=float, default=6.0, help="seconds per e2e rate step")
    p.add_argument("--no-wrk", action="store_true", help="use bench.loadgen even if wrk exists")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the bench")
    p.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="measure a tree with uncommitted changes (the report then says so at the top)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.events, args.small_events = 2.0, 40_000, 15_000
        args.one_channel_events = 20_000
        args.storage_events, args.partition_events = 10_000, 5_000
        args.messages, args.step_seconds = 60_000, 3.0
    elif args.runs < MIN_RUNS:
        p.error(f"--runs {args.runs}: a median needs at least {MIN_RUNS} runs (or --quick)")
    code = machine.code_state()
    if code["dirty"] and not args.allow_dirty:
        p.error(
            f"the tree has uncommitted changes ({', '.join(code['changed_files'][:5])}…): its"
            f" figures would not be those of commit {code['commit']}. Commit first, or pass"
            " --allow-dirty to measure anyway (the report is then flagged)."
        )
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    phases = args.only.split(",") if args.only else list(PHASES)
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    use_wrk = not args.no_wrk
    problems = check(Mix())
    if problems:
        raise SystemExit("the webhook mix is broken:\n  " + "\n  ".join(problems))
    workdir = Path(tempfile.mkdtemp(prefix="acklog-bench-"))
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "phases": phases,
        "runs": args.runs,
        "quick": bool(args.quick),
        "mix": Mix().describe(),
        "load_client": "wrk" if use_wrk and wrkrun.wrk_path() else "bench.loadgen",
    }
    profiles = not args.no_profile
    with db.server() as (server_dsn, where):
        results["machine"] = machine.describe()
        postmaster = await db.postmaster_pid(server_dsn)
        procs.use_postgres(postmaster)  # PostgreSQL CPU: this server's processes only
        results["postgres"] = {
            **await db.describe(server_dsn),
            "where": where,
            "postmaster_pid": postmaster,
            "cpu_measured": postmaster is not None,
        }
        log(f"PostgreSQL {results['postgres']['version']} ({where}); work dir {workdir}")
        if "decode" in phases:
            log("decode: pure decoder throughput per provider")
            results["decode"] = decoders.run(args.runs, 0.3 if not args.quick else 0.1)
            results["hotpath"] = await asyncio.to_thread(hotpath.run)  # it runs its own loop
        if "ingest" in phases:
            log("ingest: acklog vs bare aiohttp, naive INSERT-per-request and the durable floor")
            await guarded(
                "ingest",
                results,
                ingest.run(
                    server_dsn,
                    workdir,
                    connections=[int(c) for c in args.connections.split(",")],
                    runs=args.runs,
                    duration=args.duration,
                    use_wrk=use_wrk,
                    profile_seconds=6.0 if profiles else 0.0,
                ),
            )
        if "e2e" in phases:
            log("end to end: paced ingest with the projector in the same serve")
            await guarded(
                "e2e",
                results,
                endtoend.run(
                    server_dsn,
                    workdir,
                    runs=args.runs,
                    step_seconds=args.step_seconds,
                    start_rate=1000.0,
                    rate_step=1000.0,
                    max_rate=12000.0,
                    closed_seconds=3.0 if args.quick else endtoend.CLOSED_SECONDS,
                    use_wrk=use_wrk,
                ),
            )
        if "projection" in phases or "query" in phases:
            async with db.database(server_dsn, "acklog_bench_projection") as dsn:
                await db.add_channels(dsn, Mix().providers())
                sizes = [(args.small_events, args.runs), (args.events, args.big_runs)]
                if "projection" not in phases:
                    sizes = [(args.events, 1)]
                log(f"projection: {' then '.join(f'{s:,}' for s, _ in sizes)} events")
                proj = await guarded(
                    "projection",
                    results,
                    projection.run(
                        dsn,
                        workdir,
                        sizes=sizes,
                        profile_events=min(100_000, args.small_events) if profiles else None,
                    ),
                )
                if "projection" not in phases:
                    results.pop("projection", None)
                if "query" in phases and proj is not None:
                    log(f"query: topping rm.messages up to {args.messages:,} messages")
                    await guarded("query", results, query_phase(dsn, workdir, args, use_wrk))
        if "projection" in phases:
            shards = args.rebuild_shards.split(",")
            for k in shards:
                projection.parse_layout(k)  # a ValueError before the log is filled
            log(
                f"projection: a one-channel log rebuilt as"
                f" {' vs '.join(map(projection.layout_name, shards))}"
                f" and by {projection.ISSUE_CODE} (the issue's code)"
            )
            await guarded(
                "rebuild_shards",
                results,
                projection.shard_rebuilds(
                    server_dsn, args.one_channel_events, runs=args.runs, shards=shards
                ),
            )
        if "feed" in phases:
            log("feed: deliveries per second, and the feed's cost on ingest")
            await guarded(
                "feed",
                results,
                feed.run(
                    server_dsn,
                    workdir,
                    runs=args.runs,
                    duration=args.duration,
                    events=30_000 if not args.quick else 3_000,
                    use_wrk=use_wrk,
                ),
            )
        if "lifecycle" in phases:
            log("lifecycle: bytes per webhook, archives, retention under ingest")
            await guarded(
                "lifecycle",
                results,
                lifecycle.run(
                    server_dsn,
                    workdir,
                    runs=args.runs,
                    storage_events=args.storage_events,
                    events=args.events,
                    partition_events=args.partition_events,
                    duration=args.retention_seconds if not args.quick else args.duration,
                    use_wrk=use_wrk,
                ),
            )
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["bench_seconds"] = elapsed()
    return results


async def guarded(name: str, results: dict[str, Any], phase: Awaitable[T]) -> T | None:
    """Run a phase into ``results[name]``; a failure is logged and recorded instead, and the
    other phases still run."""
    try:
        outcome = await phase
    except Exception as exc:
        log(f"{name} FAILED: {type(exc).__name__}: {exc}")
        results.setdefault("errors", {})[name] = traceback.format_exc()[-3000:]
        return None
    results[name] = outcome
    return outcome


async def query_phase(
    dsn: str, workdir: Path, args: argparse.Namespace, use_wrk: bool
) -> dict[str, Any]:
    q: dict[str, Any] = {"data": await query.top_up(dsn, args.messages)}
    q["sql"] = await query.sql_bench(dsn, args.runs, 2000)
    if query.api_available():
        duration = 3.0 if not args.quick else 1.0
        q["http"] = await query.http_bench(dsn, workdir, args.runs, duration, 16, use_wrk)
    if query.console_available():
        from bench import console

        q["console"] = await console.page_bench(dsn, workdir, args.runs)
    return q


def carry_over(results: dict[str, Any], previous: dict[str, Any]) -> None:
    """The phases this run did not run, from the previous results, each labelled (under
    ``carried``) with the run it came from: a figure is never taken for this run's. Every
    ratio of a phase is between rounds of that one run, so a carried phase stays whole."""
    ran = set(results.get("phases", PHASES))
    before = previous.get("carried", {})
    for phase in PHASES:
        if phase in ran:
            continue
        keys = [k for k in PHASE_KEYS.get(phase, (phase,)) if k in previous]
        failed = phase in previous.get("errors", {})
        if not keys and not failed:
            continue
        for k in keys:
            results[k] = previous[k]
        origin = before.get(phase) or {
            "started_at": previous.get("started_at", "?"),
            "commit": previous.get("machine", {}).get("commit", "?"),
        }
        results.setdefault("carried", {})[phase] = origin
        if failed:
            results.setdefault("errors", {})[phase] = previous["errors"][phase]


def write(results: dict[str, Any], output: Path) -> None:
    previous_path = output.with_suffix(".json")
    if set(results.get("phases", PHASES)) != set(PHASES) and previous_path.exists():
        carry_over(results, json.loads(previous_path.read_text()))
    raw = json.dumps(results, indent=1, default=str)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out_dir / f"{stamp}.json").write_text(raw + "\n")
    output.with_suffix(".json").write_text(raw + "\n")
    output.write_text(report.render(results))
    log(f"wrote {output} and {output.with_suffix('.json')} (raw: bench/results/{stamp}.json)")


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    outcome = asyncio.run(main(arguments))
    write(outcome, Path(arguments.output))
