"""Delivery of the feed to subscriptions: signed, at least once, in order per endpoint.

One task per active subscription, in the ``feed`` process (never in ingest, the API or the
projector). Each task sends its replays first, then its backlog (the feed after its cursor,
filtered by channel and type), one event at a time, so each endpoint sees its events in
feed order. An attempt that fails (no 2xx, a timeout, a refused address) is retried with
exponential backoff and jitter (tenacity) up to ``attempts`` times; then the event is a dead
letter and the cursor moves on. ``breaker`` dead letters in a row pause the subscription
(circuit open): its backlog stays, ``acklog subscriptions resume`` continues from it.

Requests are signed as Standard Webhooks (``webhook-id`` = the event's stable id,
``webhook-timestamp``, ``webhook-signature`` with one entry per secret still signing,
so a rotation overlaps). Answers are read up to ``max_answer`` bytes, within
``connect_timeout`` / ``total_timeout``; addresses are checked by ``service.feed.outbound``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
import msgspec
from aiohttp.abc import AbstractResolver
from prometheus_client import Counter, Histogram
from standardwebhooks.webhooks import Webhook
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from eventstore import locks
from eventstore.errors import DRIVER_ERRORS
from eventstore.leader import lead_forever
from eventstore.pool import close_pool, create_pool
from eventstore.subscribe import Wakeup
from projections.feed import store
from projections.feed import subscriptions as subs
from service.core.config import FeedSettings
from service.feed import outbound
from service.metrics import registry as metrics

log = logging.getLogger(__name__)


#: backlog events read per query by a sender
PAGE = 50


class AttemptFailed(Exception):
    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class Sent(msgspec.Struct, frozen=True):
    """One attempt's outcome: ``delivered``, ``failed`` or ``refused``."""

    seq: int
    attempt: int
    outcome: str
    status: int | None
    detail: str
    seconds: float


#: seconds at most between two writes of a page's deliveries (cursor and attempts)
FLUSH_INTERVAL = 1.0


class Paused(Exception):
    """The subscription was paused or removed while an event was being retried."""


