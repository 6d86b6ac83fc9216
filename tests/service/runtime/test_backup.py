"""``acklog backup`` / ``restore`` and an upgrade from the previous release, as operators run them:
real ``acklog`` processes on a real PostgreSQL, webhooks through a real ``acklog serve``."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from eventstore.append import write_batch
from eventstore.migrate import load, migrate
from eventstore.pool import connect, encode_json
from tests.conftest import with_database
from tests.projections.fold.test_projector import traffic
from tests.support.apps import add_channel
from tests.support.procs import ROOT, free_port, serve
from tests.support.procs import command_output as acklog

#: the previous release: its migrations make the database the upgrade test starts from
PREVIOUS_RELEASE = "caf4efa"

#: acklog's tables that are the truth (a restore must give them back row for row)
TRUTH = {
    "events": "position",
    "channels": "name",
    "channel_tokens": "id",
    "channel_secrets": "id",
    "feed.subscriptions": "id",
    "feed.secrets": "id",
    "api_keys": "name",
}
#: derived, but restored as they were (subscribers know their ids and seqs)
DERIVED = {"feed.events": "seq", "checkpoints": "name", "rm.messages": "channel, key"}


@pytest.fixture
async def empty_db(server_dsn: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """``await empty_db()``: a new database with nothing in it (no migration applied)."""
    made: list[str] = []

    async def make() -> str:
        name = f"acklog_bk_{os.getpid()}_{len(made)}"
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        made.append(name)
        return with_database(server_dsn, name)

    yield make
    admin = await asyncpg.connect(server_dsn)
    try:
        for name in made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def digest(dsn: str, table: str, order: str) -> tuple[int, str]:
    """Rows and a SHA-256 over every column of every row of ``table``, in ``order``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT row_to_json(t)::text AS r FROM {table} t ORDER BY {order}")
    finally:
        await conn.close()
    h = hashlib.sha256()
    for r in rows:
        h.update(r["r"].encode() + b"\n")
    return len(rows), h.hexdigest()


async def post(port: int, path: str, body: bytes) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}{path}", data=body) as resp,
    ):
        await resp.read()
        return resp.status


def wamm(n: int) -> bytes:
    return b'{"event":"msg_state","msg_data":{"msg_id":%d,"state":"delivered"}}' % n


