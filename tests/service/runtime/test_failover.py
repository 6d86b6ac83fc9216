"""Database failover under load: the primary is killed (SIGKILL), its synchronous standby
promoted, and a real ``acklog serve`` on a multi-host ``DATABASE_URL`` carries on by itself.

Two real PostgreSQL clusters (``tests/support/pgpair.py``): a primary with
``synchronous_standby_names = standby1`` and ``synchronous_commit = on``, and that standby,
streaming. acklog is given ``postgresql://…@primary,standby/acklog?target_session_attrs=
read-write`` and never restarted. Signed Meta webhooks flow from concurrent clients; a feed
subscription delivers to a receiver in the test. The primary's postmaster is killed, the
standby stays a standby until ``HELD`` more answers came (a primary-less gap, as while Patroni
or an operator decides), then ``pg_ctl promote``. What must hold (docs/operations.md,
"Database failover", quotes the figures ``pytest -s`` prints):

- every webhook answered 2xx is in the new primary's log, byte for byte;
- from the kill to the first 200, webhooks sent are answered 503 with ``Retry-After`` (or lose
  their connection): never 200 while there is no primary, never 500;
- the supervisor lives on (same pid); whether it restarted children is printed;
- the projector's checkpoint reaches the new primary's head, ``acklog verify`` says equal;
- the feed delivers every acknowledged webhook's events (by id) at least once, and nothing it
  delivered is missing from the new primary's feed; its outbox did not warn about the
  replication (the standby is synchronous).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import itertools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import msgspec
import psutil
import pytest

from eventstore.pool import HOST_TIMEOUT, split_hosts
from eventstore.replication import failover_risk
from projections.feed import subscriptions as subs
from projections.feed.outbox import FEED_CHECKPOINT
from projections.readmodel import LIVE_CHECKPOINT
from service.core.database import wait_and_migrate
from tests.service.feed.test_feed_delivery import Receiver
from tests.support import pgpair
from tests.support.apps import add_channel
from tests.support.payloads import meta_incoming
from tests.support.procs import Process, free_port, serve
from tests.support.procs import command_output as acklog

UNAVAILABLE = pgpair.unavailable()
#: in CI (``CI`` set) the test runs or fails, never skips
pytestmark = pytest.mark.skipif(
    UNAVAILABLE is not None and not os.environ.get("CI"), reason=str(UNAVAILABLE)
)

APP_SECRET = "meta-app-secret-for-the-failover-test"
CLIENTS = 4
#: webhooks acknowledged before the kill, and after the first 200 that follows it
BEFORE, AFTER = 300, 200
#: answers to webhooks sent after the kill before the standby is promoted
HELD = 200
#: seconds any one wait may take before the test fails saying what did not happen
WAIT = 60.0


class Answer(msgspec.Struct, frozen=True):
    """One request: when it was sent and answered (loop time), its status (None: the
    connection failed), its Retry-After, and the sha256 of its body."""

    sent: float
    answered: float
    status: int | None
    retry_after: str | None
    digest: str


def count(answers: list[Answer]) -> dict[int | str, int]:
    return dict(collections.Counter("error" if a.status is None else a.status for a in answers))


class SignedLoad:
    """``CLIENTS`` concurrent clients POST distinct signed webhooks until ``stop`` is set;
    every answer is recorded, every 2xx body kept by its sha256."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self.acked: dict[str, bytes] = {}
        self.stop = asyncio.Event()
        self._changed = asyncio.Condition()
        self._ids = itertools.count()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._client(session) for _ in range(CLIENTS)))

    async def _client(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            body = meta_incoming(f"wamid.failover.{next(self._ids):07d}", text="failover")
            signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, "sha256").hexdigest()
            headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
            sent = loop.time()
            status: int | None = None
            retry_after = None
            try:
                async with session.post(self.url, data=body, headers=headers) as resp:
                    await resp.read()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
            except (aiohttp.ClientError, OSError):
                pass  # the connection was lost: no answer, nothing promised
            digest = hashlib.sha256(body).hexdigest()
            self.answers.append(Answer(sent, loop.time(), status, retry_after, digest))
            if status is not None and 200 <= status < 300:
                self.acked[digest] = body
            async with self._changed:
                self._changed.notify_all()

    async def until(self, what: str, predicate: Callable[[], bool]) -> None:
        try:
            async with asyncio.timeout(WAIT), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(
                f"load: {what} did not happen within {WAIT:g}s; answers {count(self.answers)}"
            ) from None

    def first_200_sent_after(self, t: float) -> Answer | None:
        found = [a for a in self.answers if a.sent >= t and a.status == 200]
        return min(found, key=lambda a: a.answered) if found else None


