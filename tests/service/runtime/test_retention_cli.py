"""``acklog retention run`` as operators run it, in real processes on a real PostgreSQL:
killed -9 at every step and resumed by the next run, an unreachable object store (nothing
dropped, a clear error, exit 3), and two runs at once (one works, the other waits)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore import locks, partitions
from eventstore.archive import listing, verify
from eventstore.archive_store import ArchiveStore
from eventstore.pool import connect
from tests.projections.test_retention import folded_log
from tests.support.logs import new_database
from tests.support.procs import Process, free_port
from tests.support.procs import command as acklog
from tests.support.s3 import AWS

RUN = ("retention", "run", "--older-than", "0s")


@pytest.fixture
async def log(server_dsn: str) -> AsyncIterator[str]:
    """A folded log of ~150 events in partitions of 10, every ack deadline past."""
    async with folded_log(server_dsn) as dsn:
        yield dsn


async def where_every_position_is(dsn: str, store: ArchiveStore) -> tuple[set[int], set[int]]:
    """The positions in the log, and those in archives that verify."""
    conn = await asyncpg.connect(dsn)
    try:
        in_log = {r[0] for r in await conn.fetch("SELECT position FROM events")}
    finally:
        await conn.close()
    archived: set[int] = set()
    for m in (await listing(store)).archives:
        await verify(store, m)
        archived |= set(range(m.first_position, m.last_position + 1))
    return in_log, archived


async def closed_attached(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        nxt = await partitions.next_position(conn)
        return [p.name for p in await partitions.list_partitions(conn) if p.high <= nxt]
    finally:
        await conn.close()


@pytest.mark.parametrize("step", ["archive", "verify", "detach", "drop"])
async def test_killed_at_a_step_the_next_run_resumes_and_no_event_is_lost(
    log: str, tmp_path: Path, step: str
) -> None:
    url = {"ACKLOG_ARCHIVE_URL": f"file://{tmp_path}/archives"}
    store = ArchiveStore(url["ACKLOG_ARCHIVE_URL"])
    conn = await asyncpg.connect(log)
    try:
        every = set(range(1, await partitions.next_position(conn)))
    finally:
        await conn.close()

    code, out, _ = await acklog(log, *RUN, **url, ACKLOG_TEST_RETENTION_KILL_AT=step)
    assert code == -9, out
    assert out.splitlines()[-1].startswith(f"{step} events_p0")
    in_log, archived = await where_every_position_is(log, store)
    assert in_log | archived == every

    code, out, err = await acklog(log, *RUN, **url)
    assert code == 0, err
    assert "retention run 2: ok" in out, out
    in_log, archived = await where_every_position_is(log, store)
    assert in_log | archived == every
    assert await closed_attached(log) == []
    conn = await asyncpg.connect(log)
    try:
        runs = await conn.fetch("SELECT outcome, error FROM retention_runs ORDER BY id")
        dropped = await conn.fetchval(
            "SELECT count(*) FROM retention_partitions WHERE dropped_at IS NOT NULL"
        )
    finally:
        await conn.close()
    assert [r["outcome"] for r in runs] == ["failed", "ok"]
    assert "interrupted" in runs[0]["error"]
    assert dropped == len(every) // 10


async def test_an_unreachable_store_drops_nothing_and_says_so(log: str) -> None:
    before = await closed_attached(log)
    port = free_port()  # nothing listens there
    code, out, err = await acklog(
        log,
        *RUN,
        ACKLOG_ARCHIVE_URL="s3://acklog-archives/log",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        **AWS,
    )
    assert code == 3, out + err
    assert f"127.0.0.1:{port}" in err and "nothing unverified was dropped" in err
    assert await closed_attached(log) == before
    conn = await asyncpg.connect(log)
    try:
        run = await conn.fetchrow("SELECT outcome, error FROM retention_runs")
    finally:
        await conn.close()
    assert run["outcome"] == "failed" and "archive store" in run["error"]


async def test_a_store_that_cannot_be_written_drops_nothing(log: str, tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    (target / "archives").write_text("a file where the directory should be")
    before = await closed_attached(log)
    code, _, err = await acklog(log, *RUN, ACKLOG_ARCHIVE_URL=f"file://{target}/archives")
    assert code == 3 and "File exists" in err and "nothing unverified was dropped" in err
    assert await closed_attached(log) == before
    conn = await asyncpg.connect(log)
    try:
        assert await conn.fetchval("SELECT outcome FROM retention_runs") == "failed"
    finally:
        await conn.close()


async def test_two_runs_at_once_one_works_the_other_waits(log: str, tmp_path: Path) -> None:
    url = {"ACKLOG_ARCHIVE_URL": f"file://{tmp_path}/archives"}
    holder = await asyncpg.connect(log)
    try:
        # both start while the lock is taken, so both must wait for it
        await holder.execute("SELECT pg_advisory_lock($1)", locks.RETENTION)
        a = await Process(list(RUN), log, marker="waiting:", **url).start()
        b = await Process(list(RUN), log, marker="waiting:", **url).start()
        assert a.proc is not None
        assert os.sched_getscheduler(a.proc.pid) == os.SCHED_IDLE  # ingest goes first
        await holder.execute("SELECT pg_advisory_unlock($1)", locks.RETENTION)
        assert a.proc is not None and b.proc is not None
        async with asyncio.timeout(60):
            codes = await asyncio.gather(a.proc.wait(), b.proc.wait())
        await a.kill()
        await b.kill()
        assert codes == [0, 0], a.lines + b.lines
        outcomes = await holder.fetch("SELECT outcome FROM retention_runs ORDER BY id")
        drops = await holder.fetchval(
            "SELECT count(*) FROM retention_partitions WHERE dropped_at IS NOT NULL"
        )
    finally:
        await holder.close()
    assert sorted(r["outcome"] for r in outcomes) == ["nothing", "ok"]
    assert drops > 10
    assert await closed_attached(log) == []


def test_a_retention_run_is_idle_before_acklog_is_imported() -> None:
    """The entry point lowers a retention run's priority before importing acklog (~0.5 s of
    CPU that would otherwise compete with ingest at its own priority)."""
    probe = (
        "import os, sys, types\n"
        "sys.argv = ['acklog', 'retention', 'run']\n"
        "stub = types.ModuleType('service.cli.main')\n"
        "def main():\n"
        "    print(os.sched_getscheduler(0) == os.SCHED_IDLE, 'pyarrow' in sys.modules,"
        " 'asyncpg' in sys.modules)\n"
        "    return 0\n"
        "stub.main = main\n"
        "sys.modules['service.cli.main'] = stub\n"
        "from service.cli.launch import main as launch\n"
        "sys.exit(launch())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["True", "False", "False"], out


def test_serve_runs_the_retention_role_only_when_it_is_set() -> None:
    from service.core.config import from_env
    from service.runtime.roles import child_roles

    assert "retention" not in child_roles(from_env({}), projector=True)
    on = from_env({"ACKLOG_RETENTION": "90d"})
    assert on.retention == 90 * 86400 and on.retention_interval == 3600
    assert child_roles(on, projector=True)[-1] == "retention"


async def test_the_retention_role_runs_on_its_schedule(log: str, tmp_path: Path) -> None:
    role = Process(
        ["serve", "--role", "retention"],
        log,
        ACKLOG_RETENTION="0s",
        ACKLOG_RETENTION_INTERVAL="1s",
        ACKLOG_ARCHIVE_URL=f"file://{tmp_path}/archives",
    )
    await role.start()
    try:
        await role.wait_lines(lambda lines: any("dropped 16 partitions" in x for x in lines))
        # and again a second later, with nothing left to do
        await role.wait_lines(lambda lines: any("nothing, dropped 0" in x for x in lines))
    finally:
        await role.stop()
    assert role.proc is not None and role.proc.returncode == 0, role.lines
    assert await closed_attached(log) == []


async def test_status_and_a_run_without_a_duration(log: str, tmp_path: Path) -> None:
    code, _, err = await acklog(log, "retention", "run")
    assert code == 2 and "--older-than" in err and "ACKLOG_RETENTION" in err
    code, _, err = await acklog(log, "retention", "run", "--older-than", "ninety days")
    assert code == 2 and "90d" in err
    code, _, err = await acklog(log, *RUN, "--rate", "-5")
    assert code == 2 and "--rate" in err
    code, _, err = await acklog(log, *RUN, ACKLOG_RETENTION_RATE="fast")
    assert code == 1 and "ACKLOG_RETENTION_RATE must be a whole number" in err
    url = {"ACKLOG_ARCHIVE_URL": f"file://{tmp_path}/archives"}
    code, out, err = await acklog(log, "retention", "run", **url, ACKLOG_RETENTION="0s")
    assert code == 0, err
    code, out, err = await acklog(log, "retention", "status", **url)
    assert code == 0, err
    assert "oldest position kept: 161" in out
    assert "horizon: 166 (checkpoint feed at 165)" in out
    assert "events_p161  positions 161..170  5 rows" in out
    assert "ok  16 partitions  160 events" in out
    assert "dedup lookups: every partition (no floor" in out
    conn = await asyncpg.connect(log)
    try:
        assert await partitions.set_dedup_floor(conn, 86400.0) == 161
    finally:
        await conn.close()
    code, out, err = await acklog(log, "retention", "status", **url)
    assert code == 0, err
    assert "dedup lookups: from position 161" in out


async def test_acklog_serve_supervises_the_retention_role(log: str, tmp_path: Path) -> None:
    from tests.support.procs import serve

    proc = serve(
        log,
        free_port(),
        ACKLOG_RETENTION="0s",
        ACKLOG_RETENTION_INTERVAL="1h",
        ACKLOG_ARCHIVE_URL=f"file://{tmp_path}/archives",
    )
    await proc.start()
    try:
        assert any("feed, retention;" in line for line in proc.lines), proc.lines
        await proc.wait_lines(lambda lines: any("dropped 16 partitions" in x for x in lines))
    finally:
        await proc.stop()
    assert proc.proc is not None and proc.proc.returncode == 0, proc.lines[-20:]
    assert await closed_attached(log) == []


@pytest.fixture
def full_store(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 32 KiB tmpfs (needs mount rights: root, as in CI's container)."""
    import subprocess

    target = tmp_path / "small"
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


