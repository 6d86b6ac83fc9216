"""Gauges that need a query, served from a snapshot refreshed in the background.

A scrape never touches the database (invariant 11): the collector reads the last snapshot,
which a background task refreshes every few seconds with index-only queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator

import asyncpg
import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from projections.facts import InstanceStatus
from service import metrics

log = logging.getLogger(__name__)

INSTANCE_STATUSES: tuple[str, ...] = InstanceStatus.__args__  # type: ignore[attr-defined]
#: the acks a missed-ack deadline waits for
STAGES = ("sent", "delivered")


class Snapshot(msgspec.Struct, frozen=True):
    taken_at: dt.datetime | None = None
    head: int = 0
    position: int = 0
    lag_seconds: float = 0.0
    overdue: list[tuple[str, str, int]] = []
    missed: list[tuple[str, str, int]] = []
    instances: list[tuple[str, str, str]] = []
    #: every configured channel and its provider: their series are exported from start-up
    channels: list[tuple[str, str]] = []


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
        counts = {(channel, stage): 0 for channel, _ in snap.channels for stage in STAGES}
        counts.update({(channel, stage): n for channel, stage, n in snap.missed})
        for (channel, stage), n in counts.items():
            missed.add_metric([channel, stage], n)
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


COLLECTOR = SnapshotCollector()
metrics.register_collector(COLLECTOR)


async def take(pool: asyncpg.Pool, now: dt.datetime) -> Snapshot:
    async with pool.acquire() as conn:
        return await take_from(conn, now)


async def take_from(conn: asyncpg.Connection, now: dt.datetime) -> Snapshot:
    async with conn.transaction(readonly=True):
        head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
        position = await conn.fetchval(
            "SELECT coalesce(max(position), 0) FROM checkpoints WHERE name = 'messages'"
        )
        oldest = await conn.fetchval(
            "SELECT received_at FROM events WHERE position > $1 ORDER BY position LIMIT 1",
            position,
        )
        overdue = await conn.fetch(
            """SELECT channel, 'sent' AS stage, count(*) AS n FROM rm.messages
               WHERE state = 'sending' AND sent_due_at <= $1 GROUP BY channel
               UNION ALL
               SELECT channel, 'delivered', count(*) FROM rm.messages
               WHERE state = 'sent' AND delivered_due_at <= $1 GROUP BY channel""",
            now,
        )
        missed = await conn.fetch("SELECT channel, stage, n FROM rm.missed_counts")
        instances = await conn.fetch("SELECT channel, provider, status FROM rm.instance_status")
        known = await conn.fetch("SELECT name, provider FROM channels ORDER BY name")
    return Snapshot(
        taken_at=now,
        head=head,
        position=position,
        lag_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        overdue=[(r["channel"], r["stage"], r["n"]) for r in overdue],
        missed=[(r["channel"], r["stage"], r["n"]) for r in missed],
        instances=[(r["channel"], r["provider"], r["status"]) for r in instances],
        channels=[(r["name"], r["provider"]) for r in known],
    )


def publish(snap: Snapshot) -> None:
    COLLECTOR.current = snap
    metrics.log_head.set(snap.head)
    metrics.projection_position.labels("messages").set(snap.position)
    metrics.projection_lag_events.labels("messages").set(max(snap.head - snap.position, 0))
    metrics.projection_lag_seconds.labels("messages").set(snap.lag_seconds)
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
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                metrics.database_up.set(0)
                log.warning("metrics snapshot failed: %s", exc)
        await asyncio.sleep(interval)
