"""Erasure reaches the archives (docs/erasure.md#archives, docs/archives.md#erasure): webhooks
of two people are appended and archived in three ranges (the middle one without person A), in
a directory and in a real S3-speaking server (moto_server); erasing A rewrites exactly the
archives that held A, with a new file and manifest that verify, restore to the log's own
masked bodies, and hold no spelling of A, while B stays and the archive without A is byte
for byte what it was. A rewrite cut between its steps (the store refusing the manifest's
switch, or the old file's deletion) leaves one complete archive per range, and the next
erasure finishes it. An unreachable store leaves the database erased and says the archives
are pending (the API: 503 with the record), and a rerun completes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import archive as arch
from eventstore.append import write_batch
from eventstore.archive_store import ArchiveStore, ArchiveStoreError
from eventstore.events import NewEvent, header_entry
from eventstore.pool import connect
from projections import erasure
from service.runtime.app import make_app
from tests.conftest import API_KEY
from tests.eventstore.test_archive import drop_database, fresh_database
from tests.service.api.test_erasure import A8, A9, A_TYPED, B8, B9, found, leaks, wamid, wamm_text
from tests.support.apps import settings as app_settings
from tests.support.payloads import meta_status
from tests.support.procs import free_port
from tests.support.s3 import BUCKET, s3_server

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
#: the archived ranges; the middle one names only B
RANGES = [(1, 12), (13, 24), (25, 36)]


def _event(n: int, provider: str, body: bytes, event_id: str | None, **headers: bytes) -> NewEvent:
    return NewEvent(
        channel=f"ch{n % 2}",
        provider=provider,
        body=body,
        received_at=T0 + dt.timedelta(seconds=n),
        content_type="application/json",
        headers=dict(header_entry(k, v) for k, v in headers.items()),
    ).with_dedup_key(event_id)


def person_events(n: int, d9: str, d8: str) -> list[NewEvent]:
    """Four webhooks naming one Brazilian mobile in its provider spellings: a Meta status
    (recipient_id and the wamid's record), a WAMM text from it quoting it formatted, a WAHA-like
    id with ``…@c.us`` as the dedup key, and a header naming ``whatsapp:+…``."""
    area, local = d9[2:4], d9[4:]
    status = json.loads(meta_status(wamid(d9, b"%d" % n).decode(), "read"))
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["recipient_id"] = d9
    text = f"my number is +55 ({area}) {local[:5]}-{local[5:]}, or {d9}@s.whatsapp.net"
    return [
        _event(n, "meta", json.dumps(status).encode(), None),
        _event(n + 1, "wamm", wamm_text(n, d9, text), None),
        _event(
            n + 2, "waha", b'{"id":"true_%s@c.us_3EB0%d"}' % (d8.encode(), n), f"true_{d8}@c.us_{n}"
        ),
        _event(
            n + 3,
            "twilio",
            b"From=whatsapp%3A%2B" + d9.encode(),
            None,
            **{"x-from": b"whatsapp:+" + d9.encode()},
        ),
    ]


async def seed(dsn: str, store: ArchiveStore) -> list[arch.Manifest]:
    """Positions 1..36: A and B in the first and last ranges, B alone in the middle one."""
    conn = await connect(dsn)
    try:
        for first, _ in RANGES:
            middle = first == 13
            events = person_events(first, B9 if middle else A9, B8 if middle else A8)
            events += person_events(first + 4, B9, B8)
            events += person_events(first + 8, B9 if middle else A9, B8 if middle else A8)
            await write_batch(conn, events)
        return [await arch.archive_range(conn, store, f, t) for f, t in RANGES]
    finally:
        await conn.close()


async def objects(store: ArchiveStore) -> dict[str, bytes]:
    return {k: await store.get(k) for k, _ in await store.list()}


def file_text(path: Path) -> str:
    """Every column of every row of a Parquet file as text (bodies as latin-1)."""
    rows = pq.read_table(path).to_pylist()
    parts = []
    for row in rows:
        for value in row.values():
            parts.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return "\n".join(parts)


async def archived_text(store: ArchiveStore, tmp: Path) -> dict[str, str]:
    """Each stored Parquet file's rows as text, by key."""
    out = {}
    for key, _ in await store.list():
        if key.endswith(".parquet"):
            target = tmp / key.replace("/", "_")
            await store.get_file(key, target)
            out[key] = file_text(target)
    return out


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return f"file://{tmp_path}/archives"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


_runs = iter(range(10**6))


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, file_url: str) -> str:
    if request.param == "file":
        return file_url
    request.getfixturevalue("s3_endpoint")
    return f"s3://{BUCKET}/erase-{os.getpid()}-{next(_runs)}"


@pytest.fixture
async def target(server_dsn: str) -> AsyncIterator[str]:
    name = f"acklog_erarch_{os.getpid()}"
    yield await fresh_database(server_dsn, name)
    await drop_database(server_dsn, name)


