"""The commands on the log and its read models: ``migrate``, ``project``, ``rebuild``, ``verify``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from eventstore.archive import ArchiveError
from eventstore.archive_store import ArchiveStore, ArchiveStoreError
from projections import rebuild as rebuilding
from projections.readmodel.checkpoints import ShardsMismatch
from service.cli.common import settings_of
from service.core.database import database_url, wait_and_migrate
from service.runtime import roles


def migrate(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    asyncio.run(wait_and_migrate(database_url(settings)))
    print("migrations applied")
    return 0


def _progress(label: str) -> Callable[[rebuilding.Progress], None] | None:
    """Progress on a terminal only (events done, rate, time left); silent in pipes and CI."""
    if not sys.stderr.isatty():
        return None

    def show(p: rebuilding.Progress) -> None:
        eta = f"{p.eta_seconds:.0f}s left" if p.eta_seconds is not None else ""
        print(
            f"\r{label}: {p.done:,}/{p.total:,} events, {p.rate:,.0f}/s, {eta}   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return show


def _db_command(args: argparse.Namespace, body: Callable[[str], Awaitable[int]]) -> int:
    """Run ``body(dsn)`` once the database is up and migrated; Ctrl-C and a busy rebuild
    lock end the command with a clear exit code instead of a traceback."""
    dsn = database_url(settings_of(args))

    async def run() -> int:
        await wait_and_migrate(dsn)
        return await body(dsn)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    except rebuilding.RebuildBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ArchiveError, ArchiveStoreError) as exc:  # ACKLOG_ARCHIVE_URL: nothing swapped in
        print(f"error: the archives could not be read, nothing rebuilt: {exc}", file=sys.stderr)
        return 3


def project(args: argparse.Namespace) -> int:
    """Run only the projector (leader, or standby while another one leads)."""

    settings = settings_of(args)
    roles.check_shard(settings, args.shard)

    async def body(dsn: str) -> int:
        await roles.claim_shards(settings, dsn)
        await roles.projectors(settings, dsn, args.shard)
        return 0

    try:
        return _db_command(args, body)
    except ShardsMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def rebuild(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    workers = settings.rebuild_workers or None
    # what retention archived is folded too (archived + live) when the store is set
    archives = ArchiveStore(settings.archive_url) if settings.archive_url else None

    shards = args.shards
    if shards is not None and not 1 <= shards <= 64:
        raise SystemExit("--shards must be between 1 and 64")

    async def body(dsn: str) -> int:
        started = time.monotonic()
        position = await rebuilding.rebuild(
            dsn, progress=_progress("rebuild"), workers=workers, archives=archives, shards=shards
        )
        took = time.monotonic() - started
        print(f"\nrebuilt the read models up to position {position} in {took:.1f}s; swapped in")
        if shards is not None:
            print(
                f"recorded {shards} projection shard(s): run the projectors with"
                f" ACKLOG_PROJECTOR_SHARDS={shards} (others stop saying so)"
            )
        return 0

    return _db_command(args, body)


def verify(args: argparse.Namespace) -> int:
    workers = settings_of(args).rebuild_workers or None

    async def body(dsn: str) -> int:
        diffs = await rebuilding.verify(dsn, progress=_progress("verify"), workers=workers)
        if not diffs:
            print("\nverify: the live read models equal a rebuild from the log")
            return 0
        print("\nverify: the live read models differ from a rebuild from the log:")
        for d in diffs:
            print(f"  {d.table}: {d.only_live} rows only live, {d.only_rebuilt} only rebuilt")
            for example in d.examples:
                print(f"    e.g. {example}")
        return 1

    return _db_command(args, body)
