"""``acklog simulate`` against the real app on a real socket, folded by the real projector.

Each provider's simulated sequence must be accepted as sent, and once projected every
message must sit in exactly the state the scenario implies, with nothing quarantined: the
simulator's payloads and acklog's decoders agree on every provider's format.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eventstore.pool import connect
from projections.providers import PROVIDERS, get
from projections.runner import Projector
from service.cli.main import parser
from service.cli.simulate import SimulationResult, plan, simulate
from service.cli.simulate import command as simulate_command
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings

Server = Callable[..., Awaitable[TestServer]]

#: what each provider can simulate (the rest is skipped, and said so)
COVERAGE: dict[str, set[str]] = {
    "wamm": {"incoming", "outgoing", "failure"},
    "whatsgate": {"incoming", "outgoing", "instance"},
    "chatapi": {"incoming", "outgoing", "instance"},
    "whatsable": {"incoming", "outgoing"},
    "qikchat": {"incoming", "outgoing"},
    "meta": {"incoming", "outgoing", "failure"},
    "waha": {"incoming", "outgoing", "failure", "instance"},
    "evolution": {"incoming", "outgoing", "failure", "instance"},
    "greenapi": {"incoming", "outgoing", "failure", "instance"},
    "twilio": {"incoming", "outgoing", "failure"},
    "zapi": {"incoming", "outgoing", "failure", "instance"},
}


@pytest.fixture
async def server(aiohttp_server: Server, dsn: str) -> TestServer:
    app: web.Application = make_app(settings(), dsn)
    return await aiohttp_server(app)


def base_url(server: TestServer) -> str:
    return f"http://{server.host}:{server.port}"


def refused(result: SimulationResult) -> list[tuple[str, int, str]]:
    return [(r.label, r.status, r.answer) for r in result.requests if not r.ok]


async def assert_projected(dsn: str, result: SimulationResult) -> None:
    """Fold the log, then compare the read models with what the scenario implies."""
    conn: asyncpg.Connection = await connect(dsn)
    try:
        await Projector(dsn).catch_up(conn)
        rows = await conn.fetch(
            "SELECT key, direction, state, failures FROM rm.messages WHERE channel = $1",
            result.channel,
        )
        got = {r["key"]: (r["direction"], r["state"]) for r in rows}
        assert got == {m.key: (m.direction, m.state) for m in result.messages}
        failures = {r["key"]: r["failures"] for r in rows}
        for m in result.messages:
            if m.state == "not_sent":
                codes = [f.get("code") for f in failures[m.key]]
                assert codes == [m.error_code], (m.key, failures[m.key])
            else:
                assert failures[m.key] == [], (m.key, failures[m.key])
        instance = await conn.fetchval(
            "SELECT status FROM rm.instance_status WHERE channel = $1", result.channel
        )
        assert instance == result.instance
        assert await conn.fetchval("SELECT count(*) FROM rm.quarantine") == 0
        stored = await conn.fetch(
            "SELECT duplicate_of FROM events WHERE channel = $1 ORDER BY position", result.channel
        )
        assert len(stored) == len(result.requests)
        assert [d["duplicate_of"] is not None for d in stored] == [
            r.duplicate for r in result.requests
        ]
    finally:
        await conn.close()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_every_scenario_folds_to_the_state_it_implies(
    provider: str, server: TestServer, dsn: str
) -> None:
    token = await add_channel(dsn, "sim", provider)
    result = await simulate(base_url(server), "sim", provider, token, "all", count=2)
    assert result.ok, refused(result)
    keys = [m.key for m in result.messages]
    assert len(keys) == len(set(keys)), "every round must use fresh ids"
    covered = {m.scenario for m in result.messages} | ({"instance"} if result.instance else set())
    assert covered == COVERAGE[provider]
    assert len(result.skipped) == len({"failure", "instance"} - covered)
    assert sum("(retried" in r.label for r in result.requests) == 2  # one ack per round
    await assert_projected(dsn, result)


def test_every_provider_says_what_it_can_simulate() -> None:
    assert set(COVERAGE) == set(PROVIDERS)


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if get(p).signature is not None])
async def test_signing_providers_sign_every_request(
    provider: str, server: TestServer, dsn: str
) -> None:
    await add_channel(dsn, "signed", provider, secrets_=["app-secret", "older-secret"])
    # no token at all: the signature alone must authenticate every request
    result = await simulate(
        base_url(server), "signed", provider, None, "all", secrets=["app-secret"]
    )
    assert result.ok, refused(result)
    await assert_projected(dsn, result)
    forged = await simulate(
        base_url(server), "signed", provider, None, "incoming", secrets=["not-the-secret"]
    )
    assert [r.status for r in forged.requests] == [401]


async def test_a_single_scenario_and_a_seed_repeat_the_same_ids() -> None:
    first, again = plan("waha", "outgoing", 1, seed=42), plan("waha", "outgoing", 1, seed=42)
    assert [m.key for m in first.messages] == [m.key for m in again.messages]
    assert {r.scenario for r in first.requests} == {"outgoing"}
    assert plan("waha", "outgoing", 1).messages[0].key != first.messages[0].key
    with pytest.raises(ValueError, match="unknown scenario"):
        plan("waha", "bogus")


async def test_the_command_uses_a_temporary_token_and_revokes_it(
    server: TestServer,
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await add_channel(dsn, "shop", "wamm")
    monkeypatch.setenv("DATABASE_URL", dsn)
    args = parser().parse_args(["simulate", "shop", "--url", base_url(server), "--count", "1"])
    assert args.fn is simulate_command.run
    assert await simulate_command.main(args) == 0
    out = capsys.readouterr().out
    assert "8 webhooks sent to shop (wamm): all accepted" in out
    assert "skipped instance: WAMM.chat sends no instance (connection) events" in out
    assert "→ not_sent" in out and "→ read" in out and "→ received" in out
    conn = await connect(dsn)
    try:
        tokens = await conn.fetch(
            "SELECT revoked_at IS NOT NULL AS revoked FROM channel_tokens"
            " WHERE channel = 'shop' ORDER BY id"
        )
    finally:
        await conn.close()
    assert [t["revoked"] for t in tokens] == [False, True]  # the channel's own, then ours


async def test_the_command_refuses_an_unknown_channel(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", dsn)
    args: Any = argparse.Namespace(
        channel="nope", scenario="all", url="http://127.0.0.1:9", count=1, seed=None
    )
    assert await simulate_command.main(args) == 2
    assert "no channel 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_api_timeline_matches_the_scenario_sent(
    provider: str, aiohttp_server: Server, dsn: str
) -> None:
    """What an operator sees in /v1 after ``acklog simulate`` is what was simulated."""
    import aiohttp

    server = await aiohttp_server(make_app(settings(api_key="k"), dsn))
    token = await add_channel(dsn, "sim", provider)
    result = await simulate(base_url(server), "sim", provider, token, "all", count=1)
    assert result.ok, refused(result)
    conn = await connect(dsn)
    try:
        await Projector(dsn).catch_up(conn)
    finally:
        await conn.close()
    headers = {"Authorization": "Bearer k"}
    async with aiohttp.ClientSession(base_url(server), headers=headers) as http:
        for m in result.messages:
            async with http.get(f"/v1/channels/sim/messages/{quote(m.key, safe='')}") as resp:
                assert resp.status == 200, (m.key, await resp.text())
                body = await resp.json()
            assert (body["direction"], body["state"]) == (m.direction, m.state)
            statuses = [t["status"] for t in body["timeline"]]
            assert m.state in statuses or m.state in ("received", "sending"), statuses
            if m.scenario == "outgoing":
                assert any(not t["advanced"] for t in body["timeline"]), "the retried ack"
            if m.error_code:
                assert [f["code"] for f in body["failures"]] == [m.error_code]
        if result.instance:
            async with http.get("/v1/channels/sim/status") as resp:
                assert (await resp.json())["current"]["status"] == result.instance


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stuck_leaves_acks_that_become_missed_acks(
    provider: str, server: TestServer, dsn: str
) -> None:
    """``--scenario stuck``: a message never sent (where the provider reports our outgoing
    messages) and one sent but never delivered; past the deadlines both are missed acks."""
    import datetime as dt

    token = await add_channel(dsn, "sim", provider, sent_deadline_s=5, delivered_deadline_s=10)
    result = await simulate(base_url(server), "sim", provider, token, "stuck")
    assert result.ok, refused(result)
    assert {m.state for m in result.messages} <= {"sending", "sent"}
    assert "sent" in {m.state for m in result.messages}
    await assert_projected(dsn, result)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    conn = await connect(dsn)
    try:
        await Projector(dsn, clock=lambda: later).sweep(conn)
        rows = await conn.fetch("SELECT stage, n FROM rm.missed_counts WHERE channel = 'sim'")
    finally:
        await conn.close()
    expected = {"delivered": 1} | (
        {"sent": 1} if any(m.state == "sending" for m in result.messages) else {}
    )
    assert {r["stage"]: r["n"] for r in rows} == expected


def test_all_does_not_include_stuck() -> None:
    scenarios = {r.scenario for r in plan("waha", "all").requests}
    assert "stuck" not in scenarios
    assert {r.scenario for r in plan("waha", "stuck").requests} == {"stuck"}


async def test_stuck_says_when_the_misses_come_and_how_to_hurry_them(
    server: TestServer,
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await add_channel(dsn, "slow", "waha")
    monkeypatch.setenv("DATABASE_URL", dsn)
    args = parser().parse_args(
        ["simulate", "slow", "--scenario", "stuck", "--url", base_url(server)]
    )
    assert await simulate_command.main(args) == 0
    out = capsys.readouterr().out
    assert "missed acks in 60s (sent) and 600s (delivered)" in out
    assert "acklog channels update slow --sent-deadline 20 --delivered-deadline 40" in out
