"""The refusals before the append, each with its JSON error and its counted outcome: a body
too slow (408) or too large (413), an unknown channel (404), and nothing stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from eventstore import read as reader
from service.metrics import registry as metrics
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings

Client = Callable[..., Awaitable[TestClient]]


def counted(provider: str, channel: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "acklog_webhooks_received_total",
        {"provider": provider, "channel": channel, "outcome": outcome},
    )
    return value or 0.0


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str) -> TestClient:
    return await aiohttp_client(make_app(settings(read_timeout=0.5, max_body=1000), dsn))


async def test_a_body_slower_than_the_read_timeout_is_408(
    client: TestClient, dsn: str, pool: asyncpg.Pool
) -> None:
    token = await add_channel(dsn, "slow", "wamm")
    before = counted("wamm", "slow", "bad_request")

    async def dribble() -> AsyncIterator[bytes]:
        yield b'{"a":'
        await asyncio.sleep(1.5)  # past the 0.5 s read timeout
        yield b"1}"

    resp = await client.post(f"/hooks/slow?token={token}", data=dribble())
    assert resp.status == 408
    assert await resp.json() == {
        "error": "request_timeout",
        "detail": "the body was not received in time",
    }
    assert counted("wamm", "slow", "bad_request") == before + 1
    assert await reader.head(pool) == 0


async def test_a_body_over_the_limit_is_413(
    client: TestClient, dsn: str, pool: asyncpg.Pool
) -> None:
    token = await add_channel(dsn, "big", "wamm")
    before = counted("wamm", "big", "too_large")
    resp = await client.post(f"/hooks/big?token={token}", data=b"x" * 1001)
    assert resp.status == 413
    body = await resp.json()
    assert (body["error"], body["limit"]) == ("too_large", 1000)
    assert counted("wamm", "big", "too_large") == before + 1
    ok = await client.post(f"/hooks/big?token={token}", data=b"x" * 1000)
    assert ok.status == 200
    assert await reader.head(pool) == 1


async def test_an_unknown_channel_is_404_and_counted(client: TestClient) -> None:
    before = counted("unknown", "unknown", "not_found")
    resp = await client.post("/hooks/nobody?token=x", data=b"{}")
    assert resp.status == 404
    assert (await resp.json())["error"] == "unknown_channel"
    assert counted("unknown", "unknown", "not_found") == before + 1