class Sender:
    """One subscription's task: replays, then the backlog, one event at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        http: aiohttp.ClientSession,
        sub_id: int,
        settings: FeedSettings,
        progress: asyncio.Event | None = None,
    ) -> None:
        self.pool = pool
        self.http = http
        self.sub_id = sub_id
        self.settings = settings
        self.wake = asyncio.Event()
        #: set after every attempt, cursor move and dead letter (tests await it)
        self.progress = progress or asyncio.Event()
        self._secret_list: list[str] = []
        self._secrets_at: float | None = None
        self._hook_secrets: list[str] = []
        self._hook_list: list[Webhook] = []
        self._counters: dict[tuple[str, str], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    async def run(self) -> None:
        """Until the subscription is paused or removed; a lost database ends the task (the
        manager starts a new one on its next round)."""
        try:
            await self._run()
        except DRIVER_ERRORS as exc:
            log.warning("feed: subscription %s lost the database (%s)", self.sub_id, exc)
        except Exception:
            log.exception("feed: subscription %s failed", self.sub_id)

    async def _run(self) -> None:
        while True:
            sub = await subs.by_id(self.pool, self.sub_id)
            if sub is None or sub.status != "active":
                return
            self.wake.clear()
            seq = await subs.next_replay(self.pool, sub.id)
            if seq is not None:
                replay = await store.by_seq(self.pool, seq)
                if replay is None:  # gone from the feed: nothing to send
                    await subs.replayed(self.pool, sub.id, seq)
                elif not await self._deliver(sub, replay, replay=True):
                    return
                continue
            page = await store.after(
                self.pool, sub.cursor, channels=sub.channels, types=sub.events, limit=PAGE
            )
            if not page:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_interval):
                        await self.wake.wait()
                continue
            # the page's events in order; a pause, and a replay (which goes first), are seen
            # at the next page
            if not await self._send_page(sub, page):
                return

    async def _send_page(self, sub: subs.Subscription, page: list[store.Stored]) -> bool:
        """A page of the backlog, in order. A 2xx on the first attempt (the usual case) costs
        no database round trip of its own: those deliveries are written together (their
        attempts and the cursor, one statement) at the page's end, before any retry, and at
        least every ``FLUSH_INTERVAL`` seconds. A crash meanwhile re-sends them with the same
        ids (at least once). False as :meth:`_deliver`."""
        loop = asyncio.get_running_loop()
        done: list[Sent] = []
        flush_at = loop.time() + FLUSH_INTERVAL
        try:
            for event in page:
                first = await self._send(sub, event, 1)
                if first.outcome == "delivered":
                    done.append(first)
                    if loop.time() >= flush_at:
                        await self._flush(sub, done)
                        flush_at = loop.time() + FLUSH_INTERVAL
                    continue
                await self._flush(sub, done)  # in order: what went before is on record first
                if not await self._deliver(sub, event, replay=False, first=first):
                    return False
            await self._flush(sub, done)
        except asyncio.CancelledError:
            # stopping: put what was delivered on record (else it is only sent again)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._flush(sub, done)
            raise
        return True

    async def _flush(self, sub: subs.Subscription, done: list[Sent]) -> None:
        if not done:
            return
        # taken before the write: cancelled while it runs, they are not written twice (not
        # on record means only that they are sent again)
        batch = list(done)
        done.clear()
        await subs.delivered_batch(
            self.pool,
            sub.id,
            [d.seq for d in batch],
            [d.status or 0 for d in batch],
            [d.seconds for d in batch],
        )
        self.progress.set()

    async def _deliver(
        self,
        sub: subs.Subscription,
        event: store.Stored,
        *,
        replay: bool,
        first: Sent | None = None,
    ) -> bool:
        """Send one event until a 2xx or its attempts run out (then a dead letter); False
        when the subscription is paused or removed meanwhile, or its circuit opened.
        ``first``: its first attempt, already made (and failed); it is put on record here."""
        s = self.settings
        if first is None:
            first = await self._send(sub, event, 1)
        await self._record(sub, event, first, replay=replay)
        if first.outcome == "delivered":
            return True
        retrying = AsyncRetrying(
            stop=stop_after_attempt(s.attempts),
            retry=retry_if_exception_type(AttemptFailed),
            wait=wait_exponential_jitter(
                multiplier=s.backoff_initial, max=s.backoff_max, jitter=s.jitter
            ),
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    if number == 1:  # made above; tenacity times the retries from it
                        raise AttemptFailed(first.detail, first.status)
                    current = await subs.by_id(self.pool, sub.id)
                    if current is None or current.status != "active":
                        raise Paused
                    sub = current
                    sent = await self._send(sub, event, number)
                    await self._record(sub, event, sent, replay=replay)
                    if sent.outcome != "delivered":
                        raise AttemptFailed(sent.detail, sent.status)
        except Paused:
            return False
        except RetryError as exc:
            last = exc.last_attempt.exception()
            detail = str(last) if last else "failed"
            self._outcomes(sub.name, "dead_letter").inc()
            async with self.pool.acquire() as conn:
                paused = await subs.dead_letter(
                    conn, sub.id, event.seq, s.attempts, detail, breaker=s.breaker
                )
            log.warning("feed: %s: event %s is a dead letter (%s)", sub.name, event.id, detail)
            self.progress.set()
            if paused:
                log.warning("feed: %s paused: circuit open", sub.name)
                return False
        return True

    async def _send(self, sub: subs.Subscription, event: store.Stored, number: int) -> Sent:
        """One attempt: the signed request and its outcome (nothing written yet)."""
        s = self.settings
        hooks = await self._hooks(sub.id, fresh=number > 1)
        now = dt.datetime.now(dt.UTC)
        body = event.body.decode()
        headers = {
            "content-type": "application/json",
            "user-agent": "acklog-feed/1",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": " ".join(h.sign(event.id, now, body) for h in hooks),
        }
        started = time.perf_counter()
        status: int | None = None
        try:
            async with self.http.post(
                sub.url, data=event.body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                await resp.content.read(s.max_answer)  # bounded; the rest is dropped
            if not 200 <= status < 300:
                raise AttemptFailed(f"answered {status}", status)
        except aiohttp.ClientConnectorError as exc:  # refused by the policy, or no such host
            if outbound.refused(exc) or isinstance(exc, aiohttp.ClientConnectorDNSError):
                outcome, detail = "refused", f"refused: {exc}"
            else:
                outcome, detail = "failed", f"{type(exc).__name__}: {exc}"[:300]
        except AttemptFailed as exc:
            outcome, detail = "failed", exc.detail
        except TimeoutError:
            outcome, detail = "failed", "timed out"
        except (aiohttp.ClientError, OSError) as exc:
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"[:300]
        else:
            outcome, detail = "delivered", ""
        seconds = time.perf_counter() - started
        self._outcomes(sub.name, outcome).inc()
        self._latency(sub.name).observe(seconds)
        return Sent(event.seq, number, outcome, status, detail, seconds)

    async def _record(
        self, sub: subs.Subscription, event: store.Stored, sent: Sent, *, replay: bool
    ) -> None:
        """One attempt on record; a 2xx moves the cursor (or ends the replay) at once."""
        if sent.outcome == "delivered":  # the attempt and the cursor (or replay) in one statement
            await subs.delivered(
                self.pool, sub.id, event.seq, sent.attempt, sent.status, sent.seconds, replay
            )
        else:
            await subs.record_attempt(
                self.pool,
                sub.id,
                event.seq,
                sent.attempt,
                sent.outcome,
                sent.status,
                sent.detail,
                sent.seconds,
            )
        self.progress.set()

    def _outcomes(self, name: str, outcome: str) -> Counter:
        key = (name, outcome)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = metrics.feed_deliveries.labels(name, outcome)
        return child

    def _latency(self, name: str) -> Histogram:
        child = self._histograms.get(name)
        if child is None:
            child = self._histograms[name] = metrics.feed_delivery_seconds.labels(name)
        return child

    async def _hooks(self, sub_id: int, *, fresh: bool) -> list[Webhook]:
        """One signer per secret that signs now (a ``webhook-signature`` entry each)."""
        secrets = await self._secrets(sub_id, fresh=fresh)
        if secrets != self._hook_secrets:
            self._hook_list = [Webhook(x) for x in secrets]
            self._hook_secrets = secrets
        return self._hook_list

    async def _secrets(self, sub_id: int, *, fresh: bool) -> list[str]:
        """The signing secrets, re-read at most every few seconds (and on each retry), so a
        rotation is picked up without a query per delivery."""
        loop = asyncio.get_running_loop()
        if fresh or self._secrets_at is None or loop.time() - self._secrets_at > 5.0:
            self._secret_list = await subs.signing_secrets(self.pool, sub_id)
            self._secrets_at = loop.time()
        return self._secret_list


class Delivery:
    """The delivery leader: one :class:`Sender` task per active subscription."""

    def __init__(
        self,
        dsn: str,
        settings: FeedSettings | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.dsn = dsn
        self.settings = settings or FeedSettings()
        #: the DNS resolver beneath the policy's guard (the system's unless given)
        self.resolver = resolver
        self.is_leader = asyncio.Event()
        self.senders: dict[int, tuple[Sender, asyncio.Task[None]]] = {}
        #: set whenever a sender made progress (an attempt, a cursor move, a dead letter)
        self.progress = asyncio.Event()

    async def until(self, check: Callable[[], Awaitable[bool]]) -> None:
        """Return once ``check()`` holds, re-checked after each bit of progress."""
        while True:
            self.progress.clear()
            if await check():
                return
            await self.progress.wait()

    def http(self) -> aiohttp.ClientSession:
        s = self.settings
        connector = outbound.connector(
            outbound.Policy.of(s), self.resolver, limit=0, limit_per_host=0, ttl_dns_cache=10
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=s.total_timeout, sock_connect=s.connect_timeout),
        )

    async def _manage(self, pool: asyncpg.Pool, http: aiohttp.ClientSession, wake: Wakeup) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = 0.0
        while True:
            active = {s.id: s for s in await subs.list_all(pool) if s.status == "active"}
            for sub_id, (_, task) in list(self.senders.items()):
                if task.done() or sub_id not in active:
                    task.cancel()
                    del self.senders[sub_id]
            for sub_id in active.keys() - self.senders.keys():
                sender = Sender(pool, http, sub_id, self.settings, self.progress)
                self.senders[sub_id] = (sender, asyncio.create_task(sender.run()))
            if loop.time() >= next_refresh:
                await self._refresh(pool)
                next_refresh = loop.time() + self.settings.refresh_interval
            await wake.wait(self.settings.poll_interval)
            for sender, _ in self.senders.values():
                sender.wake.set()

    async def _refresh(self, pool: asyncpg.Pool) -> None:
        """Every ``refresh_interval``, for each subscription: its backlog gauges, and its
        attempts past ``keep_attempts`` pruned (a bounded chunk per refresh)."""
        now = dt.datetime.now(dt.UTC)
        for sub in await subs.list_all(pool):
            b = await subs.backlog(pool, sub)
            metrics.feed_backlog.labels(sub.name).set(b.pending)
            age = (now - b.oldest).total_seconds() if b.oldest else 0.0
            metrics.feed_oldest_pending.labels(sub.name).set(max(age, 0.0))
            metrics.feed_paused.labels(sub.name).set(0 if sub.status == "active" else 1)
            await subs.prune_attempts(pool, sub.id, keep=self.settings.keep_attempts)

    async def run(self) -> None:
        """Lead or stand by on ``FEED_DELIVERY``, forever."""
        async with Wakeup(
            self.dsn, channel=store.FEED_CHANNEL, poll_interval=self.settings.poll_interval
        ) as wake:
            await lead_forever(
                self.dsn,
                locks.FEED_DELIVERY,
                "feed-delivery",
                lambda lock: self._lead(lock, wake),
                self.is_leader,
            )

    async def _lead(self, lock: asyncpg.Connection, wake: Wakeup) -> None:
        """While ``lock`` (the leader's connection) lives: the senders, on a pool of their own."""
        # a lost cursor move (PostgreSQL crash) only means a delivery is sent again, with
        # the same id: at least once holds, so no WAL flush per 2xx
        pool = await create_pool(
            self.dsn,
            min_size=1,
            max_size=8,
            server_settings={
                "synchronous_commit": "off",
                "application_name": f"acklog-feed-delivery-{os.getpid()}",
            },
        )
        try:
            async with self.http() as http:
                manager = asyncio.create_task(self._manage(pool, http, wake))
                lost = asyncio.create_task(_closed(lock))
                try:
                    await asyncio.wait((manager, lost), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (manager, lost):
                        t.cancel()
                    await asyncio.gather(manager, lost, return_exceptions=True)
                if not manager.cancelled() and manager.exception() is not None:
                    raise manager.exception()  # type: ignore[misc]
        finally:
            await self._stop_senders()
            await close_pool(pool)

    async def _stop_senders(self) -> None:
        tasks = [t for _, t in self.senders.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.senders.clear()


async def _closed(conn: asyncpg.Connection) -> None:
    """Return when the lock's connection is lost (then leadership is gone)."""
    while not conn.is_closed():
        try:
            await conn.execute("SELECT 1")
        except DRIVER_ERRORS:
            return
        await asyncio.sleep(2.0)
