"""``acklog tail`` on a live log: real app, real sockets, real PostgreSQL, LISTEN/NOTIFY.

Lines are awaited through a queue as the tail yields them, never by sleeping: each POST is
answered after COMMIT, and the tail must then show it, decoded, in log order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.cli.main import parser
from service.cli.simulate import simulate
from service.cli.tail import TailLine, tail
from service.cli.tail import run as tail_run
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings
from tests.support.samples import sample

AppClient = TestClient[web.Request, web.Application]
Client = Callable[..., Awaitable[AppClient]]
WAIT = 15.0  # an upper bound for a line to arrive, not a pause


class Tailer:
    """A running tail whose lines land in a queue."""

    def __init__(self, dsn: str, channel: str | None = None) -> None:
        self.stop = asyncio.Event()
        self.started = asyncio.Event()
        self.lines: asyncio.Queue[TailLine] = asyncio.Queue()
        self._gen = tail(dsn, stop=self.stop, channel=channel, started=self.started)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for line in self._gen:
            await self.lines.put(line)

    async def next(self) -> TailLine:
        return await asyncio.wait_for(self.lines.get(), WAIT)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, WAIT)


@contextlib.asynccontextmanager
async def tailing(dsn: str, channel: str | None = None) -> AsyncIterator[Tailer]:
    t = Tailer(dsn, channel)
    try:
        await asyncio.wait_for(t.started.wait(), WAIT)
        yield t
    finally:
        await t.close()


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str) -> AppClient:
    return await aiohttp_client(make_app(settings(), dsn))


async def post(client: AppClient, channel: str, token: str, body: bytes) -> int | None:
    """POST a webhook; its log position (None for WhatsGate, which gets its own answer)."""
    resp = await client.post(f"/hooks/{channel}?token={token}", data=body)
    assert resp.status == 200, await resp.text()
    position: int | None = (await resp.json()).get("position")
    return position


async def test_tail_shows_each_event_decoded_from_the_head_onwards(
    client: AppClient, dsn: str
) -> None:
    meta = await add_channel(dsn, "shop", "meta")
    gate = await add_channel(dsn, "gate", "whatsgate")
    before = await post(client, "shop", meta, sample("meta", "message_text_docs.json")[0])
    assert before is not None

    async with tailing(dsn) as t, tailing(dsn, channel="gate") as only_gate:
        delivered = sample("meta", "status_delivered.json")[0]
        first = await post(client, "shop", meta, delivered)
        line = await t.next()
        assert first is not None and line.position == first > before  # not the one before
        assert line.channel == "shop" and line.provider == "meta" and line.duplicate_of is None
        assert line.decoded == "status wamid.xyzxyz → delivered"
        assert line.render().startswith(f"#{first} ")
        assert line.render().endswith(" shop meta - status wamid.xyzxyz → delivered")

        again = await post(client, "shop", meta, delivered)  # a provider retry
        line = await t.next()
        assert (line.position, line.duplicate_of) == (again, first)
        assert f" shop meta dup of #{first} status wamid.xyzxyz → delivered" in line.render()

        await post(client, "shop", meta, b'{"object": "whatsapp_business_account", "entry": [')
        line = await t.next()
        assert line.decoded.startswith("QUARANTINE: body is not valid JSON")

        await post(client, "shop", meta, sample("meta", "errors_out_of_band.json")[0])
        assert (await t.next()).decoded.startswith("ignored: ")

        await post(client, "gate", gate, sample("whatsgate", "disconnect.json")[0])
        line = await t.next()
        down = line.position
        assert line.decoded == "instance → disconnected (Client disconnected)"
        failed = sample("meta", "status_failed_131014.json")[0]
        await post(client, "shop", meta, failed)
        assert " → not_sent (131014" in (await t.next()).decoded

        # the filtered tail saw the WhatsGate event only
        line = await only_gate.next()
        assert (line.position, line.channel) == (down, "gate")
        await post(client, "gate", gate, sample("whatsgate", "message_incoming.json")[0])
        line = await t.next()
        assert line.decoded == "message in 3EB0436AE1E682FF3A37"
        # the filtered tail's next line is that one: nothing from "shop" in between
        assert (await only_gate.next()).position == line.position


async def test_tail_follows_a_simulation_line_by_line(client: AppClient, dsn: str) -> None:
    token = await add_channel(dsn, "sim", "waha")
    base = f"http://{client.server.host}:{client.server.port}"
    async with tailing(dsn) as t:
        result = await simulate(base, "sim", "waha", token, "all")
        lines = [await t.next() for _ in result.requests]
    assert [line.duplicate_of is not None for line in lines] == [
        r.duplicate for r in result.requests
    ]
    text = "\n".join(line.decoded for line in lines)
    for m in result.messages:
        assert m.key in text
    # WAHA reports a lost session as FAILED (needs a restart), the simulator's "disconnect"
    assert "instance → failed" in text and "instance → connected" in text
    assert "QUARANTINE" not in text and "ignored" not in text


async def test_stop_ends_an_idle_tail(dsn: str) -> None:
    async with tailing(dsn) as t:
        assert t.lines.empty()
    assert t.task.done() and t.task.exception() is None


def test_tail_is_wired_into_the_cli() -> None:
    args = parser().parse_args(["tail", "--channel", "shop"])
    assert args.fn is tail_run and args.channel == "shop"
    assert parser().parse_args(["tail"]).channel is None
