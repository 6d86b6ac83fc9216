"""``acklog erase`` with ``ACKLOG_ARCHIVE_URL`` as a real process (docs/erasure.md#archives):
killed with SIGKILL at each step of an archive's rewrite (as it prints them: writing the new
file, verifying it, switching the manifest, deleting the old file), the store still holds one
complete archive per range that ``acklog archive verify`` passes, and the same command run
again finishes: no file holds the number, none is left unclaimed. An unreachable store:
the database is erased, exit 4 and a line saying the archives were NOT rewritten.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.append import write_batch
from eventstore.archive import archive_range, listing
from eventstore.archive_store import ArchiveStore
from eventstore.events import NewEvent
from eventstore.pool import connect
from tests.projections.test_erasure_archives import archived_text
from tests.service.api.test_erasure import A9, A_TYPED, B9, found, leaks, wamm_text
from tests.support.procs import Process, free_port
from tests.support.procs import command as acklog
from tests.support.s3 import BUCKET, s3_server

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
#: two ranges of 15,000 events each (the rewrite of one takes a noticeable moment), A in both
RANGES = [(1, 15_000), (15_001, 30_000)]


def webhook(n: int) -> NewEvent:
    phone = A9 if n % 500 == 7 else B9
    return NewEvent(
        channel=f"ch{n % 3}",
        provider="wamm",
        body=wamm_text(n, phone, f"message {n} from +{phone}"),
        received_at=T0 + dt.timedelta(milliseconds=n),
        content_type="application/json",
    ).with_dedup_key(None)


async def seed(dsn: str, url: str) -> None:
    conn = await connect(dsn)
    try:
        for i in range(0, RANGES[-1][1], 5000):
            await write_batch(conn, [webhook(n) for n in range(i, i + 5000)])
        store = ArchiveStore(url)
        for first, last in RANGES:
            await archive_range(conn, store, first, last)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


async def check_complete(dsn: str, url: str) -> None:
    """One archive per range, and `acklog archive verify` passes on each."""
    code, out, err = await acklog(dsn, "archive", "verify", ACKLOG_ARCHIVE_URL=url)
    assert code == 0 and f"{len(RANGES)} archives verified" in out, out + err
    listed = await listing(ArchiveStore(url))
    assert [(m.from_position, m.to_position) for m in listed.archives] == RANGES


@pytest.mark.parametrize(
    ("kind", "step"),
    [
        ("file", "writing"),
        ("file", "verifying"),
        ("file", "switching"),
        ("file", "deleting"),
        ("s3", "verifying"),
        ("s3", "deleting"),
    ],
)
async def test_erase_killed_mid_rewrite_leaves_complete_archives_and_a_rerun_finishes(
    dsn: str, tmp_path: Path, request: pytest.FixtureRequest, kind: str, step: str
) -> None:
    if kind == "s3":
        request.getfixturevalue("s3_endpoint")
        url = f"s3://{BUCKET}/kill-{os.getpid()}-{step}"
    else:
        url = f"file://{tmp_path}/archives"
    await seed(dsn, url)
    # kill at the step of the second archive's rewrite (the first one is done by then)
    marker = f"rewriting events-15001-30000: {step}"
    proc = Process(["erase", "--phone", A_TYPED], dsn, marker, ACKLOG_ARCHIVE_URL=url)
    try:
        await proc.start(timeout=120)
    finally:
        await proc.kill()
    assert any("rewriting events-1-15000: deleting" in line for line in proc.lines), proc.lines
    await check_complete(dsn, url)

    code, out, err = await acklog(dsn, "erase", "--phone", A_TYPED, ACKLOG_ARCHIVE_URL=url)
    # 0: it rewrote what was left; 1: the kill came after the last switch and deletion
    assert code in (0, 1) and "archives held the number" in out, out + err
    await check_complete(dsn, url)
    store = ArchiveStore(url)
    assert (await listing(store)).unclaimed == []
    texts = await archived_text(store, tmp_path)
    assert len(texts) == len(RANGES)
    code, out, err = await acklog(dsn, "archive", "list", ACKLOG_ARCHIVE_URL=url)
    assert out.count("rewritten by erasure") == len(RANGES), out + err
    for key, text in texts.items():
        assert not leaks(text), key
        assert found(text, B9), key


async def test_erase_with_an_unreachable_store_says_the_archives_were_not_rewritten(
    dsn: str, tmp_path: Path
) -> None:
    url = f"file://{tmp_path}/archives"
    await seed(dsn, url)
    dead = {
        "ACKLOG_ARCHIVE_URL": f"s3://{BUCKET}/x",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    code, out, err = await acklog(dsn, "erase", "--phone", A_TYPED, **dead)
    assert code == 4, out + err
    assert "masked 60 events of the log" in out, out
    assert "the archives were NOT rewritten" in err and "Run the same `acklog erase` again" in err
    assert A9 not in out + err
    texts = await archived_text(ArchiveStore(url), tmp_path)
    assert all(leaks(t) for t in texts.values())  # still there: nothing was rewritten

    code, out, err = await acklog(dsn, "erase", "--phone", A_TYPED, ACKLOG_ARCHIVE_URL=url)
    assert code == 0 and "2 of 2 archives held the number and were rewritten" in out, out + err
    for key, text in (await archived_text(ArchiveStore(url), tmp_path)).items():
        assert not leaks(text), key
