"""``acklog archive create | list | verify | restore``: archives of the log in Parquet, in a
directory or an S3-compatible object store (``ACKLOG_ARCHIVE_URL``; see docs/archives.md).

Exit codes: 0 done; 1 an archive is corrupt (``verify``, ``restore``); 2 something to fix
(no ``ACKLOG_ARCHIVE_URL``, no such archive, an empty or open range); 3 the store or the
database cannot be reached or refused the write (nothing is claimed archived then).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

import asyncpg

from eventstore.archive_store import ArchiveStore, ArchiveStoreError
from eventstore.errors import DRIVER_ERRORS
from service.cli.common import settings_of
from service.core.database import connect_waiting, database_url, where

if TYPE_CHECKING:
    from eventstore.archive import Manifest


class _Usage(Exception):
    """What the operator must fix (exit 2)."""


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ar = sub.add_parser(
        "archive",
        help="archives of the log in Parquet (create, list, verify, restore) at ACKLOG_ARCHIVE_URL",
        description="Archives of the log: one Parquet file and a manifest per range of"
        " positions, in the directory or S3-compatible object store ACKLOG_ARCHIVE_URL names"
        " (file:///path or s3://bucket/prefix). See docs/archives.md.",
    )
    acts = ar.add_subparsers(dest="action", required=True, metavar="ACTION")
    cr = acts.add_parser("create", help="archive the events with positions FROM..TO")
    cr.add_argument("--from", dest="first", type=int, required=True, metavar="FROM")
    cr.add_argument("--to", dest="last", type=int, required=True, metavar="TO")
    cr.set_defaults(fn=create)
    acts.add_parser("list", help="the archives, their ranges, times and sizes").set_defaults(
        fn=list_archives
    )
    vf = acts.add_parser(
        "verify", help="read archives back whole and check them (exit 1 naming a corrupt file)"
    )
    vf.add_argument("name", nargs="?", metavar="NAME", help="one archive (default: all)")
    vf.set_defaults(fn=verify)
    rs = acts.add_parser(
        "restore",
        help="put archived events back, with their positions, into DATABASE_URL's log",
        description="Verify, then insert the archive's events with their own positions, byte"
        " for byte, into the database DATABASE_URL names (migrated: `acklog migrate` first on"
        " a new one). Positions already in the log are skipped, so it can be run again. Then"
        " `acklog rebuild` folds them into the read models.",
    )
    which = rs.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?", metavar="NAME", help="the archive to restore")
    which.add_argument("--all", action="store_true", help="every archive, in position order")
    rs.set_defaults(fn=restore)


def _store(args: argparse.Namespace) -> ArchiveStore:
    url = settings_of(args).archive_url
    if not url:
        raise _Usage(
            "ACKLOG_ARCHIVE_URL is not set: set it to file:///absolute/path or s3://bucket/prefix"
        )
    return ArchiveStore(url)


def _run(
    args: argparse.Namespace, work: Callable[[ArchiveStore], Coroutine[None, None, int]]
) -> int:
    from eventstore.archive import ArchiveCorrupt, ArchiveError

    try:
        return asyncio.run(work(_store(args)))
    except ArchiveCorrupt as exc:
        print(f"error: corrupt archive {exc}", file=sys.stderr, flush=True)
        return 1
    except (_Usage, ArchiveError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except ArchiveStoreError as exc:
        print(f"error: {exc}; nothing was archived or changed", file=sys.stderr, flush=True)
        return 3
    except DRIVER_ERRORS as exc:
        # connect_waiting reports an unreachable database itself (main: exit 3)
        print(f"error: the database failed: {exc}", file=sys.stderr, flush=True)
        return 3


async def _connect(args: argparse.Namespace) -> asyncpg.Connection:
    from eventstore.pool import init_connection

    conn = await connect_waiting(database_url(settings_of(args)))
    await init_connection(conn)
    return conn


def _describe(m: Manifest) -> str:
    first = m.first_received_at.isoformat(timespec="seconds")
    last = m.last_received_at.isoformat(timespec="seconds")
    return (
        f"{m.name}  positions {m.first_position}..{m.last_position}  {m.rows:,} events"
        f"  {first} .. {last}  {m.bytes:,} bytes"
        + (f"  rewritten by erasure {', '.join(map(str, m.erasure_ids))}" if m.erasure_ids else "")
    )


def create(args: argparse.Namespace) -> int:
    from eventstore.archive import archive_range

    async def work(store: ArchiveStore) -> int:
        conn = await _connect(args)
        try:
            started = time.monotonic()
            manifest = await archive_range(conn, store, args.first, args.last)
            took = time.monotonic() - started
        finally:
            await conn.close()
        print(
            f"archived {manifest.rows:,} events, positions {manifest.first_position}"
            f"..{manifest.last_position}, to {store.url}/{manifest.key} ({manifest.bytes:,}"
            f" bytes, {manifest.rows / max(took, 1e-6):,.0f} events/s)",
            flush=True,
        )
        return 0

    return _run(args, work)


def list_archives(args: argparse.Namespace) -> int:
    from eventstore.archive import listing

    async def work(store: ArchiveStore) -> int:
        found = await listing(store)
        for m in found.archives:
            print(_describe(m))
        for key in found.unclaimed:
            print(f"{key}  incomplete: no manifest claims it (a write that did not finish)")
        rows = sum(m.rows for m in found.archives)
        print(f"{len(found.archives)} archives, {rows:,} events in {store.url}", flush=True)
        return 0

    return _run(args, work)


def verify(args: argparse.Namespace) -> int:
    from eventstore.archive import ArchiveCorrupt, listing, manifest_of
    from eventstore.archive import verify as verify_archive

    async def work(store: ArchiveStore) -> int:
        if args.name:
            manifests = [await manifest_of(store, args.name)]
        else:
            manifests = (await listing(store)).archives
        bad = 0
        for m in manifests:
            try:
                await verify_archive(store, m)
            except ArchiveCorrupt as exc:
                print(f"CORRUPT {exc}", flush=True)
                bad += 1
            else:
                print(f"ok {m.key}: {m.rows:,} events, every body's SHA-256 checked", flush=True)
        if bad:
            print(f"error: {bad} of {len(manifests)} archives corrupt", file=sys.stderr, flush=True)
            return 1
        print(f"{len(manifests)} archives verified in {store.url}", flush=True)
        return 0

    return _run(args, work)


def restore(args: argparse.Namespace) -> int:
    from eventstore.archive import listing, manifest_of
    from eventstore.archive import restore as restore_archive

    async def work(store: ArchiveStore) -> int:
        if args.all:
            manifests = (await listing(store)).archives
        else:
            manifests = [await manifest_of(store, args.name)]
        dsn = database_url(settings_of(args))
        conn = await _connect(args)
        try:
            if not await conn.fetchval("SELECT to_regclass('public.events') IS NOT NULL"):
                raise _Usage(f"{where(dsn)} has no events table: run `acklog migrate` first")
            total = 0
            for m in manifests:
                started = time.monotonic()
                done = await restore_archive(conn, store, m)
                took = time.monotonic() - started
                total += done.inserted
                print(
                    f"restored {m.name}: {done.inserted:,} events inserted, {done.present:,}"
                    f" already in the log ({m.rows / max(took, 1e-6):,.0f} events/s)",
                    flush=True,
                )
        finally:
            await conn.close()
        print(
            f"{total:,} events restored into {where(dsn)}. Next: `acklog rebuild` folds them"
            " into the read models",
            flush=True,
        )
        return 0

    return _run(args, work)
