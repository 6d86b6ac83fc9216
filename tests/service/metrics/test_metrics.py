"""/metrics of a running acklog: every series the dashboard and alert rules use is exposed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from eventstore.events import StoredEvent
from eventstore.read import head
from projections.clock import utcnow
from projections.fold import decode
from projections.providers import PROVIDERS
from projections.rules.message_state import ANOMALIES
from service.core.database import POOL
from service.metrics import registry as metrics
from service.metrics import snapshot
from service.runtime.app import PROJECTOR, make_app
from tests.service.metrics.test_grafana import metric_names_used
from tests.support.apps import add_channel, settings
from tests.support.payloads import waha_ack, waha_outgoing

Client = Callable[..., Awaitable[TestClient]]


def value(text: str, sample: str, **labels: str) -> float:
    """One sample's value in an exposition (0 when absent): counters are process-wide."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return 0.0


def exposed(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        names.update(sample.name for sample in family.samples)
    return names


async def test_dashboard_and_rules_use_only_exposed_metrics(
    aiohttp_client: Client, dsn: str, pool: asyncpg.Pool
) -> None:
    client = await aiohttp_client(make_app(settings(run_projector=True), dsn))
    token = await add_channel(dsn, "w", "waha", sent_deadline_s=0.001)
    before = await (await client.get("/metrics")).text()
    for body in (waha_outgoing("M1"), waha_ack("M1", 1), waha_ack("M1", 3), b"{broken"):
        assert (await client.post(f"/hooks/w?token={token}", data=body)).status == 200
    assert (await client.post("/hooks/w?token=nope", data=b"{}")).status == 401
    await client.app[PROJECTOR].wait_for(await head(pool))
    snapshot.publish(await snapshot.take(client.app[POOL], client.app[PROJECTOR].clock()))

    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    names = exposed(text)
    used = metric_names_used()
    assert used, "the dashboard and rules reference acklog metrics"
    missing = sorted(n for n in used if n not in names)
    assert not missing, f"used by grafana/ but not exposed by acklog: {missing}"
    for sample, labels, delta in [
        (
            "acklog_webhooks_received_total",
            {"channel": "w", "outcome": "stored", "provider": "waha"},
            4,
        ),
        ("acklog_quarantined_events_total", {"provider": "waha", "reason": "invalid_json"}, 1),
        (
            "acklog_ack_latency_seconds_count",
            {"channel": "w", "provider": "waha", "stage": "read"},
            1,
        ),
    ]:
        assert value(text, sample, **labels) - value(before, sample, **labels) == delta, sample
    # sent then read, no delivered: a gauge of the messages that have it now
    rwd = {"channel": "w", "anomaly": "read_without_delivered"}
    assert value(text, "acklog_message_anomalies", **rwd) == 1
    assert value(text, "acklog_message_anomalies", channel="w", anomaly="ack_retried") == 0


async def test_metric_labels_are_bounded(aiohttp_client: Client, dsn: str) -> None:
    """No label value may carry a message id, a token or a phone number."""
    client = await aiohttp_client(make_app(settings(run_projector=True), dsn))
    token = await add_channel(dsn, "w", "waha")
    await client.post(f"/hooks/w?token={token}", data=waha_outgoing("SECRETID"))
    await client.post("/hooks/evil-channel-name?token=x", data=b"{}")
    await client.app[PROJECTOR].wait_for(1)
    text = await (await client.get("/metrics")).text()
    for needle in ("SECRETID", "11111111111", token, "evil-channel-name"):
        assert needle not in text


async def test_metrics_on_their_own_port(dsn: str) -> None:
    from service.http import server
    from tests.support.procs import free_port

    port = free_port()
    serving = await server.start(
        make_app(settings(), dsn),
        "127.0.0.1",
        0,
        metrics_port=port,
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert "acklog_webhooks_received_total" in await resp.text()
            async with session.post(f"http://127.0.0.1:{port}/hooks/x", data=b"{}") as resp:
                assert resp.status == 404, "webhooks are not served on the metrics port"
    finally:
        await serving.close()


async def test_known_channels_are_exported_at_zero_before_their_first_event(
    aiohttp_client: Client, dsn: str, pool: asyncpg.Pool
) -> None:
    """increase() cannot see a first sample: every counter an alert reads exists at 0."""
    client = await aiohttp_client(make_app(settings(), dsn))
    await add_channel(dsn, "quiet", "wamm")
    snapshot.publish(await snapshot.take(pool, utcnow()))
    text = await (await client.get("/metrics")).text()
    for stage in ("sent", "delivered"):
        labels = {"channel": "quiet", "stage": stage}
        assert ("acklog_missed_acks_total", labels) in samples(text)
    for outcome in ("stored", "unauthorized", "unavailable"):
        labels = {"provider": "wamm", "channel": "quiet", "outcome": outcome}
        assert ("acklog_webhooks_received_total", labels) in samples(text)
    quarantine = {"provider": "wamm", "reason": "invalid_json"}
    assert ("acklog_quarantined_events_total", quarantine) in samples(text)
    assert value(text, "acklog_missed_acks_total", channel="quiet", stage="sent") == 0
    for anomaly in ANOMALIES:
        labels = {"channel": "quiet", "anomaly": anomaly}
        assert ("acklog_message_anomalies", labels) in samples(text)


def samples(text: str) -> list[tuple[str, dict[str, str]]]:
    return [(s.name, s.labels) for f in text_string_to_metric_families(text) for s in f.samples]


@given(
    st.sampled_from((*PROVIDERS, "no-such-provider")),
    st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode)),
    st.sampled_from(("application/json", "application/x-www-form-urlencoded", None)),
)
def test_every_quarantine_reason_class_is_exported(
    provider: str, body: bytes, content_type: str | None
) -> None:
    """Whatever fails to decode, its label (the DecodeError's kind) is exported from start-up."""
    (decoded,) = decode([_stored(provider, body, content_type)])
    if decoded.error is not None:
        assert decoded.error_kind in metrics.QUARANTINE_REASONS


def _stored(provider: str, body: bytes, content_type: str | None) -> StoredEvent:
    return StoredEvent(
        position=1,
        received_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        channel="c",
        provider=provider,
        content_type=content_type,
        headers={},
        body=body,
        dedup_key="k",
        duplicate_of=None,
    )
