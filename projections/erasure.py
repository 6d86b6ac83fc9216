"""Erase one person's phone number from everything acklog keeps (GDPR art. 17;
docs/erasure.md).

1. Find, without a lock, the events and feed events that name the number in any spelling
   (``projections.phones``): a scan of the log and the feed.
2. In one transaction holding ``locks.ERASURE`` (so no feed batch derived from an old body
   is in flight): open the audit record (``eventstore.erasure.begin``), mask those events and
   any appended since the scan (the trigger allows it and records position and SHA-256),
   mask the feed's rows (``projections.feed.erasure``), write one ``subject.erased`` feed
   event per channel touched (no personal data: which positions and feed events were masked,
   so subscribers erase it too), count.
3. With an archive store (``ACKLOG_ARCHIVE_URL``), rewrite every archive that holds the
   number (``eventstore.archive.erase_archives``: new file, verified, then the manifest
   switched), one erasure at a time (``locks.RETENTION``). A store that fails does
   not undo steps 1-2: the record says ``archives_pending`` and an erasure of the same
   number run again finishes it (the log then matches nothing, the archives still do).
4. Rebuild the read models from the masked log (``projections.rebuild``), and from the
   masked archives (what retention dropped from the log) once step 3 is done: every ``rm``
   row is a function of the log, so folding the masked bodies is the one complete way to
   mask them, including message keys that embed the number, and ``verify`` holds by
   construction. Later rebuilds fold the same masked bodies, so nothing comes back. An
   erasure whose rebuild did not finish (a crash) is rebuilt by the next erasure.

An erasure that matches nothing is recorded too (who asked, when) and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import msgspec

from eventstore import archive, locks
from eventstore import erasure as log_erasure
from eventstore.archive_store import ArchiveStore, ArchiveStoreError
from eventstore.pool import connect
from projections import rebuild as rebuilding
from projections.clock import utcnow
from projections.feed import erasure as feed_erasure
from projections.phones import InvalidPhone, Spellings, parse
from projections.readmodel import schema

__all__ = ["Erased", "InvalidPhone", "erase", "parse"]

#: how long an erasure waits for another rebuild or verify to finish before its own rebuild
REBUILD_WAIT = 600.0


class Erased(msgspec.Struct, frozen=True, kw_only=True):
    """What one erasure did: the audit record (``type`` ``subject.erased``), no personal data."""

    type: str = "subject.erased"
    id: int
    requested_by: str
    #: False: the number was found nowhere (nothing was changed)
    matched: bool
    events: int
    feed_events: int
    feed_rows: int
    #: ``subject.erased`` feed events written (one per channel touched), for subscribers
    notices: int
    positions: list[int]
    body_sha256: list[str]
    #: the read models were rebuilt from the masked log up to this position (None: no need)
    rebuilt_to: int | None
    #: ``done``: every archive was read and those holding the number rewritten; ``pending``:
    #: the archive store failed, archives may still hold it (run the erasure again);
    #: ``none``: no archive store is configured
    archives: str = "none"
    archives_scanned: int | None = None
    archives_rewritten: int = 0
    #: why the archives are pending (one line naming the store, never the number)
    archives_error: str | None = None


async def erase(
    dsn: str,
    number: Spellings | str,
    requested_by: str,
    *,
    workers: int | None = None,
    archive_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Erased:
    """Erase ``number`` (a :class:`Spellings`, or what a user typed: :class:`InvalidPhone`),
    from the archives at ``archive_url`` too; ``progress`` is told each archive's steps."""
    spellings = parse(number) if isinstance(number, str) else number
    mask = spellings.mask
    conn = await connect(dsn)
    try:
        positions, scanned = await log_erasure.find(conn, mask)
        seqs, seq_scanned = await feed_erasure.find_events(conn, mask)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.ERASURE)
            erasure = await log_erasure.begin(conn, requested_by)
            later, _ = await log_erasure.find(conn, mask, after=scanned)
            changed = await log_erasure.redact(conn, mask, positions + later)
            masked, feed_rows = await feed_erasure.scrub(conn, mask, seqs, after=seq_scanned)
            by_channel: dict[str, tuple[str, list[int]]] = {}
            for c in changed:
                by_channel.setdefault(c.channel, (c.provider, []))[1].append(c.position)
            notices = await feed_erasure.announce(conn, erasure, by_channel, masked, utcnow())
            feed_events = len(masked)
            await log_erasure.finish(
                conn, erasure, events=len(changed), feed_events=feed_events, feed_rows=feed_rows
            )
        archives, error = "none", None
        if archive_url:
            archives, error = await _archives(conn, archive_url, mask, erasure, progress)
        rebuilt_to = None
        # this erasure's, and any earlier one's whose rebuild did not finish (a crash); after
        # the archives, so the rebuild folds what retention archived too, once it is masked
        # (while the archives are pending it folds the log alone: the retry rebuilds again)
        pending = await log_erasure.pending(conn)
        if pending:
            masked_archives = ArchiveStore(archive_url) if archive_url and not error else None
            rebuilt_to = await _rebuild(dsn, workers, masked_archives)
            for done in pending:
                await log_erasure.rebuilt(conn, done, rebuilt_to)
        audit = await log_erasure.get(conn, erasure)
        assert audit is not None
    finally:
        await conn.close()
    return Erased(
        id=audit.id,
        requested_by=audit.requested_by,
        matched=bool(changed or feed_events or feed_rows or audit.archives_rewritten),
        events=audit.events,
        feed_events=audit.feed_events,
        feed_rows=audit.feed_rows,
        notices=notices,
        positions=audit.positions,
        body_sha256=audit.body_sha256,
        rebuilt_to=rebuilt_to,
        archives=archives,
        archives_scanned=audit.archives_scanned,
        archives_rewritten=audit.archives_rewritten,
        archives_error=error,
    )


