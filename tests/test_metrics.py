"""/metrics of a running acklog: every series the dashboard and alert rules use is exposed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from eventstore.read import head
from service import snapshot
from service.app import make_app
from service.state import POOL, PROJECTOR
from tests.apps import add_channel, settings
from tests.payloads import waha_ack, waha_outgoing
from tests.test_grafana import metric_names_used

Client = Callable[..., Awaitable[TestClient]]


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
    assert (
        'acklog_webhooks_received_total{channel="w",outcome="stored",provider="waha"} 4.0' in text
    )
    assert 'acklog_quarantined_events_total{provider="waha",reason="invalid_json"} 1.0' in text
    assert 'acklog_ack_latency_seconds_count{channel="w",provider="waha",stage="read"} 1.0' in text


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
