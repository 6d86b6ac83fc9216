"""Process roles with real processes: no webhook pays for the query API or the projector.

``acklog serve`` runs N ingest workers on one port, the API (query API, ``/metrics``) and the
projector in processes of their own. Each test puts one heavy neighbour beside a steady flow
of webhooks and measures the webhooks' p99 while it runs (figures printed with ``pytest -s``,
quoted in docs/reliability.md). ``make soak`` runs them ``ACKLOG_SOAK`` times longer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from eventstore.read import head, read, read_page
from tests.projections.fold.test_projector import leader_pid
from tests.service.ingest.test_faults import process_tree, rss_mib
from tests.support.apps import add_channel
from tests.support.console_helpers import csrf_of, sign_in
from tests.support.payloads import waha_outgoing
from tests.support.procs import Process, free_port
from tests.support.samples import sample

SOAK = max(int(os.environ.get("ACKLOG_SOAK", "1")), 1)
KEY = "roles-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MIB = 1024 * 1024


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


def role_pids(supervisor: int, role: str) -> list[int]:
    """The supervisor's children running ``role`` (from their command lines)."""
    out = []
    for pid in process_tree(supervisor)[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--role" in argv and argv[argv.index(b"--role") + 1] == role.encode():
            out.append(pid)
    return out


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)]


class Flow:
    """``clients`` webhook senders, each posting as soon as its last answer came back."""

    def __init__(self, url: str, clients: int = 8) -> None:
        self.url = url
        self.clients = clients
        self.samples: list[tuple[float, float, int]] = []  # (sent at, seconds, status)
        self.stop = asyncio.Event()
        self._ids = itertools.count()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:

            async def client() -> None:
                while not self.stop.is_set():
                    body = waha_outgoing(f"FLOW{next(self._ids):07d}")
                    started = loop.time()
                    async with session.post(self.url, data=body) as resp:
                        await resp.read()
                    self.samples.append((started, loop.time() - started, resp.status))

            await asyncio.gather(*(client() for _ in range(self.clients)))

    def window(self, since: float, until: float) -> list[float]:
        return [s for t, s, _ in self.samples if since <= t <= until]

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for _, _, status in self.samples:
            out[status] = out.get(status, 0) + 1
        return out


async def started(dsn: str, *args: str, **env: str) -> Process:
    port = free_port()
    process = Process(["serve", "--port", str(port), *args], dsn, marker="acklog listening", **env)
    process.port = port  # type: ignore[attr-defined]
    return await process.start()


def base(process: Process) -> str:
    return f"http://127.0.0.1:{process.port}"  # type: ignore[attr-defined]


async def flow_for(dsn: str, process: Process, clients: int = 8) -> tuple[Flow, asyncio.Task[None]]:
    token = await add_channel(dsn, "flow", "waha")
    flow = Flow(f"{base(process)}/hooks/flow?token={token}", clients)
    task = asyncio.create_task(flow.run())
    async with asyncio.timeout(30):
        while True:  # warmed up: every client has been answered a few times
            if len(flow.samples) >= 50:
                break
            await asyncio.sleep(0.05)
    return flow, task


