"""Archives of the log: a range of positions as one Parquet file and its manifest.

An archive named ``events-<from>-<to>`` holds every event with ``from <= position <= to``
(the range was at or below the log's head when it was written, so no later commit can add
one to it: invariant 3). It is two objects in the archive store::

    events-<from>-<to>/events-<from>-<to>.parquet   the rows, one typed column each
    events-<from>-<to>/manifest.json                 what the file must be (written last)

The Parquet file has the log's columns (``received_at`` as a UTC microsecond timestamp,
``headers`` as the JSON text PostgreSQL prints for the jsonb, ``body`` as binary) plus
``body_sha256``; rows are in position order, in row groups of at most ``GROUP_ROWS`` rows
or ``GROUP_BYTES`` of bodies, so writing, verifying and restoring a range of any size keeps
memory flat, and a paced archive's CPU (hashing, Arrow arrays, compression) comes in pieces
of a few tens of milliseconds spread over the paced read, not in one burst per file. The
manifest is written only after the file is stored whole: an archive is claimed only by its
manifest, so a store that fails or fills up, or a kill mid-write, never leaves something
that looks complete (at most a file without a manifest, which ``list`` reports as
incomplete and ``verify`` as unclaimed).

``verify`` re-reads the file and checks its size and SHA-256, its schema, the row count,
every body against its ``body_sha256`` and the digest over all of them in the manifest,
and that positions ascend within the range. ``restore`` verifies first, then inserts the
rows with their own positions in one transaction, skipping positions already in the log,
and moves the position sequence past them.

Nothing here knows HTTP or the service: pyarrow, asyncpg and the store only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from aiolimiter import AsyncLimiter

from eventstore import partitions
from eventstore.archive_store import ArchiveNotFound, ArchiveStore, ArchiveStoreError

FORMAT = "acklog-events-archive"
VERSION = 1
MANIFEST = "manifest.json"
#: a row group closes at this many rows or this many bytes of bodies, whichever comes first
#: (one row group of 50,000 rows cost ~0.8 s of CPU at its end: bench lifecycle saw ingest
#: beside a paced retention run halve for that second, SCHED_IDLE or not)
GROUP_ROWS = 5_000
GROUP_BYTES = 8 * 1024 * 1024
#: rows fetched from PostgreSQL per round trip
FETCH_ROWS = 2_000
#: a paced archive takes this many rows at a time from its pace
PACE_ROWS = 500
#: rows inserted per COPY when restoring
RESTORE_ROWS = 10_000

SCHEMA = pa.schema(
    [
        pa.field("position", pa.int64(), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("provider", pa.string(), nullable=False),
        pa.field("content_type", pa.string(), nullable=True),
        pa.field("headers", pa.string(), nullable=False),
        pa.field("body", pa.large_binary(), nullable=False),
        pa.field("dedup_key", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.int64(), nullable=True),
        pa.field("body_sha256", pa.binary(32), nullable=False),
    ],
    metadata={b"acklog.format": FORMAT.encode(), b"acklog.version": str(VERSION).encode()},
)
_NAME = re.compile(r"^events-(\d+)-(\d+)$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class ArchiveError(Exception):
    """Something the operator must fix or know, in one line (an empty range, a name taken)."""


class ArchiveCorrupt(ArchiveError):
    """A stored archive is not what its manifest says (``file`` names it)."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = file


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What an archive holds and how to check it (``manifest.json``)."""

    format: str = FORMAT
    version: int = VERSION
    name: str
    #: the Parquet file, relative to the manifest
    file: str
    #: the range archived: every event with from_position <= position <= to_position
    from_position: int
    to_position: int
    #: the positions and receipt times of its first and last rows
    first_position: int
    last_position: int
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    rows: int
    #: the Parquet file's size in bytes and SHA-256 (hex)
    bytes: int
    file_sha256: str
    #: SHA-256 over every row's (position as 8 bytes big-endian, SHA-256 of its body), in order
    bodies_sha256: str
    created_at: dt.datetime
    #: the body SHA-256 of every row is the file's ``body_sha256`` column
    columns: tuple[str, ...] = tuple(SCHEMA.names)
    #: the erasures that rewrote this archive (masked bodies, a new file), oldest first
    erasure_ids: tuple[int, ...] = ()
    #: when the last of them rewrote it (None: as created)
    rewritten_at: dt.datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.name}/{self.file}"


class Listing(msgspec.Struct, frozen=True, kw_only=True):
    """The archives of a store, and files no manifest claims (a write that did not finish)."""

    archives: list[Manifest]
    unclaimed: list[str]


def name_of(first: int, last: int) -> str:
    return f"events-{first}-{last}"


def _micros(when: dt.datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class _Digest:
    """The running ``bodies_sha256`` and the checks on position order."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.rows = 0
        self.first = self.last = -1

    def add(self, position: int, body_sha: bytes) -> None:
        self.sha.update(position.to_bytes(8, "big", signed=True) + body_sha)
        if not self.rows:
            self.first = position
        self.rows += 1
        self.last = position


