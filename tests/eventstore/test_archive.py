"""Archives of the log (eventstore/archive.py): Parquet + manifest in a directory or a real
S3-speaking server, verified, and restored byte for byte with their positions.

The S3 server is a real ``moto_server`` process (tests/support/s3.py says why that one).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from aiolimiter import AsyncLimiter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.append import write_batch
from eventstore.archive import (
    MANIFEST,
    ArchiveCorrupt,
    ArchiveError,
    archive_range,
    listing,
    manifest_of,
    restore,
    verify,
)
from eventstore.archive_store import ArchiveStore, ArchiveStoreError
from eventstore.events import NewEvent, header_entry
from eventstore.migrate import migrate
from eventstore.pool import connect
from tests.conftest import with_database
from tests.support.procs import free_port
from tests.support.s3 import BUCKET, s3_server

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def webhook(n: int, body: bytes | None = None, **fields: object) -> NewEvent:
    event = NewEvent(
        channel=f"ch{n % 3}",
        provider="wamm",
        body=body if body is not None else b'{"msg_id":%d,"state":"delivered"}' % n,
        received_at=T0 + dt.timedelta(milliseconds=n, microseconds=n % 997),
        content_type="application/json" if n % 4 else None,
        headers=dict(
            [header_entry("user-agent", b"wamm/2"), header_entry("x-raw", bytes([n % 256, 0]))]
        ),
    )
    return msgspec.structs.replace(event, **fields).with_dedup_key(None)  # type: ignore[arg-type]


async def append(conn: asyncpg.Connection, events: list[NewEvent]) -> None:
    for i in range(0, len(events), 5000):
        await write_batch(conn, events[i : i + 5000])


ROW_SQL = (
    "SELECT row_to_json(t)::text AS r FROM (SELECT position, received_at, channel, provider,"
    " content_type, headers, encode(body, 'base64') AS body, dedup_key, duplicate_of"
    " FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position) t"
)


async def digest(dsn: str, first: int = 1, last: int = 2**62) -> tuple[int, str]:
    """Rows and one SHA-256 over every column of every row in ``first..last``."""
    conn = await asyncpg.connect(dsn)
    try:
        h = hashlib.sha256()
        n = 0
        async with conn.transaction():
            async for row in conn.cursor(ROW_SQL, first, last, prefetch=5000):
                h.update(row["r"].encode() + b"\n")
                n += 1
    finally:
        await conn.close()
    return n, h.hexdigest()


async def fresh_database(server_dsn: str, name: str) -> str:
    """A new, empty database with acklog's migrations applied (as `acklog migrate` does)."""
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    target = with_database(server_dsn, name)
    conn = await asyncpg.connect(target)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return target


