"""Retention's series on /metrics (service/metrics/snapshot.py): the oldest position kept,
rows and bytes per partition, the last run of each outcome, and the failure gauges the
alerts AcklogRetentionFailed and AcklogArchiveUnreachable use."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import generate_latest

from eventstore import partitions
from eventstore.pool import connect
from projections import retention
from service.metrics import snapshot
from service.metrics.registry import REGISTRY
from tests.projections.test_retention import folded_log
from tests.service.metrics.test_metrics import value


@pytest.fixture
async def small(server_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    async with folded_log(server_dsn) as dsn:
        conn = await connect(dsn)
        try:
            yield conn
        finally:
            await conn.close()


async def scrape(conn: asyncpg.Connection) -> str:
    snapshot.publish(await snapshot.take_from(conn, dt.datetime.now(dt.UTC)))
    return generate_latest(REGISTRY).decode()


async def test_retention_series(small: asyncpg.Connection, tmp_path: Path) -> None:
    await small.execute("ANALYZE events")  # the gauge shows the planner's count
    text = await scrape(small)
    assert value(text, "acklog_log_oldest_position") == 1
    assert value(text, "acklog_log_partition_rows", partition="events_p0") == 10
    assert value(text, "acklog_log_partition_bytes", partition="events_p0") > 8192
    assert value(text, "acklog_retention_last_run_failed") == 0

    done = await retention.run(small, f"file://{tmp_path}/archives", dt.timedelta(0))
    text = await scrape(small)
    kept = await retention.oldest_kept(small)
    assert kept > 100
    assert value(text, "acklog_log_oldest_position") == kept
    assert value(text, "acklog_log_partition_bytes", partition="events_p0") == 0  # gone
    first = (await partitions.list_partitions(small))[0].name
    assert value(text, "acklog_log_partition_bytes", partition=first) > 0
    assert done.finished_at is not None
    ok = value(text, "acklog_retention_last_run_timestamp_seconds", outcome="ok")
    assert ok == pytest.approx(done.finished_at.timestamp())
    assert value(text, "acklog_retention_last_run_freed", what="partitions") == done.partitions
    assert value(text, "acklog_retention_last_run_freed", what="events") == done.rows > 100
    assert value(text, "acklog_retention_last_run_freed", what="bytes") == done.bytes > 0

    (tmp_path / "blocked").write_text("a file where the store's directory should be")
    with pytest.raises(retention.RetentionError):
        await retention.run(small, f"file://{tmp_path}/blocked", dt.timedelta(0))
    text = await scrape(small)
    assert value(text, "acklog_retention_last_run_failed") == 1
    assert value(text, "acklog_retention_archive_unreachable") == 1
    assert value(text, "acklog_retention_failures_total") == 1
    assert value(text, "acklog_retention_last_run_timestamp_seconds", outcome="failed") > 0
