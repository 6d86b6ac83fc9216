"""Instance health derived from the log: status runs, debouncing, flapping, silence.

Webhooks go into a real log with the ``received_at`` each test chooses (our clock, the one
every rule runs on), the real projector folds them, and the answers are read at chosen
instants: through ``readmodel.health`` directly, the API and the metrics snapshot.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from eventstore import channels as registry
from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from projections.readmodel import health
from projections.rules.health import (
    DEBOUNCE,
    DEFAULT_SETTINGS,
    HealthSettings,
    Run,
    assess,
    debounced,
    next_run,
)
from projections.runner import Projector
from service.ingest import channels
from service.metrics import snapshot
from service.runtime.app import make_app
from tests.support.apps import settings
from tests.support.payloads import waha_ack, waha_outgoing

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
KEY = "test-key-0123456789"
Client = Callable[..., Awaitable[TestClient]]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def session(status: str) -> bytes:
    return json.dumps(
        {"event": "session.status", "session": "default", "payload": {"status": status}}
    ).encode()


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


async def feed(conn: asyncpg.Connection, dsn: str, *webhooks: tuple[float, bytes]) -> None:
    """Append WAHA webhooks to channel ``wa`` at T0 + seconds, and fold them."""
    events = [
        NewEvent(
            channel="wa",
            provider="waha",
            body=body,
            received_at=at(seconds),
            content_type="application/json",
        ).with_dedup_key(None)
        for seconds, body in webhooks
    ]
    await write_batch(conn, events)
    await Projector(dsn, batch_size=2).catch_up(conn)


# -- the rules, alone ----------------------------------------------------------------------


def test_a_run_changes_only_when_the_status_does() -> None:
    run, changed = next_run(None, "connected", at(0))
    assert changed and run == Run("connected", at(0), None)
    same, changed = next_run(run, "connected", at(30))
    assert not changed and same is run
    # connected held 100 s (>= DEBOUNCE): it becomes the stable status
    down, changed = next_run(run, "disconnected", at(100))
    assert changed and down == Run("disconnected", at(100), "connected")
    # disconnected held 1 s: the stable status stays connected
    up, _ = next_run(down, "connected", at(101))
    assert up == Run("connected", at(101), "connected")
    assert debounced(down, at(100) + DEBOUNCE - dt.timedelta(seconds=1)) == "connected"
    assert debounced(down, at(100) + DEBOUNCE) == "disconnected"


def _assess(run: Run | None, now: float, **kw: object) -> str:
    args: dict[str, object] = {
        "changes": 0,
        "last_out_at": None,
        "last_ack_at": None,
        "waiting_since": None,
        "settings": HealthSettings(),
    }
    args.update(kw)
    return assess(run, now=at(now), **args).health  # type: ignore[arg-type]


def test_the_health_rule() -> None:
    up = Run("connected", at(0))
    assert _assess(None, 0) == "unknown"
    assert _assess(up, 10) == "ok"
    assert _assess(Run("qr_required", at(0)), 10) == "not_connected"
    assert _assess(up, 10, changes=5) == "ok"
    assert _assess(up, 10, changes=6) == "flapping"
    assert _assess(Run("disconnected", at(0)), 10, changes=6) == "flapping"
    assert _assess(up, 1000, waiting_since=at(101)) == "ok"
    assert _assess(up, 1001, waiting_since=at(101)) == "silent_no_acks"
    assert _assess(up, 1001, waiting_since=at(101), changes=9) == "flapping"
    six_hours = 6 * 3600
    assert _assess(up, six_hours - 1) == "ok"
    assert _assess(up, six_hours) == "silent_no_traffic"
    assert _assess(up, six_hours + 5, last_ack_at=at(10)) == "ok"
    assert _assess(up, six_hours + 5, last_out_at=at(10)) == "ok"
    # silence is only ever claimed of an instance that says it is connected
    assert _assess(Run("stopped", at(0)), six_hours, waiting_since=at(0)) == "not_connected"


@given(
    st.lists(
        st.tuples(st.sampled_from(["connected", "stopped", "qr_required"]), st.integers(0, 200)),
        min_size=1,
        max_size=30,
    )
)
def test_the_run_replayed_in_log_order_is_the_run_of_the_whole_history(
    reports: list[tuple[str, int]],
) -> None:
    """However the history is cut into batches, continuing the run gives the same run."""
    t = 0
    history = []
    for status, gap in reports:
        t += gap
        history.append((status, at(t)))
    run: Run | None = None
    for status, when in history:
        run, _ = next_run(run, status, when)
    assert run is not None
    # restated from the definitions over the whole history
    changes = [i for i, (s, _) in enumerate(history) if i == 0 or history[i - 1][0] != s]
    last = changes[-1]
    assert (run.status, run.changed_at) == history[last]
    stable = None
    for a, b in itertools.pairwise(changes):
        if history[b][1] - history[a][1] >= DEBOUNCE:
            stable = history[a][0]
    assert run.stable_status == stable


# -- folded from a real log ----------------------------------------------------------------


async def test_flapping_with_the_debounced_status_beside_the_raw_one(
    conn: asyncpg.Connection, dsn: str
) -> None:
    await channels.add(
        conn, "wa", "waha", health=registry.HealthSettings(flap_changes=3, flap_window_s=300)
    )
    await feed(
        conn,
        dsn,
        (0, session("WORKING")),
        (30, session("WORKING")),  # a repeat: not a change
        (100, session("STOPPED")),
        (101, session("WORKING")),
        (102, session("STOPPED")),
    )
    changed = await conn.fetch(
        "SELECT changed FROM rm.instance_history WHERE channel = 'wa' ORDER BY position"
    )
    assert [r["changed"] for r in changed] == [True, False, True, True, True]
    h = (await health.channel_health(conn, at(110)))["wa"]
    assert (h.health, h.status, h.debounced_status, h.changes) == (
        "flapping",
        "stopped",
        "connected",
        4,
    )
    assert h.flapping and h.status_since == at(102)
    # the window moves on: the changes age out, and stopped has held long enough
    h = (await health.channel_health(conn, at(401)))["wa"]
    assert (h.health, h.debounced_status, h.changes, h.flapping) == (
        "not_connected",
        "stopped",
        1,
        False,
    )
    h = (await health.channel_health(conn, at(500)))["wa"]
    assert (h.health, h.changes) == ("not_connected", 0)


async def test_silent_while_connected_no_acks_then_no_traffic(
    conn: asyncpg.Connection, dsn: str
) -> None:
    await channels.add(conn, "wa", "waha")
    await feed(
        conn,
        dsn,
        (0, session("WORKING")),
        (5, waha_outgoing("m0")),
        (6, waha_ack("m0", 1)),
        (10, waha_outgoing("m1")),  # never acked
        (20, waha_outgoing("m2")),
    )
    h = (await health.channel_health(conn, at(909)))["wa"]
    assert (h.health, h.waiting_since, h.last_ack_at) == ("ok", at(10), at(6))
    h = (await health.channel_health(conn, at(910)))["wa"]
    assert (h.health, h.silent) == ("silent_no_acks", "no_acks")
    # one ack, even for another message, shows the webhooks work: m2 now waits on its own
    await feed(conn, dsn, (1000, waha_ack("m1", 2)))
    h = (await health.channel_health(conn, at(1010)))["wa"]
    assert (h.health, h.waiting_since) == ("ok", None)
    # nothing sent nor acked for the traffic threshold (six hours by default)
    h = (await health.channel_health(conn, at(1000 + 6 * 3600)))["wa"]
    assert (h.health, h.silent, h.last_out_at) == ("silent_no_traffic", "no_traffic", at(20))
    # the same instance reporting a disconnect is not silent, it is down
    await feed(conn, dsn, (1000 + 6 * 3600 + 1, session("STOPPED")))
    h = (await health.channel_health(conn, at(1000 + 6 * 3600 + 2)))["wa"]
    assert (h.health, h.silent) == ("not_connected", None)


async def test_defaults_of_the_migration_and_of_the_code_agree(conn: asyncpg.Connection) -> None:
    await channels.add(conn, "wa", "waha")
    assert (await health.load_settings(conn))["wa"] == DEFAULT_SETTINGS


@pytest.mark.parametrize(
    "bad",
    [
        registry.HealthSettings(flap_changes=0),
        registry.HealthSettings(flap_window_s=-1),
        registry.HealthSettings(silent_acks_s=0),
        registry.HealthSettings(silent_traffic_s=0),
    ],
)
async def test_thresholds_are_checked(
    conn: asyncpg.Connection, bad: registry.HealthSettings
) -> None:
    await channels.add(conn, "wa", "waha")
    with pytest.raises(registry.ChannelError, match="invalid channel settings"):
        await channels.update(conn, "wa", health=bad)
    await channels.update(conn, "wa", health=registry.HealthSettings(flap_changes=9))
    assert (await health.load_settings(conn))["wa"].flap_changes == 9


async def test_health_in_the_api_and_the_metrics(
    aiohttp_client: Client, conn: asyncpg.Connection, dsn: str
) -> None:
    await channels.add(conn, "wa", "waha", health=registry.HealthSettings(flap_changes=2))
    await channels.add(conn, "quiet", "wamm")
    await feed(
        conn,
        dsn,
        *((float(i), session("WORKING" if i % 2 else "STOPPED")) for i in range(5)),
    )
    client = await aiohttp_client(make_app(settings(api_key=KEY), dsn, clock=lambda: at(10)))
    auth = {"Authorization": f"Bearer {KEY}"}
    listing = await (await client.get("/v1/channels", headers=auth)).json()
    by_name = {c["name"]: c["health"] for c in listing["items"]}
    assert by_name["wa"]["health"] == "flapping"
    assert by_name["wa"]["changes_in_window"] == 5
    assert by_name["wa"]["thresholds"]["flap_changes"] == 2
    assert by_name["quiet"]["health"] == "unknown"
    status = await (await client.get("/v1/channels/wa/status", headers=auth)).json()
    assert status["health"] == by_name["wa"]
    assert status["health"]["debounced_status"] is None  # nothing has held a minute yet

    snap = await snapshot.take_from(conn, at(10))
    assert ("wa", "waha", "flapping", 5) in snap.health
    assert ("quiet", "wamm", "unknown", 0) in snap.health
    snapshot.publish(snap)
    text = await (await client.get("/metrics")).text()
    assert 'acklog_instance_health{channel="wa",health="flapping",provider="waha"} 1.0' in text
    assert 'acklog_instance_health{channel="wa",health="ok",provider="waha"} 0.0' in text
    assert 'acklog_instance_status_changes{channel="wa",provider="waha"} 5.0' in text
