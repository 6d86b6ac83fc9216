"""The feed's outbox projector against real PostgreSQL: canonical events, stable ids,
exactly-once with its checkpoint, the sweep, and independence from where batches are cut."""

from __future__ import annotations

import datetime as dt
import random
import re

import asyncpg
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import checkpoint
from eventstore.append import write_batch
from eventstore.events import NewEvent, StoredEvent
from projections import fold
from projections.facts import RANK
from projections.feed import derive, store
from projections.feed import events as fe
from projections.feed.outbox import FEED_CHECKPOINT, Outbox, rewind
from projections.runner import Projector
from tests.support import REPO
from tests.support.apps import add_channel
from tests.support.payloads import event, meta_incoming, meta_status


def instance_event(status: str) -> NewEvent:
    body = msgspec.json.encode(
        {"event": "session.status", "session": "default", "payload": {"status": status}}
    )
    return event(body, channel="w", provider="waha")


async def feed(conn: asyncpg.Connection) -> list[fe.FeedEvent]:
    return [fe.decode(s.body) for s in await store.after(conn, 0, limit=10_000)]


async def test_state_changes_in_order_with_previous_state(conn: asyncpg.Connection) -> None:
    await write_batch(
        conn,
        [
            event(meta_status("wamid.A", "sent")),
            event(meta_status("wamid.A", "sent")),  # a retry changes nothing
            event(meta_status("wamid.A", "delivered")),
            event(meta_status("wamid.A", "read")),
            event(meta_status("wamid.A", "delivered")),  # late: never backwards
            event(meta_incoming("wamid.IN")),
            event(meta_status("wamid.F", "failed", code=131026)),
        ],
    )
    outbox = Outbox("")  # no run(): steps only
    assert await outbox.catch_up(conn) == 7
    events = await feed(conn)
    changes = [e for e in events if isinstance(e, fe.MessageStateChanged)]
    a = [(e.previous_state, e.state) for e in changes if e.key == "wamid.A"]
    assert a == [(None, "sent"), ("sent", "delivered"), ("delivered", "read")]
    incoming = next(e for e in changes if e.key == "wamid.IN")
    assert (incoming.direction, incoming.state) == ("incoming", "received")
    failed = next(e for e in changes if e.key == "wamid.F")
    assert failed.state == "not_sent" and failed.failures[0].code == "131026"
    assert failed.failures[0].failure_class == "not_on_whatsapp"
    assert all(e.channel == "meta" and e.provider == "meta" for e in events)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    read_ = changes[2]
    assert set(read_.milestones) == {"sent", "delivered", "read"}
    assert read_.positions == [read_.milestones["read"].position]
    assert await checkpoint.load(conn, FEED_CHECKPOINT) == max(e.positions[0] for e in changes)


async def test_a_replay_yields_the_same_ids_and_no_duplicates(conn: asyncpg.Connection) -> None:
    await write_batch(conn, [event(meta_status(f"wamid.{i}", "sent")) for i in range(20)])
    outbox = Outbox("", batch_size=7)
    await outbox.catch_up(conn)
    first = {(e.id, e.positions[0]) for e in await feed(conn)}
    # a rebuild of the feed: its state and checkpoint go; the log is derived again
    await rewind(conn)
    await outbox.catch_up(conn)
    again = await feed(conn)
    assert {(e.id, e.positions[0]) for e in again} == first
    assert sum(isinstance(e, fe.MessageStateChanged) for e in again) == 20
    # a crash between read and commit: the rolled-back batch is derived again, same ids
    await write_batch(conn, [event(meta_status("wamid.0", "delivered"))])
    with pytest.raises(RuntimeError):
        async with conn.transaction():
            await outbox.step(conn)
            raise RuntimeError("crash before commit")
    await outbox.catch_up(conn)
    events = await feed(conn)
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    assert sum(isinstance(e, fe.MessageStateChanged) for e in events) == 21


async def test_instance_status_changes(conn: asyncpg.Connection) -> None:
    await write_batch(
        conn,
        [
            instance_event("STARTING"),
            instance_event("WORKING"),
            instance_event("WORKING"),
            instance_event("FAILED"),
        ],
    )
    await Outbox("").catch_up(conn)
    changes = [e for e in await feed(conn) if isinstance(e, fe.InstanceStatusChanged)]
    assert [(e.previous_status, e.status) for e in changes] == [
        (None, "starting"),
        ("starting", "connected"),
        ("connected", changes[2].status),
    ]  # the repeated WORKING changed nothing
    assert all(e.channel == "w" and e.provider == "waha" for e in changes)


