"""``acklog archive create | list | verify | restore`` as operators run them: real ``acklog``
processes, a real PostgreSQL, a real S3-speaking server (moto_server, tests/support/s3.py) and
a directory."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from eventstore.append import write_batch
from eventstore.pool import connect
from tests.eventstore.test_archive import digest, webhook
from tests.projections.fold.test_projector import traffic
from tests.support.apps import DATA_DIR
from tests.support.logs import new_database
from tests.support.procs import ROOT, free_port
from tests.support.procs import command as acklog
from tests.support.s3 import BUCKET, s3_server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
async def new_db(server_dsn: str) -> AsyncIterator[str]:
    """A new database with nothing in it (``acklog migrate`` is the test's to run)."""
    async with new_database(server_dsn) as dsn:
        yield dsn


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


async def test_create_list_verify_restore_through_s3_then_rebuild(
    dsn: str, new_db: str, s3_endpoint: str
) -> None:
    conn = await connect(dsn)
    try:
        await write_batch(conn, traffic(200, seed=7))
        head = int(await conn.fetchval("SELECT max(position) FROM events"))
    finally:
        await conn.close()
    url = {"ACKLOG_ARCHIVE_URL": f"s3://{BUCKET}/cli"}
    half = head // 2
    for first, last in ((1, half), (half + 1, head)):
        code, out, err = await acklog(
            dsn, "archive", "create", "--from", str(first), "--to", str(last), **url
        )
        assert code == 0 and f"positions {first}..{last}" in out, out + err
        print(out.strip())
    code, out, err = await acklog(dsn, "archive", "list", **url)
    assert code == 0, err
    print(out.strip())
    assert f"events-1-{half}  positions 1..{half}" in out
    assert f"2 archives, {head:,} events in s3://{BUCKET}/cli" in out
    code, out, err = await acklog(dsn, "archive", "verify", **url)
    assert code == 0 and "2 archives verified" in out, out + err
    print(out.strip())

    code, out, err = await acklog(new_db, "migrate")
    assert code == 0, out + err
    code, out, err = await acklog(new_db, "archive", "restore", "--all", **url)
    assert code == 0 and f"{head:,} events restored" in out, out + err
    print(out.strip())
    assert await digest(new_db) == await digest(dsn)
    code, out, err = await acklog(new_db, "archive", "restore", f"events-1-{half}", **url)
    assert code == 0 and f"0 events inserted, {half:,} already in the log" in out, out + err
    # the restored log folds into the same read models
    for db in (dsn, new_db):
        code, out, err = await acklog(db, "rebuild")
        assert code == 0, out + err
    assert await digest_models(new_db) == await digest_models(dsn)


async def digest_models(dsn: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT channel, key, state FROM rm.messages ORDER BY channel, key")
    finally:
        await conn.close()
    assert rows
    return [tuple(r) for r in rows]


async def test_errors_are_one_line_and_exit_non_zero(
    dsn: str, tmp_path: Path, s3_endpoint: str
) -> None:
    conn = await connect(dsn)
    try:
        await write_batch(conn, [webhook(n) for n in range(20)])
    finally:
        await conn.close()
    create = ("archive", "create", "--from", "1", "--to", "20")

    code, out, err = await acklog(dsn, *create)
    assert code == 2 and "ACKLOG_ARCHIVE_URL is not set" in one_line_error(err)

    code, out, err = await acklog(dsn, *create, ACKLOG_ARCHIVE_URL="ftp://host/x")
    assert code != 0 and "ACKLOG_ARCHIVE_URL must be" in err and "Traceback" not in err

    closed = free_port()
    code, out, err = await acklog(
        dsn,
        *create,
        ACKLOG_ARCHIVE_URL=f"s3://{BUCKET}/x",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed}",
    )
    line = one_line_error(err)
    assert code == 3 and f"127.0.0.1:{closed}" in line and "nothing was archived" in line, err
    print(line)
    # every time: obstore's async calls made 1 exit in 5 a SIGABRT (134) at shutdown
    runs = await asyncio.gather(
        *(
            acklog(
                dsn,
                "archive",
                "list",
                ACKLOG_ARCHIVE_URL=f"s3://{BUCKET}/x",
                AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed}",
            )
            for _ in range(8)
        )
    )
    assert [code for code, _, _ in runs] == [3] * 8, runs

    url = {"ACKLOG_ARCHIVE_URL": f"file://{tmp_path}/arch"}
    code, out, err = await acklog(dsn, "archive", "create", "--from", "30", "--to", "20", **url)
    assert code == 2 and "no range 30..20" in one_line_error(err)
    code, out, err = await acklog(dsn, "archive", "create", "--from", "1", "--to", "25", **url)
    assert code == 2 and "past the log's head (20)" in one_line_error(err)
    code, out, err = await acklog(dsn, "archive", "verify", "events-1-5", **url)
    assert code == 2 and "no archive events-1-5" in one_line_error(err)
    code, out, err = await acklog(dsn, "archive", "restore", "nonsense", **url)
    assert code == 2 and "not an archive name" in one_line_error(err)

    code, out, err = await acklog(dsn, *create, **url)
    assert code == 0, err
    parquet = tmp_path / "arch" / "events-1-20" / "events-1-20.parquet"
    data = parquet.read_bytes()
    parquet.write_bytes(data[:-100])
    code, out, err = await acklog(dsn, "archive", "verify", **url)
    assert code == 1 and "CORRUPT events-1-20/events-1-20.parquet:" in out and "truncated" in out
    assert "1 of 1 archives corrupt" in one_line_error(err)
    code, out, err = await acklog(dsn, "archive", "restore", "events-1-20", **url)
    assert code == 1 and "events-1-20.parquet" in one_line_error(err)


async def test_a_create_killed_at_any_moment_claims_nothing_and_can_be_run_again(
    dsn: str, tmp_path: Path
) -> None:
    """SIGKILL at several moments of ``archive create`` (connecting, streaming rows, storing
    the file): every archive ``list`` then shows verifies, and the same create then works."""
    conn = await connect(dsn)
    try:
        for i in range(0, 100_000, 10_000):
            await write_batch(conn, [webhook(n) for n in range(i, i + 10_000)])
    finally:
        await conn.close()
    url = f"file://{tmp_path}/arch"
    env = {**os.environ, "DATABASE_URL": dsn, "ACKLOG_DATA_DIR": str(DATA_DIR)}
    env["ACKLOG_ARCHIVE_URL"] = url
    args = ["-m", "service.cli", "archive", "create", "--from", "1", "--to", "100000"]
    outcomes = []
    for delay in [0.5 + 0.15 * i for i in range(30)]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await asyncio.wait_for(proc.wait(), delay)  # the moment to kill it at
        except TimeoutError:
            proc.kill()
        outcomes.append(await proc.wait())
        code, out, err = await acklog(dsn, "archive", "verify", ACKLOG_ARCHIVE_URL=url)
        assert code == 0, out + err
        if "1 archives verified" in out:  # finished, or killed after its manifest was stored
            break
        assert "0 archives verified" in out, out
    print("exit codes of the killed creates:", outcomes)
    if outcomes[-1] != 0:
        # killed before or after the commit point: the archive is whole or absent, and a
        # create run again finds it whole (a taken name) or writes it
        code, out, err = await acklog(dsn, *args[2:], ACKLOG_ARCHIVE_URL=url)
        assert code == 0 or "exists already" in err, out + err
    code, out, err = await acklog(dsn, "archive", "verify", ACKLOG_ARCHIVE_URL=url)
    assert code == 0 and "1 archives verified" in out, out + err
