"""Delivery of the feed to real receivers (aiohttp apps in the test), verified with
standardwebhooks' own ``Webhook.verify``: order per message, retries with backoff, timeouts,
dead letters and their replay, the circuit breaker, secret rotation, the SSRF guard, and
kill -9 of the feed process mid-delivery."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from standardwebhooks.webhooks import Webhook

from eventstore.append import write_batch
from eventstore.read import head
from projections.facts import RANK
from projections.feed import events as fe
from projections.feed import store
from projections.feed import subscriptions as subs
from projections.feed.outbox import Outbox
from service.core.config import FeedSettings
from service.feed import outbound
from service.feed.delivery import Delivery
from tests.support.payloads import event, meta_status
from tests.support.procs import Process, free_port

#: Meta acks for messages the test never sent also give a message.anomaly (ack_for_unseen);
#: the tests that count deliveries subscribe to state changes only
CHANGES = ["message.state_changed"]

FAST = FeedSettings(
    attempts=4,
    backoff_initial=0.05,
    backoff_max=0.2,
    jitter=0.02,
    breaker=50,
    connect_timeout=1.0,
    total_timeout=1.0,
    poll_interval=0.1,
    refresh_interval=0.2,
)


class Receiver:
    """A real HTTP endpoint: records each request; ``answer`` decides the status."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        self.answer: Callable[[int], Awaitable[int]] = self._ok
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.changed = asyncio.Condition()
        self.runner: web.AppRunner | None = None

    async def _ok(self, n: int) -> int:
        return 200

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        loop = asyncio.get_running_loop()
        self.requests.append((dict(request.headers), body, loop.time()))
        async with self.changed:
            self.changed.notify_all()
        status = await self.answer(len(self.requests))
        async with self.changed:
            self.changed.notify_all()
        return web.Response(status=status, text="x" * 10)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def verified(self, secret: str, status: int = 200) -> list[fe.FeedEvent]:
        """Every request's body, checked by standardwebhooks' verifier."""
        hook = Webhook(secret)
        out = []
        for headers, body, _ in self.requests:
            hook.verify(body, headers)
            event = fe.decode(body)
            assert headers["webhook-id"] == event.id
            out.append(event)
        return out

    async def wait(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(predicate)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


@contextlib.asynccontextmanager
async def feed_running(
    dsn: str, settings: FeedSettings = FAST, resolver: AbstractResolver | None = None
) -> AsyncIterator[Delivery]:
    outbox = Outbox(dsn, poll_interval=0.1, sweep_interval=0.2)
    delivery = Delivery(dsn, settings, resolver)
    delivery.outbox = outbox  # type: ignore[attr-defined]
    tasks = [asyncio.create_task(outbox.run()), asyncio.create_task(delivery.run())]
    try:
        yield delivery
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def cursor_at(conn: asyncpg.Connection, name: str, seq: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await subs.get(conn, name)).cursor >= seq

    return check


def dead_letters(conn: asyncpg.Connection) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(await subs.dead_letters(conn))

    return check


def paused(conn: asyncpg.Connection, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await subs.get(conn, name)).status == "paused"

    return check


def scenario(n: int) -> list[object]:
    out = []
    for i in range(n):
        for status in ("sent", "delivered", "read"):
            out.append(event(meta_status(f"wamid.{i}", status)))
    return out


def state_changes(events: list[fe.FeedEvent]) -> dict[str, list[str]]:
    per: dict[str, list[str]] = {}
    for e in events:
        if isinstance(e, fe.MessageStateChanged):
            per.setdefault(e.key, []).append(e.state)
    return per


async def test_every_state_change_arrives_verified_in_order(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    _, secret = await subs.add(conn, "crm", receiver.url, from_start=True, events=CHANGES)
    await write_batch(conn, scenario(10))  # type: ignore[arg-type]
    async with feed_running(dsn) as delivery, asyncio.timeout(30):
        await receiver.wait(lambda: len(receiver.requests) >= 30)
        last = max(fe.decode(body).seq for _, body, _ in receiver.requests)
        await delivery.until(cursor_at(conn, "crm", last))  # it moves once each answer is in
    got = receiver.verified(secret)
    assert state_changes(got) == {f"wamid.{i}": ["sent", "delivered", "read"] for i in range(10)}
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    for e in got:
        assert isinstance(e, fe.MessageStateChanged)
        assert RANK[e.state] > RANK.get(e.previous_state or "", -1)
    sub = await subs.get(conn, "crm")
    assert sub.cursor == max(e.seq for e in got)


async def test_a_page_goes_on_record_in_feed_order_around_a_retry(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    """A page's 2xx are written together; one failing in the middle puts the deliveries
    before it on record first, then its attempts, then the rest: the attempts table and
    the requests both read in feed order, each event delivered once."""

    async def fifth_fails_once(n: int) -> int:
        return 500 if n == 5 else 200

    receiver.answer = fifth_fails_once
    sub, secret = await subs.add(conn, "crm", receiver.url, from_start=True, events=CHANGES)
    await write_batch(conn, scenario(4))  # type: ignore[arg-type]
    patient = msgspec.structs.replace(FAST, total_timeout=20.0)  # only the 500 fails, loaded or not
    async with feed_running(dsn, patient) as delivery, asyncio.timeout(60):
        await receiver.wait(lambda: len(receiver.requests) >= 13)
        last = max(fe.decode(body).seq for _, body, _ in receiver.requests)
        await delivery.until(cursor_at(conn, "crm", last))
    seqs = [e.seq for e in receiver.verified(secret)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 12  # the fifth twice, in its place
    attempts = list(reversed(await subs.recent_attempts(conn, sub.id, limit=50)))
    assert [(a.seq, a.outcome, a.attempt) for a in attempts] == [
        (s, "delivered", 1) for s in seqs[:4]
    ] + [(seqs[4], "failed", 1), (seqs[4], "delivered", 2)] + [
        (s, "delivered", 1) for s in seqs[6:]
    ]
    assert (await subs.get(conn, "crm")).cursor == last


async def test_filters_by_channel_and_event_type(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    await subs.add(
        conn, "only-other", receiver.url, channels=["other"], events=["message.state_changed"]
    )
    await write_batch(conn, scenario(2))  # type: ignore[arg-type]
    await write_batch(conn, [event(meta_status("wamid.o", "sent"), channel="other")])
    async with feed_running(dsn) as delivery, asyncio.timeout(30):
        await receiver.wait(lambda: len(receiver.requests) >= 1)
        await delivery.outbox.wait_for(await head(conn))  # type: ignore[attr-defined]
        await delivery.until(cursor_at(conn, "only-other", 1))
        sub = await subs.get(conn, "only-other")
    # the feed holds the meta channel's events too, and none of them is owed to this one
    assert await store.after(conn, 0, channels=["meta"])
    assert await store.after(conn, sub.cursor, channels=sub.channels, types=sub.events) == []
    assert [fe.decode(b).channel for _, b, _ in receiver.requests] == ["other"]


async def test_a_receiver_answering_500_gets_retries_with_backoff_then_the_event(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    async def flaky(n: int) -> int:
        return 500 if n <= 3 else 200

    receiver.answer = flaky
    _, secret = await subs.add(conn, "crm", receiver.url, events=CHANGES)
    await write_batch(conn, [event(meta_status("wamid.r", "sent"))])
    async with feed_running(dsn) as delivery, asyncio.timeout(30):
        await receiver.wait(lambda: len(receiver.requests) >= 4)
        await delivery.until(cursor_at(conn, "crm", 1))
    got = receiver.verified(secret)
    assert len({e.id for e in got}) == 1  # the same event, the same id, four times
    times = [t for _, _, t in receiver.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[1] > gaps[0] * 1.2 or gaps[2] > gaps[0] * 1.2  # backoff grows
    assert await subs.dead_letters(conn) == []
    attempts = await subs.recent_attempts(conn, (await subs.get(conn, "crm")).id)
    assert [a.outcome for a in reversed(attempts)] == ["failed"] * 3 + ["delivered"]


async def test_a_hanging_receiver_times_out_and_others_are_unaffected(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    hanging = Receiver()

    async def hang(n: int) -> int:
        await asyncio.sleep(3600)
        return 200

    hanging.answer = hang
    await hanging.start()
    try:
        await subs.add(conn, "hangs", hanging.url, events=CHANGES)
        _, secret = await subs.add(conn, "fine", receiver.url, events=CHANGES)
        await write_batch(conn, scenario(5))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with feed_running(dsn):
            await receiver.wait(lambda: len(receiver.requests) >= 15)
            took = loop.time() - started
            await hanging.wait(lambda: len(hanging.requests) >= 2)  # a timeout, then a retry
        assert len(receiver.verified(secret)) == 15
        assert took < 1.0 * FAST.attempts  # never waited for the hanging one's timeouts
        attempts = await subs.recent_attempts(conn, (await subs.get(conn, "hangs")).id)
        assert attempts and attempts[-1].error == "timed out"
    finally:
        await hanging.stop()


async def test_dead_letter_then_replay_by_event_id(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    failing = True

    async def answer(n: int) -> int:
        return 503 if failing else 200

    receiver.answer = answer
    _, secret = await subs.add(conn, "crm", receiver.url, events=CHANGES)
    await write_batch(conn, [event(meta_status("wamid.d", "sent"))])
    settings = msgspec.structs.replace(FAST, attempts=2)
    async with feed_running(dsn, settings) as delivery, asyncio.timeout(30):
        await delivery.until(dead_letters(conn))
        letters = await subs.dead_letters(conn)
        assert letters[0].attempts == 2 and "503" in letters[0].error
        failing = False
        before = len(receiver.requests)
        assert await subs.replay(conn, event_id=letters[0].event_id) == 1
        await receiver.wait(lambda: len(receiver.requests) > before)
    replayed = receiver.verified(secret)[-1]
    assert replayed.id == letters[0].event_id
    assert await subs.dead_letters(conn) == []  # replayed ones are listed with --all only
    assert len(await subs.dead_letters(conn, include_replayed=True)) == 1


async def test_circuit_breaker_pauses_and_keeps_the_backlog(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    failing = True

    async def answer(n: int) -> int:
        return 500 if failing else 200

    receiver.answer = answer
    _, secret = await subs.add(conn, "crm", receiver.url, events=CHANGES)
    await write_batch(conn, scenario(3))  # type: ignore[arg-type]
    settings = msgspec.structs.replace(FAST, attempts=1, breaker=2)
    async with feed_running(dsn, settings) as delivery, asyncio.timeout(30):
        await delivery.until(paused(conn, "crm"))
        sub = await subs.get(conn, "crm")
        assert sub.paused_reason and "circuit open" in sub.paused_reason
        assert (await subs.backlog(conn, sub)).pending == 9 - 2  # two dead, seven kept
        failing = False
        await subs.set_status(conn, "crm", "active")
        await receiver.wait(lambda: len(receiver.requests) >= 9)
    assert len(receiver.verified(secret)) == 9


async def test_rotated_secret_overlaps(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    import datetime as dt

    _, old = await subs.add(conn, "crm", receiver.url, events=CHANGES)
    new = await subs.rotate_secret(conn, "crm", dt.timedelta(hours=1))
    await write_batch(conn, [event(meta_status("wamid.s", "sent"))])
    async with feed_running(dsn):
        await receiver.wait(lambda: len(receiver.requests) >= 1)
    receiver.verified(old)
    receiver.verified(new)
    assert len(receiver.requests[0][0]["webhook-signature"].split(" ")) == 2
    # once the overlap is over, only the new secret signs
    await subs.rotate_secret(conn, "crm", dt.timedelta(0))
    assert len(await subs.signing_secrets(conn, (await subs.get(conn, "crm")).id)) == 1


async def test_ssrf_refused_at_add_and_at_send(dsn: str, conn: asyncpg.Connection) -> None:
    policy = outbound.Policy()
    for url in (
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:192.168.1.1]/x",
        "http://[fe80::1]/x",
        "ftp://example.com/",
        "http://user:pw@127.0.0.1/",
    ):
        with pytest.raises(outbound.Refused):
            await outbound.check_url(url, policy)
    await outbound.check_url("http://127.0.0.1:9/hook", policy)  # loopback URL: allowed
    # a name that is not loopback but resolves to a loopback address (this host's name)
    name = socket.gethostname()
    infos = socket.getaddrinfo(name, 80)
    if not any(outbound.loopback_host(str(i[4][0])) for i in infos):
        pytest.skip(f"{name} does not resolve to a loopback address here")
    with pytest.raises(outbound.Refused):
        await outbound.check_url(f"http://{name}:9/hook", policy)
    await outbound.check_url(f"http://{name}:9/hook", outbound.Policy(allow_cidrs=("127.0.0.0/8",)))
    # at send time too: a subscription stored around the check is never sent to
    receiver = await Receiver().start()
    try:
        await subs.add(conn, "sneaky", f"http://{name}:{receiver.port}/hook")
        await write_batch(conn, [event(meta_status("wamid.x", "sent"))])
        settings = msgspec.structs.replace(FAST, attempts=1)
        async with feed_running(dsn, settings) as delivery, asyncio.timeout(30):
            await delivery.until(dead_letters(conn))
        assert receiver.requests == []
        attempts = await subs.recent_attempts(conn, (await subs.get(conn, "sneaky")).id)
        assert attempts[0].outcome == "refused"
    finally:
        await receiver.stop()


async def test_kill_9_of_the_feed_process_loses_nothing(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    async def slow(n: int) -> int:
        await asyncio.sleep(0.02)
        return 200

    receiver.answer = slow
    _, secret = await subs.add(conn, "crm", receiver.url, from_start=True, events=CHANGES)
    await write_batch(conn, scenario(40))  # type: ignore[arg-type]
    env = {"ACKLOG_FEED_POLL": "0.1", "ACKLOG_FEED_BACKOFF": "0.05", "ACKLOG_FEED_JITTER": "0"}
    feed = await Process(["serve", "--role", "feed"], dsn, **env).start()
    try:
        await receiver.wait(lambda: len(receiver.requests) >= 20)
        await feed.kill()  # mid-delivery
        await write_batch(conn, scenario(2))  # type: ignore[arg-type]  # duplicates: no change
        feed = await Process(["serve", "--role", "feed"], dsn, **env).start()
        await receiver.wait(lambda: len({e.id for e in receiver.verified(secret)}) >= 120)
    finally:
        await feed.stop()
    got = receiver.verified(secret)
    bodies: dict[str, bytes] = {}
    for (_, body, _), e in zip(receiver.requests, got, strict=True):
        assert bodies.setdefault(e.id, body) == body  # a duplicate is the same event
    per = state_changes(got)
    assert all(
        list(dict.fromkeys(states)) == ["sent", "delivered", "read"] for states in per.values()
    )
    assert len(per) == 40


async def test_serve_supervises_a_feed_child_and_restarts_it(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    from tests.service.runtime.test_roles import role_pids, started

    _, secret = await subs.add(conn, "crm", receiver.url, events=CHANGES)
    server = await started(dsn, ACKLOG_FEED_POLL="0.1")
    try:
        (first,) = role_pids(server.pid, "feed")
        os.kill(first, signal.SIGKILL)
        await write_batch(conn, [event(meta_status("wamid.after-kill", "sent"))])
        await receiver.wait(lambda: len(receiver.requests) >= 1)
        (second,) = role_pids(server.pid, "feed")
        assert second != first
    finally:
        await server.stop()
    (got,) = receiver.verified(secret)
    assert isinstance(got, fe.MessageStateChanged) and got.key == "wamid.after-kill"