async def test_sweep_reports_a_missed_ack_once_and_a_late_ack_too(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await add_channel(dsn, "meta", "meta", sent_deadline_s=5, delivered_deadline_s=10)
    now = dt.datetime.now(dt.UTC)
    await write_batch(
        conn,
        [
            event(meta_status("wamid.S", "sent"), at=now - dt.timedelta(seconds=60)),
            event(meta_status("wamid.L", "sent"), at=now - dt.timedelta(seconds=60)),
            event(meta_status("wamid.L", "delivered"), at=now - dt.timedelta(seconds=1)),
            event(meta_status("wamid.OK", "sent"), at=now),
        ],
    )
    outbox = Outbox("", clock=lambda: now)
    await outbox.catch_up(conn)
    assert await outbox.sweep(conn) == 1
    assert await outbox.sweep(conn) == 0  # once
    missed = [e for e in await feed(conn) if isinstance(e, fe.AckMissed)]
    assert {(e.key, e.stage, e.late_ack) for e in missed} == {
        ("wamid.S", "delivered", False),
        ("wamid.L", "delivered", True),
    }
    # the late delivered for S after its sweep: no second ack_missed for the same stage
    await write_batch(conn, [event(meta_status("wamid.S", "delivered"), at=now)])
    await outbox.catch_up(conn)
    missed = [e for e in await feed(conn) if isinstance(e, fe.AckMissed)]
    assert len(missed) == 2


async def test_final_states_agree_with_the_read_model(dsn: str, conn: asyncpg.Connection) -> None:
    rng = random.Random(3)
    batch = []
    for i in range(60):
        for status in ["sent", "delivered", "read"][: rng.randint(1, 3)]:
            batch.append(event(meta_status(f"wamid.{i}", status)))
    rng.shuffle(batch)
    await write_batch(conn, batch)
    await Outbox("", batch_size=13).catch_up(conn)
    await Projector(dsn, batch_size=17).catch_up(conn)
    last: dict[str, str] = {}
    for e in await feed(conn):
        if isinstance(e, fe.MessageStateChanged):
            if e.key in last:
                assert RANK[e.state] > RANK[last[e.key]]
                assert e.previous_state == last[e.key]
            last[e.key] = e.state
    rows = await conn.fetch("SELECT key, state FROM rm.messages")
    assert last == {r["key"]: r["state"] for r in rows}


# --- pure: where batches are cut changes nothing -----------------------------------------

_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _stored(i: int, e: NewEvent) -> StoredEvent:
    return StoredEvent(
        position=i + 1,
        received_at=_NOW + dt.timedelta(seconds=i),
        channel=e.channel,
        provider=e.provider,
        content_type=e.content_type,
        headers={},
        body=e.body,
        dedup_key=e.dedup_key,
        duplicate_of=None,
    )


def _derive_in_cuts(decoded: list[fold.Decoded], cuts: list[int]) -> list[fe.FeedEvent]:
    messages: dict[derive.Key, object] = {}
    missed: dict[derive.Key, object] = {}
    instances: dict[str, derive.Instance] = {}
    out: list[fe.FeedEvent] = []
    start = 0
    for end in [*sorted(set(cuts)), len(decoded)]:
        d = derive.derive(decoded[start:end], messages, missed, instances, {})  # type: ignore[arg-type]
        out += d.events
        messages.update(d.messages)
        missed.update(d.missed)
        instances.update(d.instances)
        start = end
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from(["sent", "delivered", "read", "failed"])),
        min_size=1,
        max_size=30,
    ),
    st.lists(st.integers(0, 30), max_size=5),
)
def test_any_batch_cut_derives_the_same_events(
    acks: list[tuple[int, str]], cuts: list[int]
) -> None:
    news = [event(meta_status(f"wamid.{k}", s, code=1 if s == "failed" else None)) for k, s in acks]
    decoded = fold.decode(_stored(i, e) for i, e in enumerate(news))
    cuts = [c for c in cuts if c <= len(decoded)]
    whole = _derive_in_cuts(decoded, [])
    assert _derive_in_cuts(decoded, cuts) == whole


# --- one owner: every feed.* statement lives in projections/feed --------------------------

_ROOT = REPO
_FEED_SQL = re.compile(
    r"(?<!``)\bfeed\.(messages|instances|events|subscriptions|secrets|attempts|dead_letters|replays)\b"
)


def test_no_sql_on_the_feed_outside_its_package() -> None:
    offenders = []
    for folder in ("service", "projections", "eventstore"):
        for path in sorted((_ROOT / folder).rglob("*.py")):
            if (_ROOT / "projections" / "feed") in path.parents:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _FEED_SQL.search(line):
                    offenders.append(f"{path.relative_to(_ROOT)}:{n}: {line.strip()}")
    assert offenders == []
    assert _FEED_SQL.search('"SELECT * FROM feed.events"')


async def test_an_anomaly_is_an_event_when_it_appears(conn: asyncpg.Connection) -> None:
    await write_batch(
        conn,
        [
            event(meta_status("wamid.R", "read")),  # read without delivered
            event(meta_status("wamid.R", "read")),  # retried: a second anomaly
        ],
    )
    await Outbox("").catch_up(conn)
    anomalies = [e for e in await feed(conn) if isinstance(e, fe.MessageAnomaly)]
    assert [a.anomaly for a in anomalies] == [
        "read_without_delivered",
        "ack_for_unseen",
        "ack_retried",
    ]
    assert anomalies[-1].anomalies == ["read_without_delivered", "ack_for_unseen", "ack_retried"]