async def drop_database(server_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def target(server_dsn: str) -> AsyncIterator[str]:
    """A second database, new and migrated: where archives are restored."""
    name = f"acklog_arch_{os.getpid()}"
    yield await fresh_database(server_dsn, name)
    await drop_database(server_dsn, name)


@pytest.fixture
def file_store(tmp_path: Path) -> ArchiveStore:
    return ArchiveStore(f"file://{tmp_path}/archives")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto_server with the bucket, and the ``AWS_*`` variables pointing at it."""
    with s3_server() as endpoint:
        yield endpoint


async def test_file_round_trip(
    conn: asyncpg.Connection, dsn: str, target: str, file_store: ArchiveStore, tmp_path: Path
) -> None:
    events = [webhook(n) for n in range(500)]
    events += [webhook(1, received_at=T0 + dt.timedelta(seconds=9))]  # a duplicate of #2
    await append(conn, events)
    first = await archive_range(conn, file_store, 1, 300)
    second = await archive_range(conn, file_store, 301, 501)
    assert (first.rows, first.first_position, first.last_position) == (300, 1, 300)
    assert (second.rows, second.last_position) == (201, 501)
    assert second.last_received_at == T0 + dt.timedelta(seconds=9)
    # the layout a data team finds, and nothing else (no temporary file left)
    root = tmp_path / "archives"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "events-1-300/events-1-300.parquet",
        "events-1-300/manifest.json",
        "events-301-501/events-301-501.parquet",
        "events-301-501/manifest.json",
    ]
    # what docs/archives.md shows a data team: every archive as one dataset
    dataset = ds.dataset(root, format="parquet", exclude_invalid_files=True)
    assert dataset.count_rows() == 501
    per_channel = dataset.to_table(columns=["channel"]).group_by("channel").aggregate([])
    assert sorted(per_channel.column("channel").to_pylist()) == ["ch0", "ch1", "ch2"]
    table = pq.read_table(root / "events-301-501/events-301-501.parquet")
    assert table.column("position").to_pylist()[-1] == 501
    assert table.column("duplicate_of").to_pylist()[-1] == 2
    assert table.column("body").to_pylist()[0] == events[300].body

    found = await listing(file_store)
    assert [m.name for m in found.archives] == ["events-1-300", "events-301-501"]
    assert found.unclaimed == []
    for m in found.archives:
        await verify(file_store, m)

    tconn = await connect(target)
    try:
        for m in found.archives:
            done = await restore(tconn, file_store, m)
            assert done.inserted == m.rows and done.present == 0
        assert await digest(target) == await digest(dsn)
        # again: nothing to do (idempotent)
        again = await restore(tconn, file_store, found.archives[0])
        assert (again.inserted, again.present) == (0, 300)
        # later appends draw positions past the restored ones
        appended = await write_batch(tconn, [webhook(10_000)])
        assert appended[0].position == 502
    finally:
        await tconn.close()


async def test_s3_round_trip_into_a_fresh_database(
    conn: asyncpg.Connection, dsn: str, target: str, s3_endpoint: str
) -> None:
    store = ArchiveStore(f"s3://{BUCKET}/round-trip")
    await append(conn, [webhook(n) for n in range(2000)])
    manifests = [
        await archive_range(conn, store, 1, 999),
        await archive_range(conn, store, 1000, 2000),
    ]
    found = await listing(store)
    assert found.archives == manifests
    assert [k for k, _ in await store.list()] == [
        "events-1-999/events-1-999.parquet",
        "events-1-999/manifest.json",
        "events-1000-2000/events-1000-2000.parquet",
        "events-1000-2000/manifest.json",
    ]
    tconn = await connect(target)
    try:
        for m in found.archives:
            await verify(store, m)
            await restore(tconn, store, m)
    finally:
        await tconn.close()
    assert await digest(target) == await digest(dsn)
    assert (await digest(target))[0] == 2000


async def test_a_paced_archive_reads_no_faster_than_its_rate(
    conn: asyncpg.Connection, file_store: ArchiveStore
) -> None:
    """Retention's pace (ACKLOG_RETENTION_RATE): 2,500 rows at 1,000 events/s take at least
    1.5 s (the bucket starts full: one second's worth goes at once), and hold them all; a
    paced verify of them takes as long."""
    await append(conn, [webhook(n) for n in range(2_500)])
    started = time.monotonic()
    paced = await archive_range(conn, file_store, 1, 2_500, pace=AsyncLimiter(1_000, 1))
    took = time.monotonic() - started
    assert took >= 1.45, f"2,500 rows at 1,000/s read in {took:.2f} s"
    assert paced.rows == 2_500
    await verify(file_store, paced)
    # and a paced verify checks no faster than its own rate
    started = time.monotonic()
    await verify(file_store, paced, pace=AsyncLimiter(1_000, 1))
    took = time.monotonic() - started
    assert took >= 1.45, f"2,500 rows verified at 1,000/s in {took:.2f} s"


async def test_restore_refuses_a_log_with_another_event_at_a_position(
    conn: asyncpg.Connection, dsn: str, target: str, file_store: ArchiveStore
) -> None:
    await append(conn, [webhook(n) for n in range(20)])
    manifest = await archive_range(conn, file_store, 1, 20)
    same = await restore(conn, file_store, manifest)  # into the log it came from
    assert (same.inserted, same.present) == (0, 20)
    tconn = await connect(target)
    try:
        await write_batch(tconn, [webhook(n, body=b"another") for n in range(3)])
        before = await digest(target)
        with pytest.raises(ArchiveError, match="position 1 of the log holds another event"):
            await restore(tconn, file_store, manifest)
        assert await digest(target) == before  # nothing changed
    finally:
        await tconn.close()


async def test_a_large_archive_goes_up_in_parts(
    conn: asyncpg.Connection, dsn: str, target: str, s3_endpoint: str
) -> None:
    """A file over obstore's 5 MiB chunk is a multipart upload: invisible until complete."""
    await append(conn, [webhook(n, body=os.urandom(1500)) for n in range(6000)])  # ~9 MB
    store = ArchiveStore(f"s3://{BUCKET}/large")
    manifest = await archive_range(conn, store, 1, 6000)
    assert manifest.bytes > 8 * 1024 * 1024
    assert (manifest.key, manifest.bytes) in await store.list()
    await verify(store, manifest)
    tconn = await connect(target)
    try:
        await restore(tconn, store, manifest)
    finally:
        await tconn.close()
    assert await digest(target) == await digest(dsn)


async def test_a_name_taken_an_empty_range_and_an_open_range_are_refused(
    conn: asyncpg.Connection, file_store: ArchiveStore
) -> None:
    await append(conn, [webhook(n) for n in range(10)])
    with pytest.raises(ArchiveError, match=r"no range 11\.\.10: --from must be"):
        await archive_range(conn, file_store, 11, 10)
    with pytest.raises(ArchiveError, match=r"past the log's head \(10\)"):
        await archive_range(conn, file_store, 5, 20)
    await archive_range(conn, file_store, 1, 10)
    with pytest.raises(ArchiveError, match="exists already"):
        await archive_range(conn, file_store, 1, 10)
    with pytest.raises(ArchiveError, match="no archive events-1-9"):
        await manifest_of(file_store, "events-1-9")
    assert [m.name for m in (await listing(file_store)).archives] == ["events-1-10"]


async def test_empty_range_inside_the_log(
    conn: asyncpg.Connection, file_store: ArchiveStore
) -> None:
    await append(conn, [webhook(n) for n in range(3)])
    # positions 4..5 drawn by a batch that rolled back: a gap, nothing to archive there
    async with conn.transaction():
        await conn.execute("SELECT nextval('events_position_seq'), nextval('events_position_seq')")
    await append(conn, [webhook(3)])
    with pytest.raises(ArchiveError, match=r"no events with positions 4\.\.5: nothing archived"):
        await archive_range(conn, file_store, 4, 5)
    assert (await listing(file_store)).archives == []
    manifest = await archive_range(conn, file_store, 1, 6)  # the gap is no fault
    assert (manifest.rows, manifest.last_position) == (4, 6)
    await verify(file_store, manifest)


async def test_truncated_or_flipped_files_fail_verify_naming_them(
    conn: asyncpg.Connection, file_store: ArchiveStore, tmp_path: Path
) -> None:
    await append(conn, [webhook(n) for n in range(200)])
    good = await archive_range(conn, file_store, 1, 100)
    bad = await archive_range(conn, file_store, 101, 200)
    path = tmp_path / "archives" / bad.key
    original = path.read_bytes()

    path.write_bytes(original[: len(original) // 2])
    with pytest.raises(ArchiveCorrupt, match=r"events-101-200\.parquet: .* \(truncated\)") as exc:
        await verify(file_store, bad)
    assert exc.value.file == "events-101-200/events-101-200.parquet"
    await verify(file_store, good)  # the other one is fine

    flipped = bytearray(original)
    flipped[len(flipped) // 3] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(ArchiveCorrupt, match=r"events-101-200\.parquet: SHA-256 "):
        await verify(file_store, bad)

    # a file rewritten whole with one body changed (its size and SHA-256 put in the manifest
    # too): every body is checked against its own hash
    table = pq.read_table(tmp_path / "archives" / good.key)
    bodies = table.column("body").to_pylist()
    bodies[7] = bodies[7] + b" "
    import pyarrow as pa

    forged = table.set_column(6, table.schema.field(6), pa.array(bodies, pa.large_binary()))
    forged_path = tmp_path / "archives" / good.key
    pq.write_table(forged, forged_path)
    data = forged_path.read_bytes()
    manifest = msgspec.structs.replace(
        good, bytes=len(data), file_sha256=hashlib.sha256(data).hexdigest()
    )
    with pytest.raises(ArchiveCorrupt, match="the body at position 8 changed"):
        await verify(file_store, manifest)
    with pytest.raises(ArchiveCorrupt):
        await restore(conn, file_store, manifest)

    (tmp_path / "archives" / bad.key).unlink()
    with pytest.raises(ArchiveCorrupt, match=r"events-101-200\.parquet: missing"):
        await verify(file_store, bad)


async def test_an_unreachable_store_is_one_clear_error_and_claims_nothing(
    conn: asyncpg.Connection, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await append(conn, [webhook(n) for n in range(10)])
    closed = free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    store = ArchiveStore(f"s3://{BUCKET}/unreachable")
    started = time.monotonic()
    with pytest.raises(ArchiveStoreError, match=f"127.0.0.1:{closed}") as exc:
        await archive_range(conn, store, 1, 10)
    assert "\n" not in str(exc.value) and "is the store reachable" in str(exc.value)
    assert time.monotonic() - started < 30
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert await ArchiveStore(f"s3://{BUCKET}/unreachable").list() == []


def test_a_bad_url_is_refused() -> None:
    for url in ("ftp://x/y", "file://relative/path", "s3://", "/just/a/path"):
        with pytest.raises(ArchiveStoreError, match="must be"):
            ArchiveStore(url)


def list_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A 256 kB filesystem (tmpfs): a store that fills up."""
    where = tmp_path / "full"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_full_store_is_one_clear_error_and_claims_nothing(
    conn: asyncpg.Connection, full_dir: Path
) -> None:
    await append(conn, [webhook(n, body=os.urandom(2000)) for n in range(400)])  # ~800 kB
    store = ArchiveStore(f"file://{full_dir}")
    with pytest.raises(ArchiveStoreError, match=r"events-1-400\.parquet failed") as exc:
        await archive_range(conn, store, 1, 400)
    assert "\n" not in str(exc.value)
    print(exc.value)
    found = await listing(store)
    assert found.archives == []
    left = sorted(str(p.relative_to(full_dir)) for p in list_files(full_dir))
    assert MANIFEST not in " ".join(left), left
    print("left in the full store:", left)


# --- any bytes -----------------------------------------------------------------------------

_bodies = st.lists(st.binary(max_size=3000), min_size=1, max_size=12)
_headers = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12), st.binary(max_size=40)
)


@pytest.fixture(scope="module")
def two_databases(server_dsn: str) -> Iterator[tuple[str, str]]:
    names = [f"acklog_arch_src_{os.getpid()}", f"acklog_arch_dst_{os.getpid()}"]
    dsns = [asyncio.run(fresh_database(server_dsn, n)) for n in names]
    yield dsns[0], dsns[1]
    for n in names:
        asyncio.run(drop_database(server_dsn, n))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bodies=_bodies, headers=_headers, content_type=st.none() | st.text(max_size=30))
def test_any_bodies_round_trip_exactly(
    two_databases: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    bodies: list[bytes],
    headers: dict[str, bytes],
    content_type: str | None,
) -> None:
    source, dest = two_databases
    content_type = content_type.replace("\x00", "") if content_type is not None else None
    stored_headers = dict(header_entry(k, v) for k, v in headers.items())
    events = [
        msgspec.structs.replace(
            webhook(i, body=b), headers=stored_headers, content_type=content_type
        ).with_dedup_key(None)
        for i, b in enumerate(bodies)
    ]
    store = ArchiveStore(f"file://{tmp_path_factory.mktemp('any')}")

    async def run() -> None:
        conn = await connect(source)
        dconn = await connect(dest)
        try:
            first = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")) + 1
            await write_batch(conn, events)
            last = first + len(events) - 1
            manifest = await archive_range(conn, store, first, last)
            await verify(store, manifest)
            done = await restore(dconn, store, manifest)
            assert done.inserted == len(events)
            restored = await dconn.fetch(
                "SELECT body FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position",
                first,
                last,
            )
            assert [r["body"] for r in restored] == bodies
        finally:
            await conn.close()
            await dconn.close()
        assert await digest(dest, first, last) == await digest(source, first, last)

    asyncio.run(run())


# --- what it costs -------------------------------------------------------------------------


def _small(n: int) -> list[NewEvent]:
    return [webhook(i) for i in range(n)]


def _meta(n: int) -> list[NewEvent]:
    from tests.projections.fold.test_projector import traffic

    return traffic(n // 2 + 1000, seed=3)[:n]


@pytest.mark.parametrize("kind", [_small, _meta], ids=["wamm-small", "meta-statuses"])
async def test_measure_100k_webhooks(
    conn: asyncpg.Connection,
    target: str,
    file_store: ArchiveStore,
    kind: Callable[[int], list[NewEvent]],
) -> None:
    """Archive and restore rates, and bytes per event in Parquet and in PostgreSQL, for 100k
    webhooks: small WAMM ones (~40-byte JSON bodies, two headers) and Meta statuses (~500
    bytes of JSON, shuffled, with retries): the figures docs/archives.md quotes."""
    n = 100_000
    events = kind(n)
    assert len(events) == n
    await append(conn, events)
    await conn.execute("VACUUM ANALYZE events")
    pg_bytes = int(  # the log is partitioned: its size is its partitions'
        await conn.fetchval(
            "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('events')"
        )
    )

    started = time.monotonic()
    manifest = await archive_range(conn, file_store, 1, n)
    archive_s = time.monotonic() - started
    started = time.monotonic()
    await verify(file_store, manifest)
    verify_s = time.monotonic() - started
    tconn = await connect(target)
    try:
        started = time.monotonic()
        done = await restore(tconn, file_store, manifest)
        restore_s = time.monotonic() - started
    finally:
        await tconn.close()
    assert done.inserted == n
    print(
        f"\n100k {kind.__name__[1:]} webhooks ({sum(len(e.body) for e in events) / n:.0f}"
        f" bytes of body each): archive {n / archive_s:,.0f} events/s ({archive_s:.2f} s),"
        f" verify {n / verify_s:,.0f} events/s, restore {n / restore_s:,.0f} events/s"
        f" ({restore_s:.2f} s); Parquet {manifest.bytes / n:.1f} bytes/event"
        f" ({manifest.bytes:,} bytes), PostgreSQL {pg_bytes / n:.1f} bytes/event"
        f" (pg_total_relation_size of its partitions {pg_bytes:,}, indexes included)"
    )
    assert manifest.bytes < pg_bytes


async def test_a_file_without_its_manifest_is_no_archive(
    conn: asyncpg.Connection, file_store: ArchiveStore, s3_endpoint: str
) -> None:
    """What a write stopped between the file and the manifest leaves (a kill, a store that
    filled up on the manifest): listed as unclaimed, never as an archive, never verified."""
    await append(conn, [webhook(n) for n in range(5)])
    for store in (file_store, ArchiveStore(f"s3://{BUCKET}/stopped")):
        manifest = await archive_range(conn, store, 1, 5)
        await store.delete(f"{manifest.name}/{MANIFEST}")
        found = await listing(store)
        assert found.archives == []
        assert found.unclaimed == ["events-1-5/events-1-5.parquet"]
        with pytest.raises(ArchiveError, match="no archive events-1-5"):
            await manifest_of(store, "events-1-5")
