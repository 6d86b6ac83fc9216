"""Missed acks: deadlines on our clock, crossed once, cleared by the ack, recorded when late."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventstore.append import write_batch
from eventstore.pool import connect
from projections.rebuild import rebuild, verify
from projections.runner import Projector
from service.metrics import snapshot
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings
from tests.support.payloads import event, waha_ack, waha_outgoing

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


async def post(conn: asyncpg.Connection, body: bytes, seconds: float) -> None:
    await write_batch(conn, [event(body, channel="w", provider="waha", at=at(seconds))])


async def row(conn: asyncpg.Connection, message_id: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT state, missed_sent, missed_delivered, sent_due_at, sent_by, delivered_due_at"
        " FROM rm.messages WHERE key = $1",
        f"true_11111111111@c.us_{message_id}",
    )


async def counts(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    rows = await conn.fetch("SELECT channel, stage, n FROM rm.missed_counts")
    return {(r["channel"], r["stage"]): r["n"] for r in rows}


async def test_deadlines_crossed_once_and_cleared(dsn: str, conn: asyncpg.Connection) -> None:
    await add_channel(dsn, "w", "waha", sent_deadline_s=60, delivered_deadline_s=600)
    clock = Clock()
    projector = Projector(dsn, clock=clock)

    await post(conn, waha_outgoing("A"), 0)  # sending at T0
    await projector.catch_up(conn)
    clock.now = at(59)
    assert await projector.sweep(conn) == 0
    a = await row(conn, "A")
    assert (a["state"], a["missed_sent"], a["sent_due_at"]) == ("sending", False, at(60))

    clock.now = at(61)  # the sweep marks it at the moment it crosses
    assert await projector.sweep(conn) == 1
    assert await projector.sweep(conn) == 0, "marked once"
    assert (await row(conn, "A"))["missed_sent"] is True
    assert await counts(conn) == {("w", "sent"): 1}
    snap = await snapshot.take_from(conn, clock.now)
    assert snap.overdue == [("w", "sent", 1)]

    await post(conn, waha_ack("A", 1), 90)  # the late ack clears the wait, stays on record
    await projector.catch_up(conn)
    a = await row(conn, "A")
    assert (a["state"], a["missed_sent"], a["sent_by"]) == ("sent", True, at(90))
    assert a["delivered_due_at"] == at(690)
    assert await counts(conn) == {("w", "sent"): 1}, "a late ack is not counted twice"
    assert (await snapshot.take_from(conn, clock.now)).overdue == []

    # B: sent in time, delivered late, and no sweep ran in between: the fold records it late
    await post(conn, waha_outgoing("B"), 100)
    await post(conn, waha_ack("B", 1), 110)
    await post(conn, waha_ack("B", 2), 800)
    await projector.catch_up(conn)
    b = await row(conn, "B")
    assert (b["state"], b["missed_sent"], b["missed_delivered"]) == ("delivered", False, True)

    # C: acked in time on both stages, and out of order (delivered before sent)
    await post(conn, waha_outgoing("C"), 200)
    await post(conn, waha_ack("C", 2), 205)
    await post(conn, waha_ack("C", 1), 206)
    await projector.catch_up(conn)
    clock.now = at(5000)
    assert await projector.sweep(conn) == 1  # only A, still waiting for delivered
    c = await row(conn, "C")
    assert (c["state"], c["missed_sent"], c["missed_delivered"]) == ("delivered", False, False)
    expected = {("w", "sent"): 1, ("w", "delivered"): 2}
    assert await counts(conn) == expected

    # a restart changes nothing; a rebuild from the log (plus the same now) agrees
    assert await Projector(dsn, clock=clock).catch_up(conn) == 0
    assert await verify(dsn, clock=clock) == []
    await rebuild(dsn, clock=clock)
    assert await counts(conn) == expected
    snap = await snapshot.take_from(conn, clock.now)
    assert sorted(snap.missed) == [("w", "delivered", 2), ("w", "sent", 1)]
    assert snap.overdue == [("w", "delivered", 1)]


async def test_deadlines_use_our_clock_not_the_provider_time(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """The WAHA payload's own timestamp is from 2022; only received_at counts."""
    await add_channel(dsn, "w", "waha", sent_deadline_s=5)
    clock = Clock()
    projector = Projector(dsn, clock=clock)
    await post(conn, waha_outgoing("D"), 0)
    await post(conn, waha_ack("D", 1), 4)
    await projector.catch_up(conn)
    clock.now = at(1000)
    await projector.sweep(conn)
    assert (await row(conn, "D"))["missed_sent"] is False


async def test_metrics_and_api_agree_after_restart_and_rebuild(
    aiohttp_client: Any, dsn: str, conn: asyncpg.Connection
) -> None:
    await add_channel(dsn, "w", "waha", sent_deadline_s=60, delivered_deadline_s=600)
    clock = Clock()
    for i in range(6):  # three still sending, three sent but never delivered
        await post(conn, waha_outgoing(f"M{i}"), i)
        if i % 2:
            await post(conn, waha_ack(f"M{i}", 1), i + 1)
    projector = Projector(dsn, clock=clock)
    await projector.catch_up(conn)
    clock.now = at(5000)
    await projector.sweep(conn)

    async def observed() -> tuple[dict[str, int], dict[tuple[str, str], float]]:
        app = make_app(settings(api_key="k"), dsn, clock=clock)
        client = await aiohttp_client(app)
        overdue: dict[str, int] = {}
        resp = await client.get(
            "/v1/channels/w/messages?overdue=true&limit=500",
            headers={"Authorization": "Bearer k"},
        )
        for item in (await resp.json())["items"]:
            stage = "sent" if item["state"] == "sending" else "delivered"
            overdue[stage] = overdue.get(stage, 0) + 1
        snapshot.publish(await snapshot.take_from(conn, clock.now))
        text = await (await client.get("/metrics")).text()
        samples = {
            (s.name, s.labels["stage"]): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name in ("acklog_overdue_messages", "acklog_missed_acks_total")
        }
        await client.close()
        return overdue, samples

    expected_api = {"sent": 3, "delivered": 3}
    expected_metrics = {
        ("acklog_overdue_messages", "sent"): 3.0,
        ("acklog_overdue_messages", "delivered"): 3.0,
        ("acklog_missed_acks_total", "sent"): 3.0,
        ("acklog_missed_acks_total", "delivered"): 3.0,
    }
    assert await observed() == (expected_api, expected_metrics)
    await Projector(dsn, clock=clock).catch_up(conn)  # a restart: a new projector, same log
    assert await observed() == (expected_api, expected_metrics)
    await rebuild(dsn, clock=clock)
    assert await observed() == (expected_api, expected_metrics)