async def _archives(
    conn: asyncpg.Connection,
    url: str,
    mask: archive.Mask,
    erasure: int,
    progress: Callable[[str], None] | None,
) -> tuple[str, str | None]:
    """Rewrite the archives that hold the number, one erasure at a time; record the counts.
    ``("done", None)``, or ``("pending", why)`` when the store failed or an archive is
    corrupt (what was rewritten before stays rewritten: each archive switches whole)."""
    await conn.execute("SELECT pg_advisory_lock($1)", locks.RETENTION)
    try:
        try:
            store = ArchiveStore(url)
        except ArchiveStoreError as exc:
            done = archive.Rewritten(scanned=0, rewritten=[], removed=[], error=str(exc))
        else:
            done = await archive.erase_archives(store, mask, erasure, progress)
        await log_erasure.archived(
            conn,
            erasure,
            scanned=done.scanned,
            rewritten=len(done.rewritten),
            pending=done.error is not None,
        )
        return ("done", None) if done.error is None else ("pending", done.error)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", locks.RETENTION)


async def _rebuild(dsn: str, workers: int | None, archives: ArchiveStore | None) -> int:
    """Rebuild, waiting for another rebuild or verify (it holds ``locks.REBUILD``) to end;
    first drop the copies a dead rebuild left behind: they hold the rows as they were."""
    conn = await connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", locks.REBUILD)
        try:
            for name in await schema.leftovers(conn):
                await schema.drop(conn, name)
            await archive.drop_archived_sources(conn)  # a dead rebuild's unmasked copies
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", locks.REBUILD)
    finally:
        await conn.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REBUILD_WAIT
    while True:
        try:
            return await rebuilding.rebuild(dsn, workers=workers, archives=archives)
        except rebuilding.RebuildBusy:
            if loop.time() > deadline:
                raise
            conn = await connect(dsn)
            try:  # wait for the holder's session lock, then try again
                await conn.execute("SELECT pg_advisory_lock($1)", locks.REBUILD)
                await conn.execute("SELECT pg_advisory_unlock($1)", locks.REBUILD)
            finally:
                await conn.close()
