"""The query API after retention: GET /v1/log publishes the oldest position kept and the
last run; a position retention dropped answers 410 naming the archive that holds it."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eventstore.pool import connect
from projections import retention
from service.api.openapi import document
from service.runtime.app import make_app
from tests.conftest import API_AUTH, API_KEY
from tests.projections.test_retention import folded_log
from tests.support.apps import settings


@pytest.fixture
async def small_dsn(server_dsn: str) -> AsyncIterator[str]:
    async with folded_log(server_dsn) as dsn:
        yield dsn


async def test_dropped_positions_answer_410_with_their_archive(
    aiohttp_client: Any, small_dsn: str, tmp_path: Path
) -> None:
    client = await aiohttp_client(make_app(settings(api_key=API_KEY), small_dsn))
    before = await (await client.get("/v1/log", headers=API_AUTH)).json()
    assert before["oldest_position"] == 1 and before["last_retention_run"] is None
    assert (await client.get("/v1/events/5", headers=API_AUTH)).status == 200

    url = f"file://{tmp_path}/archives"
    conn = await connect(small_dsn)
    try:
        await retention.run(conn, url, dt.timedelta(0))
        kept = await retention.oldest_kept(conn)
    finally:
        await conn.close()

    status = await (await client.get("/v1/log", headers=API_AUTH)).json()
    assert status["oldest_position"] == kept > 100
    assert status["next_position"] > kept
    assert status["last_retention_run"]["outcome"] == "ok"
    assert status["last_retention_run"]["partitions"] == (kept - 1) // 10

    resp = await client.get("/v1/events/5", headers=API_AUTH)
    assert resp.status == 410
    body = await resp.json()
    assert body["error"] == "gone" and body["position"] == 5
    assert body["oldest_position"] == kept
    assert body["archive"].startswith("events-1-") and body["archive_url"] == url
    assert body["archive"] in body["detail"]

    resp = await client.get("/v1/events?after=20", headers=API_AUTH)
    assert resp.status == 410 and (await resp.json())["position"] == 21
    # from the start: what the log still holds
    page = await (await client.get("/v1/events", headers=API_AUTH)).json()
    assert page["items"][0]["position"] == kept
    ok = await client.get(f"/v1/events?after={kept - 1}", headers=API_AUTH)
    assert ok.status == 200
    # a position never written is still 404
    assert (await client.get("/v1/events/999999", headers=API_AUTH)).status == 404


def test_the_410_is_documented() -> None:
    paths = document()["paths"]
    assert "410" in paths["/v1/events/{position}"]["get"]["responses"]
    assert "410" in paths["/v1/events"]["get"]["responses"]
    assert "/v1/log" in paths


async def test_the_console_shows_the_oldest_position_kept_and_the_last_run(
    aiohttp_server: Any, small_dsn: str, tmp_path: Path
) -> None:
    import aiohttp

    from tests.support.console_helpers import sign_in

    server = await aiohttp_server(make_app(settings(api_key=API_KEY), small_dsn))
    base = f"http://{server.host}:{server.port}"
    conn = await connect(small_dsn)
    try:
        await retention.run(conn, f"file://{tmp_path}/archives", dt.timedelta(0))
        kept = await retention.oldest_kept(conn)
    finally:
        await conn.close()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert (await sign_in(browser, base, API_KEY)).status == 303
        async with browser.get(f"{base}/ui/projector") as r:
            page = await r.text()
    assert f"Oldest kept</dt><dd>#{kept} " in page
    assert "Last retention run</dt><dd><span>ok</span>" in page