async def log_rows(dsn: str) -> dict[int, tuple[bytes, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT position, body, headers::text AS h, dedup_key FROM events")
        return {r["position"]: (r["body"], r["h"], r["dedup_key"]) for r in rows}
    finally:
        await conn.close()


async def test_erasure_rewrites_the_archives_holding_the_number(
    dsn: str, store_url: str, target: str, tmp_path: Path
) -> None:
    store = ArchiveStore(store_url)
    created = await seed(dsn, store)
    before = await objects(store)
    texts = await archived_text(store, tmp_path)
    assert set(leaks(texts["events-1-12/events-1-12.parquet"])) >= {A9, A8, f"+{A9}"}
    assert not leaks(texts["events-13-24/events-13-24.parquet"])

    done = await erasure.erase(dsn, A_TYPED, "test", archive_url=store_url)

    assert (done.matched, done.archives, done.archives_scanned) == (True, "done", 3)
    assert done.archives_rewritten == 2 and done.archives_error is None
    conn = await connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM erasures WHERE id = $1", done.id)
    finally:
        await conn.close()
    assert (row["archives_scanned"], row["archives_rewritten"], row["archives_pending"]) == (
        3,
        2,
        False,
    )
    after = await objects(store)
    # one manifest and one file per range: the old files are gone
    assert sorted(after) == [
        f"events-1-12/events-1-12.e{done.id}.parquet",
        "events-1-12/manifest.json",
        "events-13-24/events-13-24.parquet",
        "events-13-24/manifest.json",
        f"events-25-36/events-25-36.e{done.id}.parquet",
        "events-25-36/manifest.json",
    ]
    # the archive without A is byte for byte what it was
    for key in ("events-13-24/events-13-24.parquet", "events-13-24/manifest.json"):
        assert after[key] == before[key]
    texts = await archived_text(store, tmp_path)
    for key, text in texts.items():
        assert not leaks(text), key
    assert all(found(texts[k], B9) for k in texts)
    assert found(texts[f"events-1-12/events-1-12.e{done.id}.parquet"], B8)

    listed = await arch.listing(store)
    assert listed.unclaimed == []
    log = await log_rows(dsn)
    for old, new in zip(created, listed.archives, strict=True):
        await arch.verify(store, new)  # what `acklog archive verify` checks
        same = ("rows", "from_position", "to_position", "first_position", "last_position")
        assert [getattr(new, f) for f in same] == [getattr(old, f) for f in same]
        if new.name == "events-13-24":
            assert new == old
            continue
        assert new.erasure_ids == (done.id,) and new.rewritten_at is not None
        assert new.bodies_sha256 != old.bodies_sha256 and new.created_at == old.created_at
        # restored into a new database: the log's own masked bytes, position by position
        rconn = await connect(target)
        try:
            restored = await arch.restore(rconn, store, new)
        finally:
            await rconn.close()
        assert restored.inserted == new.rows
    restored_rows = await log_rows(target)
    assert restored_rows == {p: v for p, v in log.items() if p in restored_rows}
    assert len(restored_rows) == 24

    # a second erasure of A finds nothing left anywhere, and changes no archive
    again = await erasure.erase(dsn, A_TYPED, "test", archive_url=store_url)
    assert (again.matched, again.archives, again.archives_rewritten) == (False, "done", 0)
    assert await objects(store) == after


class FailingStore(ArchiveStore):
    """A store that refuses one kind of write: where a kill or an outage can cut a rewrite."""

    def __init__(self, url: str, fail: str) -> None:
        super().__init__(url)
        self.fail = fail

    async def put(self, key: str, data: bytes | Path) -> None:
        if self.fail == "manifest" and key.endswith(arch.MANIFEST):
            raise ArchiveStoreError(f"archive store {self.url}: writing {key} failed: refused")
        await super().put(key, data)

    async def delete(self, key: str) -> None:
        if self.fail == "delete":
            raise ArchiveStoreError(f"archive store {self.url}: deleting {key} failed: refused")
        await super().delete(key)


async def complete_archives(store: ArchiveStore) -> list[arch.Manifest]:
    """Every range has exactly one archive, and each verifies."""
    listed = await arch.listing(store)
    assert [(m.from_position, m.to_position) for m in listed.archives] == RANGES
    for m in listed.archives:
        await arch.verify(store, m)
    return listed.archives


@pytest.mark.parametrize("fail", ["manifest", "delete"])
async def test_a_rewrite_cut_between_its_steps_leaves_one_complete_archive(
    dsn: str, file_url: str, tmp_path: Path, fail: str
) -> None:
    """Cut before the commit point (the manifest's switch): the old archive stands, the new
    file is unclaimed. Cut after it (the old file's deletion): the new archive stands, the old
    file (which still names A) is unclaimed. Either way the next erasure removes the stray
    file and finishes."""
    store = ArchiveStore(file_url)
    created = await seed(dsn, store)
    spellings = erasure.parse(A_TYPED)
    cut = await arch.erase_archives(FailingStore(file_url, fail), spellings.mask, 99)
    assert cut.error is not None and "refused" in cut.error
    # the count says what was committed: after the switch, the archive is rewritten
    assert cut.rewritten == ([] if fail == "manifest" else ["events-1-12"])
    archives = await complete_archives(store)
    unclaimed = (await arch.listing(store)).unclaimed
    if fail == "manifest":
        assert archives == created
        assert unclaimed == ["events-1-12/events-1-12.e99.parquet"]
    else:
        assert archives[0].erasure_ids == (99,) and archives[1:] == created[1:]
        assert unclaimed == ["events-1-12/events-1-12.parquet"]
        assert leaks((await archived_text(store, tmp_path))[unclaimed[0]])

    done = await erasure.erase(dsn, A_TYPED, "test", archive_url=file_url)
    assert (done.archives, done.archives_rewritten) == ("done", 2 if fail == "manifest" else 1)
    await complete_archives(store)
    assert (await arch.listing(store)).unclaimed == []
    for key, text in (await archived_text(store, tmp_path)).items():
        assert not leaks(text), key


async def test_an_unreachable_store_leaves_archives_pending_until_a_rerun(
    dsn: str, file_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    store = ArchiveStore(file_url)
    await seed(dsn, store)
    dead = f"s3://{BUCKET}/nowhere"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")}
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        AWS_ACCESS_KEY_ID=saved["AWS_ACCESS_KEY_ID"] or "testing",
    )
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    try:
        client = await aiohttp_client(
            make_app(app_settings(api_key=API_KEY, archive_url=dead), dsn)
        )
        resp = await client.post(
            "/v1/erasures", json={"phone": A_TYPED}, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        answer = await resp.json()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert resp.status == 503 and resp.headers["Retry-After"] == "60"
    assert answer["matched"] is True and answer["events"] == 16  # the log was erased
    assert answer["archives"] == "pending" and answer["archives_scanned"] == 0
    assert dead in answer["archives_error"] and A9 not in json.dumps(answer)
    conn = await connect(dsn)
    try:
        pending = await conn.fetchval(
            "SELECT archives_pending FROM erasures WHERE id = $1", answer["id"]
        )
    finally:
        await conn.close()
    assert pending is True

    # the archives still hold A until the erasure is run again against the reachable store
    assert leaks((await archived_text(store, tmp_path))["events-1-12/events-1-12.parquet"])
    client = await aiohttp_client(
        make_app(app_settings(api_key=API_KEY, archive_url=file_url), dsn)
    )
    resp = await client.post(
        "/v1/erasures", json={"phone": A_TYPED}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    again = msgspec.json.decode(await resp.read(), type=erasure.Erased)
    assert resp.status == 200
    assert (again.matched, again.events, again.archives, again.archives_rewritten) == (
        True,
        0,
        "done",
        2,
    )
    for key, text in (await archived_text(store, tmp_path)).items():
        assert not leaks(text), key


async def test_measure_the_pass_over_100k_archived_webhooks(dsn: str, file_url: str) -> None:
    """The figures of docs/archives.md#erasure: 100k WAMM webhooks in two archives of 50k,
    one naming A in 1 of 1,000 events, the other not at all; the erasure's pass over them."""
    import time

    conn = await connect(dsn)
    try:
        for i in range(0, 100_000, 10_000):
            await write_batch(
                conn,
                [
                    _event(
                        n,
                        "wamm",
                        wamm_text(n, A9 if n < 50_000 and n % 1000 == 7 else B9, f"text {n}"),
                        None,
                    )
                    for n in range(i, i + 10_000)
                ],
            )
        store = ArchiveStore(file_url)
        for first in (1, 50_001):
            await arch.archive_range(conn, store, first, first + 49_999)
    finally:
        await conn.close()
    mask = erasure.parse(A_TYPED).mask
    start = time.perf_counter()
    done = await arch.erase_archives(store, mask, 1)
    took = time.perf_counter() - start
    assert (done.scanned, done.rewritten, done.error) == (2, ["events-1-50000"], None)
    start = time.perf_counter()
    again = await arch.erase_archives(store, mask, 2)
    scan = time.perf_counter() - start
    assert again.rewritten == []
    print(
        f"\npass over 100k archived events: {100_000 / took:,.0f} events/s with one archive"
        f" of two rewritten ({took:.2f} s); {100_000 / scan:,.0f} events/s when nothing"
        f" matches ({scan:.2f} s)"
    )


_PIECES = st.sampled_from(
    [A9, A8, f"+{A9}", f"whatsapp:+{A9}", f"{A8}@c.us", "+55 (11) 98888-7777", B9, f"{B8}@c.us"]
)
_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=20)), max_size=6).map("".join)


@pytest.fixture(scope="module")
def any_database(server_dsn: str) -> Iterator[str]:
    import asyncio

    name = f"acklog_erarch_any_{os.getpid()}"
    yield asyncio.run(fresh_database(server_dsn, name))
    asyncio.run(drop_database(server_dsn, name))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(_TEXT, st.binary(max_size=200), _TEXT, _TEXT, st.booleans()),
        min_size=1,
        max_size=10,
    )
)
def test_any_archive_is_rewritten_to_exactly_the_masked_rows_or_left_alone(
    any_database: str,
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, bytes, str, str, bool]],
) -> None:
    """Whatever the rows: a rewritten archive holds each row with its body, headers and
    dedup key masked and every other column as it was, and verifies; an archive the mask does
    not change is left byte for byte."""
    import asyncio

    events = [
        NewEvent(
            channel="ch",
            provider="wamm",
            body=text.encode() + raw if json_body else raw + text.encode(),
            received_at=T0 + dt.timedelta(microseconds=i),
            content_type="application/json",
            headers=dict([header_entry("x-h", header.encode())]),
        ).with_dedup_key(key or None)
        for i, (text, raw, header, key, json_body) in enumerate(rows)
    ]
    store = ArchiveStore(f"file://{tmp_path_factory.mktemp('anyerase')}")
    mask = erasure.parse(A_TYPED).mask

    async def run() -> None:
        conn = await connect(any_database)
        try:
            first = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")) + 1
            await write_batch(conn, events)
            old = await arch.archive_range(conn, store, first, first + len(events) - 1)
        finally:
            await conn.close()
        before = await objects(store)
        tmp = tmp_path_factory.mktemp("anyread")
        await store.get_file(old.key, tmp / "old.parquet")
        old_rows = pq.read_table(tmp / "old.parquet").to_pylist()
        done = await arch.erase_archives(store, mask, 5)
        expected = [
            {
                **r,
                "headers": mask(r["headers"].encode()).decode(),
                "body": mask(r["body"]),
                "dedup_key": mask(r["dedup_key"].encode()).decode(),
            }
            for r in old_rows
        ]
        if expected == old_rows:
            assert done.rewritten == [] and await objects(store) == before
            return
        assert done.rewritten == [old.name] and done.error is None
        (new,) = (await arch.listing(store)).archives
        await arch.verify(store, new)
        await store.get_file(new.key, tmp / "new.parquet")
        new_rows = pq.read_table(tmp / "new.parquet").to_pylist()
        for r in expected:
            r["body_sha256"] = hashlib.sha256(r["body"]).digest()
        assert new_rows == expected
        assert sorted(await objects(store)) == sorted([new.key, f"{new.name}/{arch.MANIFEST}"])

    asyncio.run(run())


