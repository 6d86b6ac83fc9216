"""Schemathesis against ``/openapi.json`` of the real app on a real socket and real PostgreSQL.

Every generated request carries the API key; every answer must be a non-5xx whose status,
content type and body the document describes. Negative cases (values the schema forbids)
must be refused with a 4xx. Path parameters are generated freely and also pinned to the
channels, messages and events the test ingested, so the 200 answers are exercised too.
The budget is fixed (``EXAMPLES`` per operation and mode) to keep ``make test`` quick.
"""

from __future__ import annotations

import asyncio
import collections
import time
import urllib.parse
from typing import Any

import aiohttp
import hypothesis
import requests
import schemathesis
from aiohttp.test_utils import TestServer
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from eventstore.pool import connect
from projections.runner import Projector
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings
from tests.support.samples import sample

KEY = "fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = {GenerationMode.POSITIVE: 50, GenerationMode.NEGATIVE: 20}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class Tally:
    """Requests sent and statuses seen, for the report and the no-5xx assertion."""

    def __init__(self) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()
        self.by_operation: collections.Counter[str] = collections.Counter()


async def seed(base: str, dsn: str) -> dict[str, list[Any]]:
    """Webhooks from the samples, POSTed and folded: the values path parameters pin to."""
    wa = await add_channel(dsn, "wa", "waha")
    shop = await add_channel(dsn, "shop", "wamm")
    q = await add_channel(dsn, "q", "qikchat")
    posts = [("wa", wa, "waha", n) for n in ("session_status_working.json", "message_text.json")]
    posts += [
        ("wa", wa, "waha", "message_ack_error_noweb.json"),
        ("wa", wa, "waha", "message_ack_status_broadcast_read.json"),
        ("shop", shop, "wamm", "msg_incoming_text.json"),
        ("shop", shop, "wamm", "msg_state_delivered.json"),
        ("q", q, "qikchat", "status_read.published.txt"),
        ("q", q, "qikchat", "status_read.json"),
    ]
    async with aiohttp.ClientSession(base) as client:
        for channel, token, provider, name in posts:
            body, ctype = sample(provider, name)
            resp = await client.post(
                f"/hooks/{channel}?token={token}", data=body, headers={"Content-Type": ctype}
            )
            assert resp.status == 200
        resp = await client.post(f"/hooks/shop?token={shop}", data=b"\xff\x00 binary")
        assert resp.status == 200
    conn = await connect(dsn)
    try:
        await Projector(dsn).catch_up(conn)
        keys = [r["key"] for r in await conn.fetch("SELECT key FROM rm.messages")]
        head = await conn.fetchval("SELECT max(position) FROM events")
    finally:
        await conn.close()
    return {"channel": ["wa", "shop", "q"], "message_id": keys, "position": [1, head, head + 1]}


def strategy(operation: Any, mode: GenerationMode, pinned: dict[str, list[Any]]) -> Any:
    """Generated cases; positive ones also with path parameters pinned to ingested values."""
    free = operation.as_strategy(generation_mode=mode)
    names = [p.name for p in operation.path_parameters]
    if not names or mode is not GenerationMode.POSITIVE:
        return free
    values = st.fixed_dictionaries({n: st.sampled_from(pinned[n]) for n in names})
    return st.one_of(
        free,
        values.flatmap(lambda v: operation.as_strategy(generation_mode=mode, path_parameters=v)),
    )


def run_operation(
    operation: Any,
    mode: GenerationMode,
    pinned: dict[str, list[Any]],
    session: requests.Session,
    tally: Tally,
) -> None:
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    if operation.path != "/openapi.json":  # the one public document
        checks.append(ignored_auth)

    @hypothesis.settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=strategy(operation, mode, pinned))
    def run(case: Any) -> None:
        response = case.call(session=session, headers=AUTH, timeout=10)
        if mode is GenerationMode.NEGATIVE and case.query:
            # a query parameter that serializes to nothing (a None or an empty list: requests
            # drops it) never reaches the server, so the request it sent may be valid: seen
            # once as "GET /v1/events?after=0 violates additionalProperties" answered 200
            sent = urllib.parse.parse_qs(
                urllib.parse.urlsplit(response.request.url).query, keep_blank_values=True
            )
            hypothesis.assume(all(str(k) in sent for k in case.query))
        tally.statuses[response.status_code] += 1
        tally.by_operation[operation.label] += 1
        case.validate_response(response, checks=checks, headers=AUTH)

    run()


def fuzz(base: str, pinned: dict[str, list[Any]], tally: Tally) -> list[str]:
    """Every operation in both modes; returns the failures (all of them, not the first)."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    session = requests.Session()
    failures: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"invalid operation in the document: {result.err()}")
            continue
        operation = result.ok()
        if operation.path == "/v1/stream":
            continue  # an endless text/event-stream: tests/service/feed/test_feed_stream.py
        for mode in EXAMPLES:
            try:
                run_operation(operation, mode, pinned, session, tally)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return failures


async def test_every_answer_conforms_to_the_document(dsn: str) -> None:
    server = TestServer(make_app(settings(api_key=KEY), dsn), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        pinned = await seed(base, dsn)
        tally = Tally()
        started = time.monotonic()
        # the server keeps running on this loop while schemathesis' blocking client runs aside
        failures = await asyncio.to_thread(fuzz, base, pinned, tally)
        took = time.monotonic() - started
    finally:
        await server.close()
    total = sum(tally.statuses.values())
    print(
        f"\nschemathesis: {total} requests in {took:.1f}s;"
        f" statuses {dict(sorted(tally.statuses.items()))};"
        f" per operation {dict(tally.by_operation)}"
    )
    assert not failures, "\n\n".join(failures)
    assert not [s for s in tally.statuses if s >= 500]
    assert len(tally.by_operation) == 11 and total >= 300  # schemathesis skips /openapi.json
    assert tally.statuses[200] and tally.statuses[400] and tally.statuses[404]