async def test_a_full_store_fails_the_run_and_drops_only_what_it_verified(
    log: str, full_store: Path
) -> None:
    url = f"file://{full_store}"
    conn = await asyncpg.connect(log)
    try:
        every = set(range(1, await partitions.next_position(conn)))
    finally:
        await conn.close()
    code, out, err = await acklog(log, *RUN, ACKLOG_ARCHIVE_URL=url)
    assert code == 3, out + err
    assert "No space left on device" in err and "nothing unverified was dropped" in err
    in_log, archived = await where_every_position_is(log, ArchiveStore(url))
    assert in_log | archived == every
    assert 0 < len(archived) < 160 and min(in_log) == max(archived) + 1


async def test_serve_refuses_retention_without_an_archive_store(log: str) -> None:
    code, out, err = await acklog(log, "serve", ACKLOG_RETENTION="90d")
    assert code == 1 and "ACKLOG_RETENTION needs ACKLOG_ARCHIVE_URL" in err, out + err


@given(st.text(max_size=12))
def test_a_duration_is_a_number_of_seconds_or_one_clear_error(text: str) -> None:
    from service.core.config import duration

    try:
        seconds = duration(text)
    except ValueError as exc:
        assert "duration" in str(exc)
    else:
        assert 0 <= seconds < float("inf")