async def test_an_erasure_after_retention_keeps_the_archived_messages_of_others(
    server_dsn: str, tmp_path: Path
) -> None:
    """Retention dropped the partitions naming both people; erasing A rewrites the archives,
    then rebuilds the read models from the masked archives and the log (archived + live):
    B's messages from the dropped partitions stay, and nothing of A is left anywhere."""
    from eventstore import retention as records
    from projections import retention
    from tests.projections.test_retention import fold
    from tests.service.api.test_erasure import pg_dump
    from tests.support.logs import partitioned_log

    async with partitioned_log(server_dsn, 10) as dsn:
        conn = await connect(dsn)
        try:
            events = person_events(1, A9, A8) + person_events(10, B9, B8)
            events += person_events(20, B9, B8)
            await write_batch(conn, events)
            await fold(dsn, conn)
            store = ArchiveStore(f"file://{tmp_path}/archives")
            done = await retention.run(conn, store, dt.timedelta(0))
            assert done.partitions >= 1 and await records.oldest_kept(conn) > 1
            before = await conn.fetchval("SELECT count(*) FROM rm.messages")
            b_before = await conn.fetchval(
                "SELECT count(*) FROM rm.messages WHERE chat LIKE $1", f"%{B9[-8:]}%"
            )
            erased = await erasure.erase(dsn, A_TYPED, "test", archive_url=store.url)
            # the log no longer holds A: only the archives and the read models did
            assert erased.events == 0 and erased.archives_rewritten >= 1
            assert erased.archives == "done" and erased.rebuilt_to is not None
            assert await conn.fetchval("SELECT count(*) FROM rm.messages") == before
            assert b_before > 0 and b_before == await conn.fetchval(
                "SELECT count(*) FROM rm.messages WHERE chat LIKE $1", f"%{B9[-8:]}%"
            )
        finally:
            await conn.close()
        assert leaks(await pg_dump(dsn)) == []
