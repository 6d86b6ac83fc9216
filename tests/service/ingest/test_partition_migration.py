"""The log of 1,000,000 events becomes partitioned in place (sql/084, sql/085) while a real
ingest process answers webhooks: no 5xx, nothing acknowledged is lost, positions stay
gap-free; the longest webhook answer is the ingest pause the conversion cost.

The figures are printed (``pytest -s``) and quoted in docs/data.md ("The partitioned log").
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventstore import partitions
from eventstore.migrate import migrate
from eventstore.pool import connect
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings
from tests.support.logs import new_database, partitioned_log, sql_before
from tests.support.payloads import waha_outgoing
from tests.support.procs import Process, free_port

ROWS = int(os.environ.get("ACKLOG_PARTITION_TEST_ROWS", "1000000"))
#: bytes of padding in each old event's body (real webhooks are 0.5 to 2 KB)
PAD = int(os.environ.get("ACKLOG_PARTITION_TEST_PAD", "0"))


class Load:
    """Webhooks from ``workers`` senders until told to stop; each answer's time is kept."""

    def __init__(self, url: str, workers: int = 16) -> None:
        self.url = url
        self.workers = workers
        self.stop = asyncio.Event()
        self.acked: list[bytes] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.answers: list[tuple[float, float]] = []  # (sent, seconds to the answer)
        self._n = 0
        self._progress = asyncio.Condition()

    async def until_acked(self, n: int) -> None:
        async with asyncio.timeout(60), self._progress:
            await self._progress.wait_for(lambda: len(self.acked) >= n)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.workers)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            self._n += 1
            body = waha_outgoing(f"MIG{self._n:07d}")
            sent = time.monotonic()
            try:
                async with session.post(self.url, data=body) as resp:
                    await resp.read()
            except (aiohttp.ClientError, OSError):
                self.errors += 1
                continue
            self.answers.append((sent, time.monotonic() - sent))
            self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
            if resp.status == 200:
                self.acked.append(body)
                async with self._progress:
                    self._progress.notify_all()


@pytest.fixture
async def fresh_dsn(server_dsn: str) -> AsyncIterator[str]:
    async with new_database(server_dsn) as dsn:
        yield dsn


@pytest.fixture
async def small_dsn(server_dsn: str) -> AsyncIterator[str]:
    async with partitioned_log(server_dsn, 10) as dsn:
        yield dsn


async def test_a_million_event_log_is_partitioned_in_place_while_ingest_answers(
    fresh_dsn: str, tmp_path: Path
) -> None:
    dsn = fresh_dsn
    conn = await connect(dsn)
    server: Process | None = None
    try:
        await migrate(conn, sql_before(tmp_path, 84))
        started = time.monotonic()
        await conn.execute(
            "INSERT INTO events (received_at, channel, provider, headers, body, dedup_key)"
            " SELECT now(), 'old', 'waha', '{}', convert_to('{\"old\":' || i || ',\"pad\":\"' || repeat('x', $2) || '\"}', 'UTF8'),"
            " 'sha256:' || md5(i::text) FROM generate_series(1, $1) i",
            ROWS,
            PAD,
        )
        filled = time.monotonic() - started
        token = await add_channel(dsn, "w", "waha")
        port = free_port()
        # the ingest role alone, as `acklog serve` starts it: it does not migrate
        server = await Process(
            ["serve", "--role", "ingest", "--child", "--port", str(port)], dsn
        ).start()
        load = Load(f"http://127.0.0.1:{port}/hooks/w?token={token}")
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(60):
                while True:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                            if resp.status == 200:
                                break
                    except (aiohttp.ClientError, OSError):
                        pass
                    await asyncio.sleep(0.1)
        runner = asyncio.create_task(load.run())
        await load.until_acked(200)
        migrator = await connect(dsn)
        try:
            began = time.monotonic()
            applied = await migrate(migrator)
            ended = time.monotonic()
        finally:
            await migrator.close()
        acked_at_end = len(load.acked)
        await load.until_acked(acked_at_end + 200)  # ingest goes on after the swap
        load.stop.set()
        await runner
        await server.stop()
        server = None

        assert applied[:2] == [84, 85]  # and any later ones
        during = [s for sent, s in load.answers if began - 1 <= sent <= ended]
        longest = max(during)
        bad = {status: n for status, n in load.statuses.items() if status != 200}
        total = await conn.fetchval("SELECT count(*) FROM events")
        stored = {
            bytes(r["body"])
            for r in await conn.fetch("SELECT body FROM events WHERE channel = 'w'")
        }
        gaps = await conn.fetchval(
            "SELECT count(*) FROM (SELECT position - lag(position) OVER (ORDER BY position) AS d"
            " FROM events) s WHERE d <> 1"
        )
        parts = await partitions.list_partitions(conn)
        print(
            f"partitioning a log of {ROWS:,} events ({PAD} bytes of padding each) in place"
            f" (filled in {filled:.1f}s):"
            f" migration {ended - began:.2f}s, {len(during)} webhooks answered meanwhile,"
            f" longest answer {longest * 1000:.0f} ms (median {statistics.median(during) * 1000:.0f}"
            f" ms), statuses {load.statuses},"
            f" connection errors {load.errors}, acked {len(load.acked)},"
            f" partitions {[(p.name, p.high, p.rows) for p in parts]}"
        )
        assert not bad, f"non-200 answers during the conversion: {bad}"
        assert load.errors == 0
        assert not [b for b in load.acked if b not in stored], "an acknowledged webhook is lost"
        assert total == ROWS + len(load.acked)
        assert gaps == 0, "positions are not gap-free"
        assert parts[0].name == "events_p0"
        assert await conn.fetchval("SELECT count(*) FROM events_p0") >= ROWS
        assert longest < 2.0
    finally:
        if server is not None:
            await server.stop()
        await conn.close()


async def test_the_ingest_app_makes_partitions_ahead_of_the_setting_at_start(
    aiohttp_client: Any, small_dsn: str
) -> None:
    client = await aiohttp_client(make_app(settings(partition_events=100), small_dsn))
    conn = await connect(small_dsn)
    try:
        assert await conn.fetchval("SELECT size FROM events_partitioning") == 100
        # and the dedup floor (ACKLOG_DEDUP_WINDOW, 30 days): nothing is recent in an empty
        # log, so the lookups start at the next position
        assert await partitions.dedup_floor(conn) == 1
        parts = await partitions.list_partitions(conn)
        # the log's partitions of 10 (sql/084 with acklog.partition_events = 10), then two of
        # 100: the next position's partition and two more
        assert [(p.name, p.high) for p in parts] == [
            ("events_p0", 11),
            ("events_p11", 21),
            ("events_p21", 121),
            ("events_p121", 221),
        ]
        token = await add_channel(small_dsn, "w", "waha")
        for i in range(30):
            resp = await client.post(f"/hooks/w?token={token}", data=waha_outgoing(f"A{i}"))
            assert resp.status == 200
        assert await conn.fetchval("SELECT max(position) FROM events_p21") == 30
        again = await client.post(f"/hooks/w?token={token}", data=waha_outgoing("A7"))
        assert (await again.json())["duplicate_of"] == 8, "a retry is still found"
    finally:
        await conn.close()