@given(st.integers(0, 10**6), st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]))
def test_durations_read_as_written(n: int, unit: tuple[str, int]) -> None:
    from service.core.config import duration

    assert duration(f"{n}{unit[0]}") == n * unit[1] == duration(f" {n}{unit[0].upper()} ")


async def test_a_run_forgets_old_messages_when_the_read_model_has_a_retention(
    log: str, tmp_path: Path
) -> None:
    code, out, err = await acklog(
        log,
        *RUN,
        ACKLOG_ARCHIVE_URL=f"file://{tmp_path}/archives",
        ACKLOG_READMODEL_RETENTION="0s",
    )
    assert code == 0, err
    assert "read model: 72 messages forgotten" in out, out  # 60 sent, 12 received
    conn = await asyncpg.connect(log)
    try:
        assert await conn.fetchval("SELECT count(*) FROM rm.messages") == 0
    finally:
        await conn.close()


async def test_the_setting_sizes_a_new_logs_first_partitions_too(server_dsn: str) -> None:
    """``acklog migrate`` on a new database with ``ACKLOG_PARTITION_EVENTS=10``: the first
    partition ends at position 10 (before, sql/084 gave it the default million positions,
    and a first retention run on a small deployment found nothing closed to drop)."""

    async with new_database(server_dsn) as dsn:
        code, _, err = await acklog(dsn, "migrate", ACKLOG_PARTITION_EVENTS="10")
        assert code == 0, err
        conn = await connect(dsn)
        try:
            parts = await partitions.list_partitions(conn)
        finally:
            await conn.close()
        assert [(p.low, p.high) for p in parts][:2] == [(None, 11), (11, 21)]
