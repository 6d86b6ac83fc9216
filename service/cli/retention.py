"""``acklog retention run [--older-than D] | status``: old partitions of the log archived,
verified, detached and dropped (projections.retention; docs/retention.md).

Exit codes: 0 done (or nothing to do); 2 something to fix (no ACKLOG_ARCHIVE_URL, a bad
duration); 3 the run failed (the store unreachable or full, an archive corrupt, the database):
nothing unverified was dropped, and the next run resumes where this one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys

import asyncpg

from eventstore.errors import DRIVER_ERRORS
from service.cli.common import settings_of
from service.core.config import Settings, duration
from service.core.database import connect_waiting, database_url, wait_and_migrate
from service.runtime import roles

#: test hook: ``acklog retention run`` kills itself (SIGKILL) right after this step
#: (archive, verify, detach, drop) is done and before it is recorded
KILL_AT = "ACKLOG_TEST_RETENTION_KILL_AT"


def _duration(text: str) -> dt.timedelta:
    try:
        return dt.timedelta(seconds=duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rt = sub.add_parser(
        "retention",
        help="archive and drop old partitions of the log (run, status)",
        description="Retention: closed partitions of the log older than a duration are"
        " archived to ACKLOG_ARCHIVE_URL, verified, detached and dropped, each step recorded so"
        " a run killed at any point is resumed by the next. See docs/retention.md.",
    )
    acts = rt.add_subparsers(dest="action", required=True, metavar="ACTION")
    rn = acts.add_parser("run", help="one run now (waits while another run holds the lock)")
    rn.add_argument(
        "--older-than",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="partitions whose newest event is older (90d, 12h, 0s: every closed one);"
        " default ACKLOG_RETENTION",
    )
    rn.add_argument(
        "--rate",
        type=int,
        default=None,
        metavar="EVENTS",
        help="events read from the log per second at most (0: as fast as it can, for a quiet"
        " hour); default ACKLOG_RETENTION_RATE",
    )
    rn.set_defaults(fn=run)
    acts.add_parser(
        "status", help="the oldest position kept, the partitions, the last runs"
    ).set_defaults(fn=status)


async def _connect(settings: Settings) -> asyncpg.Connection:
    from eventstore.pool import init_connection

    dsn = database_url(settings)
    await wait_and_migrate(dsn)
    conn = await connect_waiting(dsn)
    await init_connection(conn)
    return conn


def _step(step: str, name: str) -> None:
    if step == "waiting":
        print(f"waiting: another retention run holds the lock ({name})", flush=True)
        return
    print(f"{step} {name}", flush=True)
    if os.environ.get(KILL_AT) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def run(args: argparse.Namespace) -> int:
    roles.retention_priority()  # first: as the role, ingest on this machine goes first
    from projections import retention

    settings = settings_of(args)
    older_than = args.older_than
    if older_than is None:
        if settings.retention is None:
            print(
                "error: give --older-than DURATION or set ACKLOG_RETENTION",
                file=sys.stderr,
                flush=True,
            )
            return 2
        older_than = dt.timedelta(seconds=settings.retention)

    rate = settings.retention_rate if args.rate is None else args.rate
    if rate < 0:
        print("error: --rate must be 0 (unpaced) or more", file=sys.stderr, flush=True)
        return 2

    async def work() -> int:
        conn = await _connect(settings)
        try:
            done = await retention.run(
                conn, settings.archive_url, older_than, on_step=_step, rate=rate
            )
            if settings.readmodel_retention is not None:
                gone = await retention.forget_messages(
                    conn, dt.timedelta(seconds=settings.readmodel_retention)
                )
                print(f"read model: {gone:,} messages forgotten", flush=True)
            kept = await retention.oldest_kept(conn)
        finally:
            await conn.close()
        print(
            f"retention run {done.id}: {done.outcome}, {done.partitions} partitions,"
            f" {done.rows:,} events, {done.bytes:,} bytes freed; oldest position kept {kept}",
            flush=True,
        )
        return 0

    try:
        return asyncio.run(work())
    except retention.RetentionError as exc:
        print(f"error: retention failed: {exc}; nothing unverified was dropped", file=sys.stderr)
        return 3
    except DRIVER_ERRORS as exc:
        print(f"error: the database failed: {exc}", file=sys.stderr, flush=True)
        return 3


def status(args: argparse.Namespace) -> int:
    from eventstore import partitions
    from eventstore import retention as records
    from projections import retention

    settings = settings_of(args)

    async def work() -> int:
        conn = await _connect(settings)
        try:
            kept = await retention.oldest_kept(conn)
            h = await retention.horizon(conn)
            parts = await partitions.list_partitions(conn)
            floor = await partitions.dedup_floor(conn)
            runs = await records.last_runs(conn, 5)
        finally:
            await conn.close()
        on = f"every {settings.retention:g} s" if settings.retention is not None else "off"
        print(
            f"retention: {on}; archives at {settings.archive_url or '(ACKLOG_ARCHIVE_URL unset)'}"
        )
        print(f"oldest position kept: {kept}")
        print(f"horizon: {h.position} ({h.reason})")
        if floor is None:
            print("dedup lookups: every partition (no floor: ACKLOG_DEDUP_WINDOW is off,")
            print("  or no ingest role has run since the upgrade)")
        else:
            print(f"dedup lookups: from position {floor} (the floor the ingest role moves)")
        for p in parts:
            low = p.low if p.low is not None else 1
            state = "attached" if p.attached else "detached"
            print(
                f"  {p.name}  positions {low}..{p.high - 1}  {p.rows:,} rows  {p.bytes:,} bytes  {state}"
            )
        for r in runs:
            print(
                f"run {r.id}  {r.started_at.isoformat(timespec='seconds')}  {r.outcome}"
                f"  {r.partitions} partitions  {r.rows:,} events  {r.bytes:,} bytes"
                + (f"  error: {r.error}" if r.error else "")
            )
        return 0

    try:
        return asyncio.run(work())
    except DRIVER_ERRORS as exc:
        print(f"error: the database failed: {exc}", file=sys.stderr, flush=True)
        return 3
