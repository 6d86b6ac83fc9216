"""The failure vocabulary: a total classification, its tables, and where the class shows.

Real parts: sample webhooks POSTed to a real app, folded by the real projector into a real
PostgreSQL; the API, the ``?failure_class=`` filter and the metric read what the fold wrote.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from eventstore.pool import connect
from projections import failures
from projections.clock import utcnow
from projections.failures import FAILURE_CLASSES, TABLES, classify
from projections.providers import PROVIDERS
from service.metrics import snapshot
from tests.conftest import API_AUTH
from tests.support import REPO
from tests.support.apps import add_channel
from tests.support.samples import sample


@given(
    st.one_of(st.sampled_from(PROVIDERS), st.text(max_size=20)),
    st.text(max_size=40),
    st.one_of(st.none(), st.text(max_size=40), st.integers().map(str)),
    st.one_of(st.none(), st.text(max_size=2000)),
)
def test_classification_is_total(
    provider: str, raw: str, code: str | None, text: str | None
) -> None:
    """Any provider, status, code and text: a class of the vocabulary, never an exception."""
    assert classify(provider, raw, code, text) in FAILURE_CLASSES


@given(st.sampled_from(PROVIDERS), st.text(max_size=40), st.text(max_size=200))
def test_a_known_code_wins_over_any_text(provider: str, raw: str, text: str) -> None:
    for code, cls in TABLES.get(provider, failures._NONE).codes.items():
        assert classify(provider, raw, code, text) == cls


def test_every_table_names_its_sources_and_only_known_classes() -> None:
    for provider, table in TABLES.items():
        assert provider in PROVIDERS, provider
        assert table.sources, provider
        values = [*table.codes.values(), *table.statuses.values(), *(r[2] for r in table.ranges)]
        assert set(values) <= set(FAILURE_CLASSES), provider


@pytest.mark.parametrize(
    ("provider", "raw", "code", "text", "expected"),
    [
        ("meta", "failed", "131026", "Message undeliverable", "not_on_whatsapp"),
        ("meta", "failed", "131047", "Re-engagement message", "outside_window"),
        ("meta", "failed", "131049", None, "frequency_capped"),
        ("meta", "failed", "131050", None, "opted_out"),
        ("meta", "failed", "130472", "User's number is part of an experiment", "experiment"),
        ("meta", "failed", "132015", None, "content_rejected"),
        ("meta", "failed", "132099", None, "content_rejected"),  # the template range
        ("meta", "failed", "230", None, "configuration"),  # the permission range
        (
            "meta",
            "failed",
            "131014",
            "Request for url https://URL.jpg failed with error: 404",
            "media_error",
        ),
        ("meta", "failed", "999999", "no rule knows this", "unknown"),
        ("qikchat", "failed", "131048", None, "rate_limited"),
        ("twilio", "undelivered", "63016", None, "outside_window"),
        ("twilio", "failed", "63018", None, "rate_limited"),
        ("twilio", "failed", "21610", None, "opted_out"),
        ("twilio", "failed", "30005", None, "not_on_whatsapp"),
        ("twilio", "failed", "63049", None, "frequency_capped"),
        ("greenapi", "noAccount", "noAccount", None, "not_on_whatsapp"),
        ("greenapi", "yellowCard", "yellowCard", None, "account_restricted"),
        ("greenapi", "failed", "SWE004", "the number of participants exceeded", "invalid_request"),
        ("greenapi", "failed", "failed", None, "unknown"),
        ("zapi", "MessageStatusCallback", None, "Phone number does not exist", "not_on_whatsapp"),
        ("whatsgate", "error", "500", "rate-overlimit", "rate_limited"),
        ("evolution", "ERROR", None, None, "unknown"),
        ("waha", "ERROR", None, None, "unknown"),
    ],
)
def test_the_tables(
    provider: str, raw: str, code: str | None, text: str | None, expected: str
) -> None:
    assert classify(provider, raw, code, text) == expected


# -- end to end ----------------------------------------------------------------------------


async def _post(
    api_client: TestClient, channel: str, token: str, provider: str, name: str, sid: bytes = b""
) -> None:
    body, ctype = sample(provider, name)
    if sid:  # another message: the two Twilio samples share their MessageSid
        body = body.replace(b"SMe287d7109a5a925f182f0e07fe5b223b", sid)
    resp = await api_client.post(
        f"/hooks/{channel}?token={token}", data=body, headers={"Content-Type": ctype}
    )
    assert resp.status == 200, await resp.text()


async def _get(api_client: TestClient, path: str, status: int = 200, **query: str) -> Any:
    resp = await api_client.get(path, params=query, headers=API_AUTH)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def test_the_class_in_answers_filter_and_metric(
    api_client: TestClient, dsn: str, pool: asyncpg.Pool, project: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "tw", "twilio")
    for _ in range(2):  # a retry counts once
        await _post(api_client, "tw", token, "twilio", "status_failed_63018_rate_limit.json")
        await _post(api_client, "tw", token, "twilio", "status_failed_21610_stop.json", b"SMother")
    meta = await add_channel(dsn, "m", "meta")
    await _post(api_client, "m", meta, "meta", "status_failed_130472.json")
    await project()

    page = await _get(api_client, "/v1/channels/tw/messages")
    by_class = {m["failure_class"] for m in page["items"]}
    assert by_class == {"rate_limited", "opted_out"}
    limited = await _get(api_client, "/v1/channels/tw/messages", failure_class="rate_limited")
    assert [m["failure_class"] for m in limited["items"]] == ["rate_limited"]
    none = await _get(api_client, "/v1/channels/tw/messages", failure_class="experiment")
    assert none["items"] == []

    detail = await _get(api_client, limited["items"][0]["link"])
    assert detail["failure_class"] == "rate_limited"
    assert [(f["code"], f["failure_class"]) for f in detail["failures"]] == [
        ("63018", "rate_limited")
    ]

    bad = await _get(api_client, "/v1/channels/tw/messages", 400, failure_class="spam")
    assert bad["parameter"] == "failure_class"
    assert all(c in bad["detail"] for c in FAILURE_CLASSES)

    doc = await (await api_client.get("/openapi.json")).json()
    params = doc["paths"]["/v1/channels/{channel}/messages"]["get"]["parameters"]
    (param,) = [p for p in params if p["name"] == "failure_class"]
    assert param["schema"]["enum"] == list(FAILURE_CLASSES)

    snapshot.publish(await snapshot.take(pool, utcnow()))
    text = await (await api_client.get("/metrics")).text()
    found = {
        (s.labels["channel"], s.labels["provider"], s.labels["class"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "acklog_message_failures_total"
    }
    assert found[("tw", "twilio", "rate_limited")] == 1
    assert found[("tw", "twilio", "opted_out")] == 1
    assert found[("m", "meta", "experiment")] == 1
    assert found[("tw", "twilio", "media_error")] == 0  # every class of a known channel
    assert {k[2] for k in found} == set(FAILURE_CLASSES)


async def test_the_failure_class_filter_reads_its_index(dsn: str) -> None:
    from projections.readmodel import query

    conn = await connect(dsn)
    try:
        await conn.execute("SET enable_seqscan = off")
        sql, args = query.list_messages_sql(
            query.MessageFilter(channel="c", now=utcnow(), failure_class="opted_out")
        )
        plan = json.dumps(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
        assert "messages_failure_class_idx" in plan, plan
    finally:
        await conn.close()


async def test_a_message_with_two_failures_has_the_class_of_the_first(
    api_client: TestClient, dsn: str, project: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "tw", "twilio")
    await _post(api_client, "tw", token, "twilio", "status_failed_63018_rate_limit.json")
    await _post(api_client, "tw", token, "twilio", "status_failed_21610_stop.json")
    await project()
    (item,) = (await _get(api_client, "/v1/channels/tw/messages"))["items"]
    assert item["failure_class"] == "rate_limited"
    detail = await _get(api_client, item["link"])
    assert [f["failure_class"] for f in detail["failures"]] == ["rate_limited", "opted_out"]
    assert (await _get(api_client, "/v1/channels/tw/messages", failure_class="opted_out"))[
        "items"
    ] == []


def test_the_docs_show_every_table_row() -> None:
    """docs/failures.md (the failure-classes page) lists every class and every code row."""

    page = (REPO / "docs" / "failures.md").read_text()
    for provider, table in TABLES.items():  # every provider's table, a new one's too
        for code, cls in table.codes.items():
            assert f"| `{code}` | `{cls}` |" in page, (provider, code)
    for cls in FAILURE_CLASSES:
        assert f"| `{cls}` |" in page, cls