async def calm_p99(flow: Flow, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    since = loop.time()
    await asyncio.sleep(seconds)
    return p99(flow.window(since, loop.time()))


async def test_workers_share_one_port_and_metrics_count_them_all(
    dsn: str, conn: asyncpg.Connection
) -> None:
    metrics_port = free_port()
    server = await started(
        dsn, "--workers", "3", ACKLOG_API_KEY=KEY, ACKLOG_METRICS_PORT=str(metrics_port)
    )
    token = await add_channel(dsn, "w", "waha")
    sent = 300 * SOAK
    try:
        workers = role_pids(server.pid, "ingest")
        assert len(workers) == 3
        # 30 connections held open at once: the kernel spreads them over the workers
        connector = aiohttp.TCPConnector(limit=30, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            ids = itertools.count()

            async def client() -> None:
                for _ in range(sent // 30):
                    body = waha_outgoing(f"W{next(ids):06d}")
                    async with session.post(
                        f"{base(server)}/hooks/w?token={token}", data=body
                    ) as resp:
                        assert resp.status == 200
                        await resp.read()

            await asyncio.gather(*(client() for _ in range(30)))
            held = {pid: established(pid, server.port) for pid in workers}  # type: ignore[attr-defined]
            async with session.get(f"{base(server)}/metrics") as resp:
                assert resp.status == 404, "ACKLOG_METRICS_PORT moves /metrics off the public port"
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            async with session.get(f"{base(server)}/v1/channels", headers=AUTH) as resp:
                assert resp.status == 200, "the query API answers on the public port"
    finally:
        await server.stop()
    stored = stored_count(text)
    print(
        f"3 ingest workers on one port: connections held per worker {sorted(held.values())},"
        f" {sent} webhooks sent, /metrics counts {stored:.0f} stored"
    )
    assert all(n > 0 for n in held.values()), f"a worker took no connection: {held}"
    assert stored == sent, "/metrics (on ACKLOG_METRICS_PORT) counts the webhooks of every worker"
    assert await head(conn) == sent
    assert server.proc is not None and server.proc.returncode == 0, "clean SIGTERM shutdown"


def stored_count(exposition: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("acklog_webhooks_received_total{") and 'outcome="stored"' in line
    )


def established(pid: int, port: int) -> int:
    """TCP connections ``pid`` holds on local ``port`` (from /proc: its socket inodes)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in itertools.islice(f, 1, None):
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


async def test_supervisor_restarts_a_killed_projector(dsn: str, conn: asyncpg.Connection) -> None:
    server = await started(dsn)
    token = await add_channel(dsn, "w", "waha")
    loop = asyncio.get_running_loop()
    try:
        for cycle in range(SOAK):
            old = await leader_projector(conn)
            os.kill(old, signal.SIGKILL)
            killed = loop.time()
            async with aiohttp.ClientSession() as session:
                for i in range(20):  # webhooks keep being taken while the projector is away
                    body = waha_outgoing(f"K{cycle}-{i}")
                    async with session.post(
                        f"{base(server)}/hooks/w?token={token}", data=body
                    ) as resp:
                        assert resp.status == 200
            new = await leader_projector(conn, not_pid=old)
            took = loop.time() - killed
            target = await head(conn)
            async with asyncio.timeout(30):
                await caught_up_to(conn, target)
            caught_up = loop.time() - killed
            assert new in role_pids(server.pid, "projector")
            print(
                f"projector child kill -9: restarted and leading after {took:.2f}s,"
                f" caught up with the {target} events after {caught_up:.2f}s"
            )
    finally:
        await server.stop()
    assert took < 15


async def caught_up_to(conn: asyncpg.Connection, target: int) -> None:
    """Until the projector's checkpoint reaches ``target`` (another process: poll it)."""
    while True:
        position = await conn.fetchval("SELECT position FROM checkpoints WHERE name = 'messages'")
        if (position or 0) >= target:
            return
        await asyncio.sleep(0.05)


async def leader_projector(conn: asyncpg.Connection, not_pid: int | None = None) -> int:
    """The pid of the projector process holding the leader lock (waits for one)."""
    async with asyncio.timeout(30):
        while True:
            backend = await leader_pid(conn)
            if backend:
                app = await conn.fetchval(
                    "SELECT application_name FROM pg_stat_activity WHERE pid = $1", backend
                )
                if app and app.startswith("acklog-projector-"):
                    pid = int(app.rsplit("-", 1)[1])
                    if pid != not_pid:
                        return pid
            await asyncio.sleep(0.05)


async def test_event_pages_over_huge_bodies_leave_webhooks_alone(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """100 stored bodies of 1 MiB; 8 readers page through all of them while webhooks flow."""
    received = dt.datetime.now(dt.UTC)
    for i in range(100):
        body = b'{"pad":"' + (b"%03d" % i) + b"x" * (MIB - 16) + b'"}'
        await write_batch(
            conn,
            [
                NewEvent(
                    channel="big", provider="waha", body=body, received_at=received
                ).with_dedup_key(None)
            ],
        )
    server = await started(dsn, "--no-projector", ACKLOG_API_KEY=KEY)
    loop = asyncio.get_running_loop()
    try:
        flow, flowing = await flow_for(dsn, server)
        calm = await calm_p99(flow, 2)
        before = rss_mib(server.pid)
        peak = before
        pages = 0
        biggest = 0

        async def reader(session: aiohttp.ClientSession) -> None:
            nonlocal pages, biggest
            after = 0
            while True:
                async with session.get(
                    f"{base(server)}/v1/events",
                    params={"limit": "100", "after": str(after)},
                    headers=AUTH,
                ) as resp:
                    assert resp.status == 200
                    raw = await resp.read()
                pages += 1
                biggest = max(biggest, len(raw))
                page = json.loads(raw)
                if page["next_after"] is None:
                    return
                after = page["next_after"]

        async def sample_rss(done: asyncio.Event) -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mib(server.pid))
                await asyncio.sleep(0.05)

        since = loop.time()
        done = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(done))
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(reader(session) for _ in range(8 * SOAK)))
        done.set()
        await sampler
        during = flow.window(since, loop.time())
        flow.stop.set()
        await flowing
    finally:
        await server.stop()
    print(
        f"/v1/events over 100 x 1 MiB bodies: {pages} pages by 8 readers in"
        f" {loop.time() - since:.1f}s, largest answer {biggest / MIB:.2f} MiB; webhooks:"
        f" {len(during)} answered during, p99 {p99(during) * 1000:.0f} ms (calm"
        f" {calm * 1000:.0f} ms); server RSS (all processes) {before:.0f} MiB before, peak"
        f" {peak:.0f} MiB"
    )
    assert set(flow.statuses()) == {200}
    assert p99(during) < 1.0
    assert biggest < 4 * MIB, "a page's size is bounded"
    assert peak - before < 256, "memory stays flat"


async def test_slow_api_requests_leave_webhooks_alone(dsn: str, conn: asyncpg.Connection) -> None:
    """30 API requests stuck behind a lock on the read model, as during a long maintenance
    statement, hold every connection of the API's pool; webhooks use pools of their own. (One
    test client sends all 30: the relay's per-address share is raised to let it.)"""
    server = await started(dsn, "--no-projector", ACKLOG_API_KEY=KEY, ACKLOG_RELAY_PER_CLIENT="32")
    await add_channel(dsn, "shop", "waha")
    loop = asyncio.get_running_loop()
    try:
        flow, flowing = await flow_for(dsn, server)
        calm = await calm_p99(flow, 2)
        blocker = await connect(dsn)
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE rm.messages IN ACCESS EXCLUSIVE MODE")
        answered: list[int] = []
        async with aiohttp.ClientSession() as session:

            async def slow() -> None:
                async with session.get(
                    f"{base(server)}/v1/channels/shop/messages", headers=AUTH
                ) as resp:
                    await resp.read()
                    answered.append(resp.status)

            requests = [asyncio.create_task(slow()) for _ in range(30)]
            since = loop.time()
            await asyncio.sleep(4 * SOAK)
            stuck = 30 - len(answered)
            during = flow.window(since, loop.time())
            await tx.rollback()
            await blocker.close()
            await asyncio.gather(*requests)
        flow.stop.set()
        await flowing
    finally:
        await server.stop()
    print(
        f"30 API requests stuck on a lock for {4 * SOAK}s: {stuck} still waiting at the end,"
        f" then answered {sorted(set(answered))}; webhooks: {len(during)} answered meanwhile,"
        f" p99 {p99(during) * 1000:.0f} ms (calm {calm * 1000:.0f} ms)"
    )
    assert stuck == 30, "the API requests were really slow"
    assert set(flow.statuses()) == {200}
    assert p99(during) < 1.0


def meta_batch(n: int, seed: int) -> bytes:
    """One Meta webhook of ``n`` statuses (the sample's envelope and status, ids varied),
    as small per status as Meta's format allows, to fit 1 MiB."""
    raw, _ = sample("meta", "status_read.json")
    doc = json.loads(raw)
    value = doc["entry"][0]["changes"][0]["value"]
    template = value["statuses"][0]
    kinds = ("sent", "read")
    value["statuses"] = [{"id": f"{seed}{i:05d}", "status": kinds[i % 2]} for i in range(n)]
    value.pop("contacts", None)
    assert set(template) >= {"id", "status"}
    return json.dumps(doc, separators=(",", ":")).encode()


async def test_huge_meta_batches_leave_webhooks_alone(dsn: str, conn: asyncpg.Connection) -> None:
    """Five 1 MiB Meta webhooks of 32,000 statuses each: the projector folds 160,000 facts in
    its own process while webhooks flow."""
    server = await started(dsn)
    token = await add_channel(dsn, "meta", "meta")
    loop = asyncio.get_running_loop()
    batches = [meta_batch(32_000, seed) for seed in range(5 * SOAK)]
    assert all(len(b) <= MIB for b in batches), [len(b) for b in batches]
    try:
        flow, flowing = await flow_for(dsn, server)
        calm = await calm_p99(flow, 2)
        since = loop.time()
        async with aiohttp.ClientSession() as session:
            for body in batches:
                async with session.post(
                    f"{base(server)}/hooks/meta?token={token}",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
        target = await head(conn)
        async with asyncio.timeout(120 * SOAK):
            await caught_up_to(conn, target)
        folded = loop.time() - since
        during = flow.window(since, loop.time())
        flow.stop.set()
        await flowing
        messages = await conn.fetchval("SELECT count(*) FROM rm.messages WHERE channel = 'meta'")
    finally:
        await server.stop()
    print(
        f"{len(batches)} Meta batches of 32,000 statuses ({len(batches[0]) / MIB:.2f} MiB each):"
        f" folded in {folded:.1f}s; webhooks: {len(during)} answered meanwhile,"
        f" p99 {p99(during) * 1000:.0f} ms (calm {calm * 1000:.0f} ms)"
    )
    assert messages == 32_000 * len(batches)
    assert set(flow.statuses()) == {200}
    assert p99(during) < 1.0


async def test_serve_fails_fast_when_the_port_is_taken(dsn: str) -> None:
    """A port held by another program (without SO_REUSEPORT): no worker can bind, so the
    supervisor stops the other children and exits 1 instead of serving half."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = Process(["serve", "--port", str(port)], dsn)
        await process.start()
        assert process.proc is not None
        async with asyncio.timeout(60):
            code = await process.proc.wait()
        await process.stop()
    print(f"serve on a taken port: exit {code}")
    assert code == 1
    assert any("failed to start" in line for line in process.lines), process.lines[-5:]
    assert not any("acklog listening" in line for line in process.lines)


async def test_each_role_runs_alone(dsn: str, conn: asyncpg.Connection) -> None:
    """``serve --role api``, ``--role ingest`` (relaying to that API over TCP) and
    ``--role projector``, each a process of its own, make one working acklog."""
    api_port, ingest_port = free_port(), free_port()
    api = Process(
        ["serve", "--role", "api", "--port", str(api_port)],
        dsn,
        marker="acklog API listening",
        ACKLOG_API_KEY=KEY,
    )
    ingest = Process(
        ["serve", "--role", "ingest", "--port", str(ingest_port)],
        dsn,
        marker="acklog ingest worker listening",
        ACKLOG_API_UPSTREAM=f"http://127.0.0.1:{api_port}",
    )
    projector = Process(["serve", "--role", "projector"], dsn)
    token = await add_channel(dsn, "w", "waha")
    try:
        await asyncio.gather(api.start(), ingest.start(), projector.start())
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{ingest_port}"
            async with session.post(f"{url}/hooks/w?token={token}", data=waha_outgoing("A1")) as r:
                assert r.status == 200
            async with asyncio.timeout(30):
                await caught_up_to(conn, 1)
            async with session.get(f"{url}/v1/channels/w/messages", headers=AUTH) as r:
                assert r.status == 200, "relayed to the API process over TCP"
                page = await r.json()
            async with session.get(f"http://127.0.0.1:{api_port}/hooks/w") as r:
                assert r.status == 404, "the API process takes no webhooks"
    finally:
        await asyncio.gather(api.stop(), ingest.stop(), projector.stop())
    assert [m["message_id"].rsplit("_", 1)[1] for m in page["items"]] == ["A1"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=0, max_size=25),
    max_bytes=st.integers(1, 1000),
    limit=st.integers(1, 10),
)
async def test_pages_by_bytes_give_every_event_once_and_stay_bounded(
    conn: asyncpg.Connection, sizes: list[int], max_bytes: int, limit: int
) -> None:
    """For any body sizes, byte budget and limit: following ``next_after`` yields every event
    once, in order; a page holds at most ``limit`` events and ``max_bytes`` of bodies unless
    it is a single event."""
    channel = f"p{next(_examples)}"
    received = dt.datetime.now(dt.UTC)
    events = [
        NewEvent(channel=channel, provider="waha", body=b"%d:" % i + b"x" * n, received_at=received)
        for i, n in enumerate(sizes)
    ]
    written = await write_batch(conn, [e.with_dedup_key(None) for e in events]) if events else []
    seen: list[int] = []
    after = 0
    for _ in range(len(sizes) + 1):
        page, more = await read_page(
            conn, after=after, limit=limit, max_bytes=max_bytes, channel=channel
        )
        assert len(page) <= limit
        assert len(page) == 1 or sum(len(e.body) for e in page) <= max_bytes
        seen += [e.position for e in page]
        if not more:
            break
        assert page, "more follows, so the page is not empty"
        after = page[-1].position
    assert seen == [w.position for w in written]


_examples = itertools.count()


async def test_sigterm_answers_the_webhook_a_worker_already_accepted(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """A webhook whose head a worker accepted (it answered ``100 Continue``) and whose body is
    sent only after SIGTERM reached the supervisor is still stored and answered 200, and
    ``acklog serve`` exits 0."""
    server = await started(dsn, "--no-projector")
    token = await add_channel(dsn, "w", "waha")
    body = waha_outgoing("DRAIN1")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # type: ignore[attr-defined]
    try:
        writer.write(
            f"POST /hooks/w?token={token} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            while True:  # the workers closed their listening socket: the drain has begun
                try:
                    _, probe = await asyncio.open_connection("127.0.0.1", server.port)  # type: ignore[attr-defined]
                except OSError:
                    break
                probe.close()
                await asyncio.sleep(0.05)
        writer.write(body)
        await writer.drain()
        async with asyncio.timeout(15):
            answer = await reader.read()
        async with asyncio.timeout(30):
            code = await server.proc.wait()
    finally:
        writer.close()
        await server.stop()
    status_line = answer.split(b"\r\n", 1)[0]
    print(f"SIGTERM mid-request: answer {status_line!r}, exit {code}")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert [e.body for e in await read(conn)] == [body]
    assert code == 0


async def test_relayed_clients_keep_their_own_address_for_the_api_limits(dsn: str) -> None:
    """The API process sees relayed requests arrive on its unix socket; the relay appends the
    address it saw, so one client's failed console logins never lock out another's."""
    server = await started(dsn, ACKLOG_API_KEY=KEY, ACKLOG_AUTH_FAILURES_PER_MINUTE="3")
    try:
        # clients keep their own cookies (the login form's CSRF cookie): the relay keeps none
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as attacker:
            statuses = [(await sign_in(attacker, base(server), "wrong")).status for _ in range(5)]
            # a forged X-Forwarded-For from a direct client is its own claim, not an escape
            async with attacker.get(f"{base(server)}/ui/login") as form:
                token = csrf_of(await form.text())
            async with attacker.post(
                f"{base(server)}/ui/login",
                data={"csrf": token, "key": KEY, "next": "/ui/"},
                headers={"Origin": base(server), "X-Forwarded-For": "198.51.100.7"},
                allow_redirects=False,
            ) as spoofed:
                assert spoofed.status == 429
        assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429], statuses
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as other:
            answer = await sign_in(other, base(server), KEY)
        assert answer.status == 303, "another address signs in while the first is limited"
    finally:
        await server.stop()