async def poll(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Await ``check()`` until it is true. PostgreSQL sends no event when a checkpoint row
    reaches a position, so the row is read every 50 ms, for at most ``WAIT`` seconds."""
    try:
        async with asyncio.timeout(WAIT):
            while not await check():  # noqa: ASYNC110 (no event to await: see above)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {WAIT:g}s") from None


async def readyz(port: int) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
            return resp.status


@pytest.fixture
async def pair() -> AsyncIterator[tuple[pgpair.Node, pgpair.Node]]:
    assert UNAVAILABLE is None, f"the failover test cannot run here: {UNAVAILABLE}"
    async with pgpair.primary_and_standby() as nodes:
        yield nodes


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


async def acklog_database(primary: pgpair.Node, standby: pgpair.Node) -> str:
    """Database ``acklog`` on the primary, migrated; its multi-host URL."""
    admin = await asyncpg.connect(primary.dsn())
    try:
        await admin.execute("CREATE DATABASE acklog")
    finally:
        await admin.close()
    dsn = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/acklog"
        "?target_session_attrs=read-write"
    )
    await wait_and_migrate(dsn, timeout=30)
    return dsn


def restarts(server: Process) -> list[str]:
    return [line for line in server.lines if "restarting in" in line]


async def test_primary_killed_standby_promoted_nothing_acknowledged_lost(
    pair: tuple[pgpair.Node, pgpair.Node], receiver: Receiver
) -> None:
    primary, standby = pair
    dsn = await acklog_database(primary, standby)
    await add_channel(dsn, "shop", "meta", secrets_=[APP_SECRET])
    conn = await asyncpg.connect(dsn)
    try:
        _, feed_secret = await subs.add(conn, "crm", receiver.url, from_start=True)
        assert await failover_risk(conn) is None, "the standby is synchronous"
        await conn.execute("SET synchronous_commit = local")  # this session only
        assert "synchronous_commit is 'local'" in str(await failover_risk(conn))
    finally:
        await conn.close()

    port = free_port()
    server = await serve(dsn, port, ACKLOG_DB_WAIT="30", ACKLOG_FEED_POLL="0.2").start()
    supervisor = psutil.Process(server.pid)
    children_before = sorted(c.pid for c in supervisor.children())
    load = SignedLoad(f"http://127.0.0.1:{port}/hooks/shop")
    runner = asyncio.create_task(load.run())
    loop = asyncio.get_running_loop()
    try:
        await load.until(f"{BEFORE} acknowledged", lambda: len(load.acked) >= BEFORE)
        # the feed is live before the kill: events already reached the receiver
        await receiver.wait(lambda: len(receiver.requests) > 0, timeout=WAIT)
        acked_at_kill = len(load.acked)
        killed_at = loop.time()
        primary.kill9()
        # its backends live until they notice (a commit they finish may still reach the
        # standby, and be answered 200): the gap starts when the last one is gone
        await primary.orphans_gone()
        gone_at = loop.time()
        await load.until(
            f"{HELD} answers to webhooks sent after the old primary was gone",
            lambda: sum(a.sent >= gone_at for a in load.answers) >= HELD,
        )
        ready_without_primary = await readyz(port)
        promoting_at = loop.time()
        await standby.promote()
        promoted_at = loop.time()
        await load.until(
            "a 200 for a webhook sent after the promotion",
            lambda: load.first_200_sent_after(promoted_at) is not None,
        )
        first = load.first_200_sent_after(gone_at)
        assert first is not None
        recovered_at = first.answered
        acked_at_recovery = len(load.acked)
        await load.until(
            f"{AFTER} more acknowledged after the recovery",
            lambda: len(load.acked) >= acked_at_recovery + AFTER,
        )
    finally:
        load.stop.set()
        async with asyncio.timeout(WAIT):
            await runner

    try:
        assert server.proc is not None and server.proc.returncode is None, "acklog serve died"
        assert supervisor.is_running(), "the supervisor is gone"
        assert primary.postmaster_gone(), "the old primary's postmaster still runs"
        children_after = sorted(c.pid for c in supervisor.children())
        ready_after = await readyz(port)

        new = await asyncpg.connect(standby.dsn("acklog"))
        try:
            assert await new.fetchval("SELECT NOT pg_is_in_recovery()"), "no promotion"
            rows = await new.fetch("SELECT position, body FROM events")
            stored = {hashlib.sha256(r["body"]).hexdigest(): r["position"] for r in rows}
            head = max(r["position"] for r in rows)

            def at_head(name: str) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    sql = "SELECT position FROM checkpoints WHERE name = $1"
                    return bool(await new.fetchval(sql, name) == head)

                return check

            await poll("the projector reaching the log's head", at_head(LIVE_CHECKPOINT))
            await poll("the feed's outbox reaching the log's head", at_head(FEED_CHECKPOINT))
            acked_positions = {stored[d] for d in load.acked if d in stored}
            feed = await new.fetch("SELECT id::text AS id, position FROM feed.events")
        finally:
            await new.close()
        owed = {r["id"] for r in feed if r["position"] in acked_positions}
        without_event = acked_positions - {r["position"] for r in feed}

        def received() -> set[str]:
            return {headers["webhook-id"] for headers, _, _ in receiver.requests}

        try:
            await receiver.wait(lambda: owed <= received(), timeout=WAIT)
        except TimeoutError:
            raise AssertionError(
                f"the feed did not deliver {len(owed - received())} of the {len(owed)} events"
                f" derived from acknowledged webhooks within {WAIT:g}s"
            ) from None
        delivered = [e.id for e in receiver.verified(feed_secret)]
        verify_code, verify_out = await acklog(dsn, "verify")
    finally:
        await server.stop()

    lost = set(load.acked) - set(stored)
    dying = [a for a in load.answers if killed_at <= a.sent < gone_at]
    gap = [a for a in load.answers if a.sent >= gone_at and a.answered < recovered_at]
    without_primary = [a for a in load.answers if a.sent >= gone_at and a.answered < promoting_at]
    in_flight = [a for a in load.answers if a.sent < killed_at <= a.answered]
    warned = [line for line in server.lines if "WARNING" in line and "replicat" in line]
    print(
        f"\nfailover: {len(load.answers)} requests from {CLIENTS} clients, {len(load.acked)}"
        f" acknowledged ({acked_at_kill} before the kill), answers {count(load.answers)};"
        f" old primary's processes gone {gone_at - killed_at:.3f}s after the SIGKILL (answers"
        f" to webhooks sent meanwhile {count(dying)}); no primary for"
        f" {promoting_at - gone_at:.3f}s more (until {HELD} answers), pg_ctl promote"
        f" {promoted_at - promoting_at:.3f}s; first 200 {recovered_at - killed_at:.3f}s after"
        f" the SIGKILL, {recovered_at - promoting_at:.3f}s after promote began; gap answers"
        f" {count(gap)}, slowest {max((a.answered - a.sent for a in gap), default=0):.3f}s;"
        f" in flight at the kill {count(in_flight)}; acknowledged but lost {len(lost)};"
        f" /readyz {ready_without_primary} without a primary, {ready_after} after;"
        f" children restarted {len(restarts(server))} (pids {children_before} ->"
        f" {children_after}); feed: {len(owed)} events owed, {len(delivered)} deliveries,"
        f" {len(delivered) - len(set(delivered))} duplicates"
    )
    try:
        assert not lost, f"{len(lost)} acknowledged webhooks are not in the new primary's log"
        assert set(count(load.answers)) <= {200, 503, "error"}, count(load.answers)
        assert 200 not in count(without_primary), "a 200 while there was no primary"
        assert set(count(gap)) <= {503, "error"}, count(gap)
        assert all(a.retry_after for a in load.answers if a.status == 503), (
            "503 without Retry-After"
        )
        assert (ready_without_primary, ready_after) == (503, 200)
        assert not without_event, f"{len(without_event)} acknowledged webhooks made no feed event"
        assert set(delivered) <= {r["id"] for r in feed}, "delivered, then lost by the failover"
        assert not warned, warned
        assert verify_code == 0 and "equal a rebuild" in verify_out, verify_out
    except AssertionError:
        print("acklog serve's last lines:", *server.lines[-60:], sep="\n")
        raise


async def test_the_feed_warns_when_standbys_replicate_asynchronously() -> None:
    """With no synchronous standby a failover may lose what was answered 200, and what the
    feed delivered: the feed's outbox says so in a WARNING when it starts leading."""
    assert UNAVAILABLE is None, f"the failover test cannot run here: {UNAVAILABLE}"
    async with pgpair.primary_and_standby(synchronous=False) as (primary, standby):
        dsn = await acklog_database(primary, standby)
        conn = await asyncpg.connect(dsn)
        try:
            risk = await failover_risk(conn)
        finally:
            await conn.close()
        assert risk is not None and "synchronous_standby_names is empty" in risk, risk
        assert f"({pgpair.STANDBY_NAME})" in risk, risk
        feed = await Process(["serve", "--role", "feed"], dsn).start()
        try:
            await feed.wait_lines(
                lambda lines: any("WARNING" in line and risk in line for line in lines),
                timeout=WAIT,
            )
        finally:
            await feed.stop()


def black_hole(port: int) -> list[socket.socket]:
    """A listener on 127.0.0.1:``port`` that never accepts, its queue full: the kernel drops
    every further SYN, so a connection attempt gets no answer at all, as from a machine that
    is gone (no refusal). The sockets are returned to be closed."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(0)
    held = [listener]
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        held.append(filler)
    return held


async def test_a_primary_that_vanishes_without_refusing(
    pair: tuple[pgpair.Node, pgpair.Node],
) -> None:
    """The old primary's address swallows connection attempts (a machine that is gone), not
    refuses them: acklog still reaches the promoted standby, each host of DATABASE_URL tried
    for at most ``HOST_TIMEOUT`` seconds (asyncpg alone spends its whole connect timeout on
    the first host and never tries the second)."""
    primary, standby = pair
    dsn = await acklog_database(primary, standby)
    await add_channel(dsn, "shop", "meta", secrets_=[APP_SECRET])
    port = free_port()
    server = await serve(dsn, port, ACKLOG_DB_WAIT="30").start()
    load = SignedLoad(f"http://127.0.0.1:{port}/hooks/shop")
    runner = asyncio.create_task(load.run())
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []
    try:
        await load.until("100 acknowledged", lambda: len(load.acked) >= 100)
        killed_at = loop.time()
        primary.kill9()
        await primary.orphans_gone()
        gone_at = loop.time()
        held = black_hole(primary.port)
        with pytest.raises(TimeoutError):  # the hole holds: no answer, no refusal
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", primary.port), 1.0)
        promoting_at = loop.time()
        await standby.promote()
        await load.until(
            "a 200 for a webhook sent after the old primary was gone",
            lambda: load.first_200_sent_after(gone_at) is not None,
        )
        first = load.first_200_sent_after(gone_at)
        assert first is not None
        n = len(load.acked)
        await load.until("100 more acknowledged", lambda: len(load.acked) >= n + 100)
    finally:
        load.stop.set()
        async with asyncio.timeout(WAIT):
            await runner
        await server.stop()
        for s in held:
            s.close()
    new = await asyncpg.connect(standby.dsn("acklog"))
    try:
        stored = {
            hashlib.sha256(r["body"]).hexdigest()
            for r in await new.fetch("SELECT body FROM events")
        }
    finally:
        await new.close()
    lost = set(load.acked) - stored
    gap = [a for a in load.answers if a.sent >= gone_at and a.answered < first.answered]
    slowest = max(a.answered - a.sent for a in load.answers if a.sent >= gone_at)
    print(
        f"\nvanished primary: first 200 {first.answered - promoting_at:.3f}s after promote began"
        f" ({first.answered - killed_at:.3f}s after the SIGKILL), answers before it {count(gap)},"
        f" slowest answer after the kill {slowest:.3f}s; acknowledged {len(load.acked)},"
        f" lost {len(lost)}"
    )
    assert not lost, f"{len(lost)} acknowledged webhooks are not in the new primary's log"
    assert set(count(load.answers)) <= {200, 503, "error"}, count(load.answers)
    assert set(count(gap)) <= {503, "error"}, count(gap)
    assert first.answered > promoting_at, "a 200 while there was no primary"
    assert first.answered - promoting_at < 2 * HOST_TIMEOUT + 10, "too slow to find the primary"


def test_split_hosts() -> None:
    """Each host of a multi-host DSN on its own, with everything else kept; one host: as is."""
    assert split_hosts("postgresql://u:p@a:1,b,[::1]:3/db?target_session_attrs=read-write") == [
        "postgresql://u:p@a:1/db?target_session_attrs=read-write",
        "postgresql://u:p@b/db?target_session_attrs=read-write",
        "postgresql://u:p@[::1]:3/db?target_session_attrs=read-write",
    ]
    for one in ("postgresql://u@a:1/db", "postgresql://postgres:@/postgres?host=/tmp/x"):
        assert split_hosts(one) == [one]
