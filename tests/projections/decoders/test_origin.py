"""Meta ``request_welcome`` and system messages are no customer's words: decoded as their
own kinds, given origin ``system``, filtered and counted apart (real app, real database)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from eventstore.pool import connect
from projections import providers
from projections.facts import ORIGINS, SYSTEM_KINDS, MessageObserved, origin_of
from service.metrics import registry as metrics
from tests.conftest import API_AUTH
from tests.support.apps import add_channel
from tests.support.payloads import meta_incoming, meta_status


def _meta(message: dict[str, Any]) -> bytes:
    """A Cloud API ``messages`` webhook carrying one element (the documented envelope)."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "123"},
        "contacts": [{"profile": {"name": "Kerry"}, "wa_id": "16505551234"}],
        "messages": [{"from": "16505551234", "timestamp": "1700000000", **message}],
    }
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
        }
    ).encode()


# Meta Cloud API webhooks reference, messages: type "request_welcome" (a user opened the
# chat for the first time) and type "system" (e.g. user_changed_number)
WELCOME = _meta({"id": "wamid.welcome", "type": "request_welcome"})
SYSTEM = _meta(
    {
        "id": "wamid.system",
        "type": "system",
        "system": {
            "body": "User A changed from 16505551234 to 16505559999",
            "wa_id": "16505559999",
            "type": "user_changed_number",
        },
    }
)


def _observed(body: bytes) -> MessageObserved:
    (fact,) = providers.decode("meta", body, "application/json", {})
    assert isinstance(fact, MessageObserved)
    return fact


def test_meta_decodes_them_as_their_own_kinds_with_origin_system() -> None:
    welcome, system = _observed(WELCOME), _observed(SYSTEM)
    assert (welcome.kind, welcome.origin) == ("request_welcome", "system")
    assert (system.kind, system.origin, system.text) == (
        "system",
        "system",
        "User A changed from 16505551234 to 16505559999",
    )
    assert _observed(meta_incoming("wamid.hi")).origin == "customer"


@given(st.sampled_from(["incoming", "outgoing"]), st.none() | st.text(max_size=20))
def test_the_origin_rule(direction: str, kind: str | None) -> None:
    origin = origin_of(direction, kind)
    if direction == "outgoing":
        assert origin is None
    else:
        assert origin == ("system" if kind in SYSTEM_KINDS else "customer")
        assert origin in ORIGINS


async def _get(api_client: TestClient, path: str, status: int = 200, **query: str) -> Any:
    resp = await api_client.get(path, params=query, headers=API_AUTH)
    assert resp.status == status, await resp.text()
    return await resp.json()


def _count(origin: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "acklog_incoming_messages_total",
        {"provider": "meta", "channel": "m", "origin": origin},
    )
    return value or 0.0


async def test_listed_filtered_and_counted_apart(
    api_client: TestClient, dsn: str, project: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "m", "meta")
    before = {o: _count(o) for o in ORIGINS}
    for body in (WELCOME, SYSTEM, meta_incoming("wamid.hi"), meta_status("wamid.out", "sent")):
        for _ in range(2):  # a retry is the same message
            resp = await api_client.post(
                f"/hooks/m?token={token}", data=body, headers={"Content-Type": "application/json"}
            )
            assert resp.status == 200
    await project()
    items = (await _get(api_client, "/v1/channels/m/messages"))["items"]
    assert {m["message_id"]: m["origin"] for m in items} == {
        "wamid.welcome": "system",
        "wamid.system": "system",
        "wamid.hi": "customer",
        "wamid.out": None,
    }
    system = await _get(api_client, "/v1/channels/m/messages", origin="system")
    assert sorted(m["message_id"] for m in system["items"]) == ["wamid.system", "wamid.welcome"]
    customer = await _get(api_client, "/v1/channels/m/messages", origin="customer")
    assert [m["message_id"] for m in customer["items"]] == ["wamid.hi"]
    detail = await _get(api_client, "/v1/channels/m/messages/wamid.welcome")
    assert (detail["origin"], detail["content"]["kind"]) == ("system", "request_welcome")
    bad = await _get(api_client, "/v1/channels/m/messages", 400, origin="bot")
    assert bad["parameter"] == "origin" and "customer, system" in bad["detail"]
    assert _count("system") - before["system"] == 2
    assert _count("customer") - before["customer"] == 1


async def test_the_origin_filter_reads_its_index(dsn: str) -> None:
    import datetime as dt

    from projections.readmodel import query

    conn = await connect(dsn)
    try:
        await conn.execute("SET enable_seqscan = off")
        sql, args = query.list_messages_sql(
            query.MessageFilter(channel="c", now=dt.datetime.now(dt.UTC), origin="system")
        )
        plan = json.dumps(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
        assert "messages_origin_idx" in plan, plan
    finally:
        await conn.close()
