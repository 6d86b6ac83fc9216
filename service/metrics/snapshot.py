"""Gauges that need a query, served from a snapshot refreshed in the background.

A scrape never touches the database (invariant 11): the collector reads the last snapshot,
which a background task refreshes every few seconds with index-only queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import asyncpg
import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventstore import channels as registry
from eventstore import partitions
from eventstore import retention as retention_records
from eventstore.errors import DRIVER_ERRORS
from eventstore.read import head, oldest_after
from projections import retention
from projections.facts import INSTANCE_STATUSES
from projections.failures import FAILURE_CLASSES
from projections.readmodel import checkpoints as live_checkpoints
from projections.readmodel import health, query
from projections.rules.deadlines import WAITS
from projections.rules.health import HEALTHS
from projections.rules.message_state import ANOMALIES
from service.metrics import registry as metrics

log = logging.getLogger(__name__)

#: the acks a missed-ack deadline waits for
STAGES: tuple[str, ...] = tuple(WAITS)


class Snapshot(msgspec.Struct, frozen=True):
    taken_at: dt.datetime | None = None
    head: int = 0
    #: how far every projection shard has folded (the least of their checkpoints)
    position: int = 0
    lag_seconds: float = 0.0
    #: (checkpoint, position) of each projection shard (one: ``messages``)
    shards: list[tuple[str, int]] = []
    overdue: list[tuple[str, str, int]] = []
    missed: list[tuple[str, str, int]] = []
    instances: list[tuple[str, str, str]] = []
    anomalies: list[tuple[str, str, int]] = []
    #: (channel, provider, failure class, n) failures ever recorded
    failures: list[tuple[str, str, str, int]] = []
    #: (channel, provider, health, connection changes within the channel's flap window)
    health: list[tuple[str, str, str, int]] = []
    #: every configured channel and its provider: their series are exported from start-up
    channels: list[tuple[str, str]] = []
    #: the oldest position the log still holds (retention drops partitions below it)
    oldest_position: int = 1
    #: (partition, rows, bytes) of every attached partition of the log
    partitions: list[tuple[str, int, int]] = []
    #: (outcome, finished at, epoch seconds) of the latest retention run of each outcome
    retention_runs: list[tuple[str, float]] = []
    retention_failures: int = 0
    #: 1 when the latest retention run failed, and 1 when it failed on the archive store
    retention_failed: int = 0
    archive_unreachable: int = 0
    #: what the latest finished retention run freed: (partitions, events, bytes)
    retention_freed: tuple[int, int, int] = (0, 0, 0)


def zero_filled(
    family: GaugeMetricFamily | CounterMetricFamily,
    known: Iterable[tuple[str, ...]],
    values: Iterable[tuple[Any, ...]],
) -> None:
    """Samples for every ``known`` label set at zero, then the counted ones (labels, n):
    series exist from the first scrape on, so alert rules see the first change as one."""
    counts: dict[tuple[str, ...], float] = dict.fromkeys(known, 0)
    for row in values:
        counts[tuple(str(v) for v in row[:-1])] = float(row[-1])
    for names, n in counts.items():
        family.add_metric(list(names), n)


class SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.current = Snapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.current
        overdue = GaugeMetricFamily(
            "acklog_overdue_messages",
            "Outgoing messages overdue right now, by the ack they wait for (sent, delivered).",
            labels=["channel", "stage"],
        )
        for channel, stage, n in snap.overdue:
            overdue.add_metric([channel, stage], n)
        yield overdue
        missed = CounterMetricFamily(
            "acklog_missed_acks",
            "Messages that ever crossed an ack deadline (derived from the log: survives"
            " restarts and rebuilds).",
            labels=["channel", "stage"],
        )
        # every known channel and stage from the first scrape on, at zero until it misses:
        # alert rules then see the first miss as a change, however young the Prometheus
        zero_filled(
            missed,
            [(channel, stage) for channel, _ in snap.channels for stage in STAGES],
            snap.missed,
        )
        yield missed
        connected = GaugeMetricFamily(
            "acklog_instance_connected",
            "1 when the channel's instance last reported connected, else 0.",
            labels=["channel", "provider"],
        )
        status = GaugeMetricFamily(
            "acklog_instance_status",
            "1 for the channel's current instance status, 0 for the others.",
            labels=["channel", "provider", "status"],
        )
        for channel, provider, current in snap.instances:
            connected.add_metric([channel, provider], 1 if current == "connected" else 0)
            for value in INSTANCE_STATUSES:
                status.add_metric([channel, provider, value], 1 if value == current else 0)
        yield connected
        yield status
        anomalies = GaugeMetricFamily(
            "acklog_message_anomalies",
            "Messages that have each anomaly now (read_without_delivered, ack_after_failure,"
            " ack_for_unseen, downgrade_suppressed, ack_retried), by channel.",
            labels=["channel", "anomaly"],
        )
        zero_filled(
            anomalies,
            [(channel, kind) for channel, _ in snap.channels for kind in ANOMALIES],
            snap.anomalies,
        )
        yield anomalies
        failures = CounterMetricFamily(
            "acklog_message_failures",
            "Failures recorded on outgoing messages, by failure class (each failure counted"
            " once; derived from the log: survives restarts and rebuilds).",
            labels=["channel", "provider", "class"],
        )
        # every configured channel's classes from the first scrape on, at zero (as above)
        zero_filled(
            failures,
            [(c, p, cls) for c, p in snap.channels for cls in FAILURE_CLASSES],
            snap.failures,
        )
        yield failures
        health_gauge = GaugeMetricFamily(
            "acklog_instance_health",
            "1 for the channel's instance health now (" + ", ".join(HEALTHS) + "), 0 for the"
            " others: derived from the log, see the README's Instance health.",
            labels=["channel", "provider", "health"],
        )
        changes = GaugeMetricFamily(
            "acklog_instance_status_changes",
            "Connection status changes within the channel's flap window (flapping above"
            " its flap_changes).",
            labels=["channel", "provider"],
        )
        for channel, provider, current, n in snap.health:
            for kind in HEALTHS:
                health_gauge.add_metric([channel, provider, kind], 1 if kind == current else 0)
            changes.add_metric([channel, provider], n)
        yield health_gauge
        yield changes
        yield from _retention_metrics(snap)


def _retention_metrics(snap: Snapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "acklog_log_oldest_position",
        "The oldest position the log still holds; retention archived and dropped those below.",
        value=snap.oldest_position,
    )
    rows = GaugeMetricFamily(
        "acklog_log_partition_rows",
        "Events in each partition of the log (the planner's count: exact after ANALYZE).",
        labels=["partition"],
    )
    size = GaugeMetricFamily(
        "acklog_log_partition_bytes",
        "Bytes on disk of each partition of the log (table, indexes, TOAST).",
        labels=["partition"],
    )
    for name, n, nbytes in snap.partitions:
        rows.add_metric([name], n)
        size.add_metric([name], nbytes)
    yield rows
    yield size
    last = GaugeMetricFamily(
        "acklog_retention_last_run_timestamp_seconds",
        "When the latest retention run of each outcome (ok, nothing, failed) finished.",
        labels=["outcome"],
    )
    for outcome, at in snap.retention_runs:
        last.add_metric([outcome], at)
    yield last
    freed = GaugeMetricFamily(
        "acklog_retention_last_run_freed",
        "What the latest finished retention run dropped from the log: partitions, events, bytes.",
        labels=["what"],
    )
    for what, n in zip(("partitions", "events", "bytes"), snap.retention_freed, strict=True):
        freed.add_metric([what], n)
    yield freed
    yield GaugeMetricFamily(
        "acklog_retention_last_run_failed",
        "1 when the latest retention run failed (see acklog retention status), else 0.",
        value=snap.retention_failed,
    )
    yield GaugeMetricFamily(
        "acklog_retention_archive_unreachable",
        "1 when the latest retention run failed on the archive store (unreachable, refused,"
        " full), else 0.",
        value=snap.archive_unreachable,
    )
    yield CounterMetricFamily(
        "acklog_retention_failures",
        "Retention runs that failed (nothing unverified was dropped).",
        value=snap.retention_failures,
    )


COLLECTOR = SnapshotCollector()
metrics.register_collector(COLLECTOR)


async def take(pool: asyncpg.Pool, now: dt.datetime) -> Snapshot:
    async with pool.acquire() as conn:
        return await take_from(conn, now)


async def take_from(conn: asyncpg.Connection, now: dt.datetime) -> Snapshot:
    async with conn.transaction(readonly=True):
        log_head = await head(conn)
        shards = await live_checkpoints.positions(conn)
        position = min(p for _, p in shards)
        oldest = await oldest_after(conn, position)
        figures = await query.figures(conn, now)
        known = await registry.providers(conn)
        healths = await health.channel_health(conn, now)
        parts = await partitions.list_partitions(conn, count=False)
        runs = await retention_records.last_finished(conn)
        latest = await retention_records.latest(conn)
        failed_runs = await retention_records.failures(conn)
    failed = latest is not None and latest.outcome == "failed"
    return Snapshot(
        taken_at=now,
        head=log_head,
        position=position,
        shards=shards,
        lag_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        overdue=figures.overdue,
        missed=figures.missed,
        instances=figures.instances,
        anomalies=figures.anomalies,
        failures=figures.failures,
        health=[
            (h.channel, known.get(h.channel) or h.provider or "unknown", h.health, h.changes)
            for h in healths.values()
        ],
        channels=list(known.items()),
        oldest_position=retention.oldest_of(parts),
        partitions=[(p.name, p.rows, p.bytes) for p in parts if p.attached],
        retention_runs=[
            (r.outcome, r.finished_at.timestamp()) for r in runs if r.finished_at is not None
        ],
        retention_failures=failed_runs,
        retention_failed=int(failed),
        retention_freed=(latest.partitions, latest.rows, latest.bytes) if latest else (0, 0, 0),
        archive_unreachable=int(
            failed and latest is not None and "archive store" in (latest.error or "")
        ),
    )


def publish(snap: Snapshot) -> None:
    COLLECTOR.current = snap
    metrics.log_head.set(snap.head)
    metrics.projection_position.labels("messages").set(snap.position)
    metrics.projection_lag_events.labels("messages").set(max(snap.head - snap.position, 0))
    metrics.projection_lag_seconds.labels("messages").set(snap.lag_seconds)
    if len(snap.shards) > 1:  # and each shard's, labelled with its checkpoint (messages.k/n)
        for name, position in snap.shards:
            metrics.projection_position.labels(name).set(position)
            metrics.projection_lag_events.labels(name).set(max(snap.head - position, 0))
    for channel, provider in snap.channels:
        metrics.export_channel(provider, channel)


async def refresh_forever(
    pool: asyncpg.Pool, interval: float, clock: Callable[[], dt.datetime]
) -> None:
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            try:
                async with asyncio.timeout(max(interval, 5.0)):
                    publish(await take(pool, clock()))
                metrics.database_up.set(1)
            except DRIVER_ERRORS as exc:
                metrics.database_up.set(0)
                log.warning("metrics snapshot failed: %s", exc)
        await asyncio.sleep(interval)