def _batch(rows: list[asyncpg.Record], digest: _Digest) -> pa.RecordBatch:
    shas = []
    for r in rows:
        sha = hashlib.sha256(r["body"]).digest()
        digest.add(r["position"], sha)
        shas.append(sha)
    columns: list[pa.Array] = [
        pa.array([r["position"] for r in rows], pa.int64()),
        pa.array([r["us"] for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        pa.array([r["channel"] for r in rows], pa.string()),
        pa.array([r["provider"] for r in rows], pa.string()),
        pa.array([r["content_type"] for r in rows], pa.string()),
        pa.array([r["headers"] for r in rows], pa.string()),
        pa.array([r["body"] for r in rows], pa.large_binary()),
        pa.array([r["dedup_key"] for r in rows], pa.string()),
        pa.array([r["duplicate_of"] for r in rows], pa.int64()),
        pa.array(shas, pa.binary(32)),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


#: headers as the text PostgreSQL prints for the jsonb (restored by ``::jsonb``, the same
#: value); the time as exact microseconds since the epoch
_SELECT = """
SELECT position, (extract(epoch FROM received_at) * 1000000)::bigint AS us, channel, provider,
       content_type, headers::text AS headers, body, dedup_key, duplicate_of
FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position
"""


async def paced(pace: AsyncLimiter, n: int) -> None:
    """Take ``n`` events from ``pace`` (in pieces no larger than its rate)."""
    while n > 0:
        take = min(n, pace.max_rate)
        await pace.acquire(take)
        n -= int(take)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    """A private temporary file path, removed afterwards."""
    fd, name = tempfile.mkstemp(prefix=f"acklog-{prefix}-", suffix=".parquet")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


async def head(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))


async def archive_range(
    conn: asyncpg.Connection,
    store: ArchiveStore,
    first: int,
    last: int,
    *,
    pace: AsyncLimiter | None = None,
) -> Manifest:
    """Archive every event with ``first <= position <= last`` to ``store``: the Parquet file
    (streamed from one snapshot, row group by row group), then its manifest. ``pace``: rows
    read from PostgreSQL are taken from it (events per second), so a paced archive costs the
    database, and whatever else runs on it, no more than that rate's share."""
    if first < 1 or last < first:
        raise ArchiveError(f"no range {first}..{last}: --from must be >= 1 and <= --to")
    name = name_of(first, last)
    with contextlib.suppress(ArchiveNotFound):
        await store.get(f"{name}/{MANIFEST}")
        raise ArchiveError(f"archive {name} exists already in {store.url}")
    with _scratch(name) as path:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            top = await head(conn)
            if last > top:
                raise ArchiveError(
                    f"position {last} is past the log's head ({top}): a later commit could"
                    f" still land in {first}..{last}; archive up to {top} at most"
                )
            digest = _Digest()
            first_us = last_us = 0
            writer = pq.ParquetWriter(
                path, SCHEMA, compression="zstd", write_statistics=True, store_schema=True
            )
            try:
                group: list[asyncpg.Record] = []
                group_bytes = 0
                cursor = conn.cursor(_SELECT, first, last, prefetch=FETCH_ROWS)
                read = 0
                async for row in cursor:
                    read += 1
                    if pace is not None and read % PACE_ROWS == 0:
                        await paced(pace, PACE_ROWS)
                    if digest.rows == 0 and not group:
                        first_us = row["us"]
                    last_us = row["us"]
                    group.append(row)
                    group_bytes += len(row["body"])
                    if len(group) >= GROUP_ROWS or group_bytes >= GROUP_BYTES:
                        writer.write_batch(_batch(group, digest))
                        group, group_bytes = [], 0
                if group:
                    writer.write_batch(_batch(group, digest))
            finally:
                writer.close()
        if digest.rows == 0:
            raise ArchiveError(f"no events with positions {first}..{last}: nothing archived")
        with path.open("rb") as f:
            os.fsync(f.fileno())
        manifest = Manifest(
            name=name,
            file=f"{name}.parquet",
            from_position=first,
            to_position=last,
            first_position=digest.first,
            last_position=digest.last,
            first_received_at=_EPOCH + dt.timedelta(microseconds=first_us),
            last_received_at=_EPOCH + dt.timedelta(microseconds=last_us),
            rows=digest.rows,
            bytes=path.stat().st_size,
            file_sha256=_sha256_file(path),
            bodies_sha256=digest.sha.hexdigest(),
            created_at=dt.datetime.now(dt.UTC),
        )
        await store.put(manifest.key, path)
    # the commit point: an archive exists once its manifest does
    await store.put(f"{name}/{MANIFEST}", msgspec.json.format(msgspec.json.encode(manifest)))
    return manifest


def decode_manifest(data: bytes, key: str) -> Manifest:
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ArchiveCorrupt(key, f"not an acklog archive manifest ({exc})") from None
    if manifest.format != FORMAT or manifest.version > VERSION:
        raise ArchiveCorrupt(
            key, f"format {manifest.format} v{manifest.version}: this acklog reads {FORMAT} v1"
        )
    return manifest


async def listing(store: ArchiveStore) -> Listing:
    """Every archive of ``store`` (by first position) and the files no manifest claims."""
    keys = [k for k, _ in await store.list()]
    manifests: list[Manifest] = []
    claimed: set[str] = set()
    for key in keys:
        directory, _, base = key.rpartition("/")
        if base != MANIFEST or not _NAME.match(directory):
            continue
        manifest = decode_manifest(await store.get(key), key)
        manifests.append(manifest)
        claimed |= {key, manifest.key}
    unclaimed = [k for k in keys if k not in claimed and _NAME.match(k.partition("/")[0])]
    manifests.sort(key=lambda m: (m.from_position, m.to_position))
    return Listing(archives=manifests, unclaimed=unclaimed)


async def manifest_of(store: ArchiveStore, name: str) -> Manifest:
    """The manifest of archive ``name`` (``events-1-100``, or a key under it)."""
    name = name.strip("/").partition("/")[0].removesuffix(".parquet")
    if not _NAME.match(name):
        raise ArchiveError(f"{name!r} is not an archive name (events-<from>-<to>)")
    key = f"{name}/{MANIFEST}"
    try:
        data = await store.get(key)
    except ArchiveNotFound:
        raise ArchiveError(
            f"no archive {name} in {store.url} (see `acklog archive list`)"
        ) from None
    return decode_manifest(data, key)


#: files are read column chunk by column chunk (pyarrow's pre-buffering held whole row
#: groups: 85 MiB of Arrow memory instead of 16 reading 1M small events)
def _read_batches(path: Path, manifest: Manifest) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches, checked against the manifest as they go (``ArchiveCorrupt``
    at the first difference)."""
    file = manifest.key
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)
        if not parquet.schema_arrow.remove_metadata().equals(SCHEMA.remove_metadata()):
            raise ArchiveCorrupt(file, f"columns differ from format v{VERSION}")
        if parquet.metadata.num_rows != manifest.rows:
            raise ArchiveCorrupt(
                file, f"{parquet.metadata.num_rows} rows, the manifest says {manifest.rows}"
            )
        digest = _Digest()
        last_us = first_us = None
        for batch in parquet.iter_batches(batch_size=RESTORE_ROWS):
            positions = batch.column(0).to_pylist()
            bodies = batch.column(6)
            shas = batch.column(9).to_pylist()
            for i, position in enumerate(positions):
                if position <= digest.last:
                    raise ArchiveCorrupt(file, f"position {position} after {digest.last}")
                if not manifest.from_position <= position <= manifest.to_position:
                    raise ArchiveCorrupt(
                        file,
                        f"position {position} outside {manifest.from_position}"
                        f"..{manifest.to_position}",
                    )
                body = bodies[i].as_buffer()
                actual = hashlib.sha256(body if body is not None else b"").digest()
                if actual != shas[i]:
                    raise ArchiveCorrupt(file, f"the body at position {position} changed")
                digest.add(position, actual)
            times = batch.column(1).cast(pa.int64())
            if len(times):
                if first_us is None:
                    first_us = times[0].as_py()
                last_us = times[-1].as_py()
            yield batch
    except (pa.ArrowException, OSError) as exc:
        raise ArchiveCorrupt(file, f"unreadable Parquet ({' '.join(str(exc).split())})") from None
    expected = (
        manifest.rows,
        manifest.first_position,
        manifest.last_position,
        _micros(manifest.first_received_at),
        _micros(manifest.last_received_at),
        manifest.bodies_sha256,
    )
    got = (digest.rows, digest.first, digest.last, first_us, last_us, digest.sha.hexdigest())
    if got != expected:
        raise ArchiveCorrupt(file, "rows, positions, times or bodies differ from the manifest's")


@contextlib.asynccontextmanager
async def _fetched(store: ArchiveStore, manifest: Manifest) -> AsyncIterator[Path]:
    """The archive's file, downloaded to a scratch file and checked by size and SHA-256."""
    with _scratch(manifest.name) as path:
        try:
            size = await store.get_file(manifest.key, path)
        except ArchiveNotFound:
            raise ArchiveCorrupt(manifest.key, "missing (the manifest names it)") from None
        if size != manifest.bytes:
            raise ArchiveCorrupt(
                manifest.key,
                f"{size:,} bytes, the manifest says {manifest.bytes:,}"
                f" ({'truncated' if size < manifest.bytes else 'grown'})",
            )
        sha = _sha256_file(path)
        if sha != manifest.file_sha256:
            raise ArchiveCorrupt(
                manifest.key, f"SHA-256 {sha[:16]}…, the manifest says {manifest.file_sha256[:16]}…"
            )
        yield path


async def verify(
    store: ArchiveStore, manifest: Manifest, *, pace: AsyncLimiter | None = None
) -> None:
    """Read the archive back whole; ``ArchiveCorrupt`` naming its file when anything differs.
    ``pace``: rows checked are taken from it (rows per second), so a paced verify's CPU is
    spread like a paced archive's."""
    async with _fetched(store, manifest) as path:
        for batch in _read_batches(path, manifest):
            if pace is not None:
                await paced(pace, batch.num_rows)


async def load_below(
    conn: asyncpg.Connection, store: ArchiveStore, schema: str, table: str, below: int
) -> int:
    """Copy every archived event with a position under ``below`` (the log's oldest position
    kept) into ``schema.table`` (the log's columns), each file verified on the way: what a
    rebuild folds before the live log once retention dropped those positions. Returns the
    number of events copied."""
    copied = 0
    for manifest in (await listing(store)).archives:
        if manifest.first_position >= below:
            continue
        async with _fetched(store, manifest) as path:
            for batch in _read_batches(path, manifest):
                rows = [r for r in _records(batch) if r[0] < below]
                await conn.copy_records_to_table(table, schema_name=schema, records=rows)
                copied += len(rows)
    return copied


#: the schema of an archived source (``archived_source``): the archived events and a view
#: named ``events`` over them and the log, which a rebuild puts first on its search path
SOURCE_PREFIX = "acklog_src_"


async def archived_source(conn: asyncpg.Connection, store: ArchiveStore, below: int) -> str:
    """A schema holding every archived event under ``below`` (``load_below``) and a view
    ``events`` over them and the log: with that schema first on a connection's search path,
    every read of the log (``eventstore.read``) reads the archived positions too. For a
    rebuild once retention dropped them; drop it with :func:`drop_archived_source`."""
    schema = f"{SOURCE_PREFIX}{os.getpid()}"
    log_schema = await conn.fetchval(
        "SELECT quote_ident(n.nspname) FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE c.oid = 'events'::regclass"
    )
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(
        f"""CREATE UNLOGGED TABLE "{schema}".archived (
                position bigint PRIMARY KEY, received_at timestamptz NOT NULL,
                channel text NOT NULL, provider text NOT NULL, content_type text,
                headers text NOT NULL, body bytea NOT NULL, dedup_key text NOT NULL,
                duplicate_of bigint)"""
    )
    await load_below(conn, store, schema, "archived", below)
    await conn.execute(f'CREATE INDEX ON "{schema}".archived (channel, position)')
    await conn.execute(f'ANALYZE "{schema}".archived')
    columns = "position, received_at, channel, provider, content_type, {h}, body, dedup_key,"
    columns += " duplicate_of"
    await conn.execute(
        f"""CREATE VIEW "{schema}".events AS
                SELECT {columns.format(h="headers::jsonb AS headers")} FROM "{schema}".archived
                UNION ALL
                SELECT {columns.format(h="headers")} FROM {log_schema}.events"""
    )
    return schema


async def drop_archived_source(conn: asyncpg.Connection, schema: str) -> None:
    if not schema.startswith(SOURCE_PREFIX) or not schema[len(SOURCE_PREFIX) :].isdigit():
        raise ValueError(f"{schema!r} is not an archived source")
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def drop_archived_sources(conn: asyncpg.Connection) -> list[str]:
    """Drop every archived source a rebuild left behind (killed before its own drop): they
    hold archived bodies as they were, which an erasure must not leave. Only under
    ``locks.REBUILD``, which every rebuild holds while its source exists."""
    names = [
        r["nspname"]
        for r in await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", SOURCE_PREFIX
        )
    ]
    for name in names:
        await drop_archived_source(conn, name)
    return names


class Restored(msgspec.Struct, frozen=True):
    inserted: int
    present: int


def _records(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    cols = [batch.column(i).to_pylist() for i in range(9)]
    return list(zip(*cols, strict=True))


async def restore(conn: asyncpg.Connection, store: ArchiveStore, manifest: Manifest) -> Restored:
    """Put the archive's events back with their positions, byte for byte, in one transaction:
    positions already in the log are skipped (so a restore can be run again), one holding a
    different event stops it (nothing changes). The file is verified first."""
    async with _fetched(store, manifest) as path:
        for _ in _read_batches(path, manifest):
            pass
        async with conn.transaction():
            await conn.execute(
                """CREATE TEMP TABLE acklog_restore (
                    position bigint, received_at timestamptz, channel text, provider text,
                    content_type text, headers text, body bytea, dedup_key text,
                    duplicate_of bigint) ON COMMIT DROP"""
            )
            parquet = pq.ParquetFile(path, pre_buffer=False)
            for batch in parquet.iter_batches(batch_size=RESTORE_ROWS):
                await conn.copy_records_to_table("acklog_restore", records=_records(batch))
            # a range retention dropped has no partition any more: one is made for it
            await partitions.cover(conn, manifest.first_position, manifest.last_position)
            differ = await conn.fetchval(
                """SELECT min(a.position) FROM acklog_restore a JOIN events e USING (position)
                   WHERE (e.received_at, e.channel, e.provider, e.content_type, e.headers,
                          e.body, e.dedup_key, e.duplicate_of)
                   IS DISTINCT FROM (a.received_at, a.channel, a.provider, a.content_type,
                          a.headers::jsonb, a.body, a.dedup_key, a.duplicate_of)"""
            )
            if differ is not None:
                raise ArchiveError(
                    f"position {differ} of the log holds another event than {manifest.name}"
                    " has: nothing restored"
                )
            status = await conn.execute(
                """INSERT INTO events (position, received_at, channel, provider, content_type,
                                       headers, body, dedup_key, duplicate_of)
                   SELECT position, received_at, channel, provider, content_type,
                          headers::jsonb, body, dedup_key, duplicate_of
                   FROM acklog_restore ORDER BY position
                   ON CONFLICT (position) DO NOTHING"""
            )
            inserted = int(status.rsplit(" ", 1)[1])
            # later appends draw positions past the restored ones (the insert above holds
            # the append lock until commit, so no append draws one meanwhile)
            await conn.execute(
                """SELECT setval(s, $1) FROM (
                       SELECT pg_get_serial_sequence('events', 'position')::regclass AS s) q
                   WHERE coalesce(pg_sequence_last_value(s), 0) < $1""",
                manifest.last_position,
            )
    return Restored(inserted=inserted, present=manifest.rows - inserted)


# --- erasure: rewriting archives with masked bodies (docs/archives.md#erasure) ---------------

#: a function of bytes that returns its argument unchanged when there is nothing to erase
Mask = Callable[[bytes], bytes]


class Rewritten(msgspec.Struct, frozen=True, kw_only=True):
    """What one erasure did to a store's archives (no personal data)."""

    #: archives read and checked
    scanned: int
    #: archives that held a match and now hold a rewritten file and manifest
    rewritten: list[str]
    #: files no manifest claims any more, left by an earlier rewrite that was cut, removed
    removed: list[str]
    #: why the pass stopped before the end (the store failed, an archive is corrupt)
    error: str | None = None


def _masked_batch(batch: pa.RecordBatch, mask: Mask) -> tuple[pa.RecordBatch, bool]:
    """``batch`` with ``headers``, ``body`` and ``dedup_key`` masked and ``body_sha256``
    recomputed; and whether anything changed."""
    headers = batch.column(5).to_pylist()
    bodies = batch.column(6).to_pylist()
    keys = batch.column(7).to_pylist()
    new_headers = [mask(h.encode()).decode() for h in headers]
    new_bodies = [mask(b) for b in bodies]
    new_keys = [mask(k.encode()).decode() for k in keys]
    changed = new_headers != headers or new_bodies != bodies or new_keys != keys
    if not changed:
        return batch, False
    columns = list(batch.columns)
    columns[5] = pa.array(new_headers, pa.string())
    columns[6] = pa.array(new_bodies, pa.large_binary())
    columns[7] = pa.array(new_keys, pa.string())
    columns[9] = pa.array([hashlib.sha256(b).digest() for b in new_bodies], pa.binary(32))
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA), True


def _matches(path: Path, manifest: Manifest, mask: Mask) -> bool:
    """Whether ``mask`` changes any row of the (downloaded) file; the file is verified whole
    against its manifest on the way (``ArchiveCorrupt``)."""
    hit = False
    for batch in _read_batches(path, manifest):
        hit = hit or _masked_batch(batch, mask)[1]
    return hit


def _write_masked(source: Path, target: Path, manifest: Manifest, mask: Mask) -> _Digest:
    digest = _Digest()
    parquet = pq.ParquetFile(source, pre_buffer=False)
    writer = pq.ParquetWriter(
        target, SCHEMA, compression="zstd", write_statistics=True, store_schema=True
    )
    try:
        for batch in parquet.iter_batches(batch_size=RESTORE_ROWS):
            masked, _ = _masked_batch(batch, mask)
            for position, sha in zip(
                masked.column(0).to_pylist(), masked.column(9).to_pylist(), strict=True
            ):
                digest.add(position, sha)
            writer.write_batch(masked)
    finally:
        writer.close()
    with target.open("rb") as f:
        os.fsync(f.fileno())
    return digest


async def rewrite(
    store: ArchiveStore,
    manifest: Manifest,
    mask: Mask,
    erasure: int,
    progress: Callable[[str], None] | None = None,
) -> Manifest | None:
    """Rewrite one archive with ``mask`` applied to every row's body, headers and dedup key,
    in erasure ``erasure``'s name; None (and nothing written) when no row changes.

    The old file is downloaded and verified, the masked rows written to a new file under a
    new name (``<name>.e<erasure>.parquet``) with new body hashes, stored and read back whole
    against its new manifest; then the manifest is replaced (the commit point: one PUT, atomic
    on a directory and on S3). A kill at any moment leaves the old
    archive or the new one complete and verifiable; what is left behind is a file no manifest
    claims, which :func:`erase_archives` removes next time. The caller deletes the old file
    (``manifest.key``) once this returns, and serializes rewrites."""
    say = progress or (lambda _: None)
    async with _fetched(store, manifest) as old:
        if not _matches(old, manifest, mask):
            return None
        file = f"{manifest.name}.e{erasure}.parquet"
        say(f"rewriting {manifest.name}: writing {file}")
        with _scratch(f"{manifest.name}-e{erasure}") as path:
            digest = _write_masked(old, path, manifest, mask)
            new = msgspec.structs.replace(
                manifest,
                file=file,
                bytes=path.stat().st_size,
                file_sha256=_sha256_file(path),
                bodies_sha256=digest.sha.hexdigest(),
                erasure_ids=(*manifest.erasure_ids, erasure),
                rewritten_at=dt.datetime.now(dt.UTC),
            )
            await store.put(new.key, path)
    say(f"rewriting {manifest.name}: verifying {file} as stored")
    await verify(store, new)
    say(f"rewriting {manifest.name}: switching {MANIFEST} to {file}")
    await store.put(f"{new.name}/{MANIFEST}", msgspec.json.format(msgspec.json.encode(new)))
    return new


async def erase_archives(
    store: ArchiveStore, mask: Mask, erasure: int, progress: Callable[[str], None] | None = None
) -> Rewritten:
    """Rewrite every archive of ``store`` that ``mask`` changes (:func:`rewrite`), and first
    remove the files an earlier rewrite left unclaimed in an archive's directory (the old
    file when a kill came after the manifest's switch: it still holds what was erased; or a
    new file stored before it). Files of a ``create`` that never wrote its manifest are left
    alone: no rewrite of them can be claimed, and a ``create`` may still be writing them.
    The caller serializes erasures (two rewrites of one archive would each remove the other's
    new file). A store that fails, or an archive found corrupt, stops the pass: ``error``
    says why, and what was rewritten before stays rewritten (each archive switches whole)."""
    scanned = 0
    rewritten: list[str] = []
    removed: list[str] = []
    try:
        found = await listing(store)
        have = {m.name for m in found.archives}
        for key in found.unclaimed:
            if key.partition("/")[0] in have:
                await store.delete(key)
                removed.append(key)
        for manifest in found.archives:
            new = await rewrite(store, manifest, mask, erasure, progress)
            scanned += 1
            if new is not None:
                rewritten.append(manifest.name)
                if progress is not None:
                    progress(f"rewriting {manifest.name}: deleting the old {manifest.file}")
                await store.delete(manifest.key)  # the old file: it names what was erased
    except (ArchiveStoreError, ArchiveError) as exc:
        error = f"corrupt archive {exc}" if isinstance(exc, ArchiveCorrupt) else str(exc)
        return Rewritten(scanned=scanned, rewritten=rewritten, removed=removed, error=error)
    return Rewritten(scanned=scanned, rewritten=rewritten, removed=removed)