async def test_backup_then_restore_into_a_fresh_database(
    dsn: str, empty_db: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    await add_channel(dsn, "signed", "meta", secrets_=["meta-app-secret"])
    code, out = await acklog(dsn, "subscriptions", "add", "crm", "--url", "http://127.0.0.1:9/hook")
    assert code == 0, out
    code, out = await acklog(dsn, "keys", "add", "ci")
    assert code == 0, out
    port = free_port()
    server = await serve(dsn, port, ACKLOG_FEED_POLL="0.2").start()
    try:
        for n in range(30):
            assert await post(port, f"/hooks/shop?token={token}", wamm(n)) == 200
    finally:
        await server.stop()
    conn = await connect(dsn)
    try:
        await write_batch(conn, traffic(40, seed=4))
    finally:
        await conn.close()
    code, out = await acklog(dsn, "rebuild")
    assert code == 0, out

    dump = tmp_path / "acklog.dump"
    code, out = await acklog(dsn, "backup", str(dump))
    assert code == 0 and "written to" in out and "pg_dump" in out, out
    print(out.strip())
    assert dump.stat().st_size > 0 and oct(dump.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(tmp_path) == ["acklog.dump"], "no temporary file left"

    target = await empty_db()
    code, out = await acklog(target, "restore", str(dump))
    assert code == 0 and "restored" in out and "no migration pending" in out, out
    print(out.strip())
    for table, order in {**TRUTH, **DERIVED}.items():
        assert await digest(target, table, order) == await digest(dsn, table, order), table
    assert (await digest(target, "events", "position"))[0] == 30 + len(traffic(40, seed=4))
    code, out = await acklog(target, "verify")
    assert code == 0 and "equal a rebuild" in out, out

    # the old token still authenticates against the restored database
    port = free_port()
    server = await serve(target, port).start()
    try:
        assert await post(port, f"/hooks/shop?token={token}", wamm(99)) == 200
        assert await post(port, "/hooks/shop?token=wrong", wamm(100)) == 401
    finally:
        await server.stop()
    assert (await digest(target, "events", "position"))[0] == 31 + len(traffic(40, seed=4))

    # a database holding acklog's data is never overwritten
    code, out = await acklog(target, "restore", str(dump))
    assert code == 2 and "holds acklog data" in out and "events" in out, out
    code, out = await acklog(dsn, "restore", str(dump))
    assert code == 2 and "holds acklog data" in out, out
    migrated = await empty_db()
    code, out = await acklog(migrated, "migrate")
    assert code == 0, out
    code, out = await acklog(migrated, "restore", str(dump))
    assert code == 2 and "already has acklog tables" in out, out


async def test_usage_errors_and_an_unreachable_database(
    dsn: str, empty_db: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    code, out = await acklog(dsn, "restore", str(tmp_path / "missing.dump"))
    assert code == 2 and "no backup file" in out, out
    code, out = await acklog(await empty_db(), "backup", str(tmp_path / "x.dump"))
    assert code == 2 and "no acklog log" in out, out
    code, out = await acklog(dsn, "backup", str(tmp_path / "no" / "x.dump"))
    assert code == 2 and "no directory" in out, out

    # a file that is not a backup: pg_restore refuses it, the target stays empty
    bogus = tmp_path / "bogus.dump"
    bogus.write_bytes(b"not a dump")
    target = await empty_db()
    code, out = await acklog(target, "restore", str(bogus))
    assert code == 1 and "pg_restore failed" in out and "nothing changed" in out, out
    conn = await asyncpg.connect(target)
    try:
        assert await conn.fetchval("SELECT to_regclass('events')") is None
    finally:
        await conn.close()

    closed = f"postgresql://acklog@127.0.0.1:{free_port()}/acklog"
    for command in ("backup", "restore"):
        code, out = await acklog(closed, command, str(bogus), ACKLOG_DB_WAIT="0.5")
        assert code == 3 and "cannot reach PostgreSQL" in out, out
    assert os.listdir(tmp_path) == ["bogus.dump"]


def previous_release_sql(into: Path) -> None:
    """Write the previous release's migrations into ``into`` (skip when git or the commit is
    missing, except in CI, where the clone has its history and the test must run)."""
    reason = None
    if shutil.which("git") is None:
        reason = "git is not installed"
    elif (
        subprocess.run(
            ["git", "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
        ).returncode
        != 0
    ):
        reason = f"commit {PREVIOUS_RELEASE} (the previous release) is not in this clone"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI needs a full clone to test the upgrade")
        pytest.skip(reason)
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", PREVIOUS_RELEASE, "sql/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in names:
        text = subprocess.run(
            ["git", "show", f"{PREVIOUS_RELEASE}:{name}"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        (into / Path(name).name).write_bytes(text)


def previous_release_fold(dsn: str, into: Path) -> None:
    """Fold the log into the read models with the previous release's own projector: its code
    (``git archive``) first on the path of a process of its own, as that release would have
    left the database (today's projector expects today's schema)."""
    tree = subprocess.run(
        ["git", "archive", PREVIOUS_RELEASE, "eventstore", "projections", "service"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir()
    with tarfile.open(fileobj=io.BytesIO(tree)) as tar:
        tar.extractall(into, filter="data")
    fold = (
        "import asyncio, sys\n"
        "import asyncpg\n"
        "import projections.runner\n"
        "assert projections.runner.__file__.startswith(sys.argv[2]), projections.runner.__file__\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1])\n"
        "    try:\n"
        "        print(await projections.runner.Projector(sys.argv[1]).catch_up(conn))\n"
        "    finally:\n"
        "        await conn.close()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", fold, dsn, str(into)],
        cwd=into,
        env={**os.environ, "PYTHONPATH": str(into)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and int(out.stdout.split()[-1]) > 0, out


async def test_upgrade_from_the_previous_release(
    empty_db: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    old_sql = tmp_path / "sql"
    old_sql.mkdir()
    previous_release_sql(old_sql)
    old_versions = [m.version for m in load(old_sql)]
    new_versions = [m.version for m in load()]
    assert set(old_versions) < set(new_versions), "this release adds migrations"

    db = await empty_db()
    conn = await connect(db)
    try:
        assert await migrate(conn, old_sql) == old_versions
        # data as the previous release wrote it: a channel and its token, events appended by
        # its append_events(event_row[]), folded into its read models
        token = "ack_previous_release_token"
        await conn.execute("INSERT INTO channels (name, provider) VALUES ('shop', 'wamm')")
        await conn.execute(
            "INSERT INTO channel_tokens (channel, token_hash) VALUES ('shop', $1)",
            hashlib.sha256(token.encode()).digest(),
        )
        rows = [
            (
                e.received_at,
                e.channel,
                e.provider,
                e.content_type,
                encode_json(e.headers),
                e.body,
                e.dedup_key,
            )
            for e in traffic(60, seed=8)
        ]
        await conn.fetch("SELECT * FROM append_events($1::event_row[])", rows)
    finally:
        await conn.close()
    previous_release_fold(db, tmp_path / "previous")
    before = await digest(db, "events", "position")

    code, out = await acklog(db, "migrate")
    assert code == 0 and "migrations applied" in out, out
    conn = await asyncpg.connect(db)
    try:
        applied = [
            r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        ]
    finally:
        await conn.close()
    assert applied == new_versions
    assert await digest(db, "events", "position") == before, "the log is untouched, byte for byte"
    # the read models as the previous release folded them: equal, or (when a decoder or the
    # fold changed since, as here) told apart from a rebuild, which the upgrade then runs
    code, out = await acklog(db, "verify")
    assert (code == 0 and "equal a rebuild" in out) or (
        code == 1 and "differ from a rebuild" in out
    ), out
    code, out = await acklog(db, "rebuild")
    assert code == 0, out
    code, out = await acklog(db, "verify")
    assert code == 0 and "equal a rebuild" in out, out

    port = free_port()
    server = await serve(db, port).start()
    try:
        assert await post(port, f"/hooks/shop?token={token}", wamm(7)) == 200
    finally:
        await server.stop()
    count, _ = await digest(db, "events", "position")
    assert count == before[0] + 1
