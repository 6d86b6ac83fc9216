"""Every authenticated webhook is storable and no webhook fails for another (invariant 12).

Real ``acklog serve`` processes on both event loops, real PostgreSQL: poison webhooks beside
legitimate load, a batch with one event the database refuses, the database stopped (503 with
Retry-After, never 500, also once the channel cache has expired), rate-limited clients that
cost no query, credential-like headers, gzip bodies stored as received.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import itertools
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from eventstore.append import Appender
from eventstore.errors import EventRejected
from eventstore.events import NewEvent, dedup_key, header_bytes
from eventstore.pool import connect
from eventstore.read import read
from projections import providers
from projections.providers.meta import signature as meta_signature
from service.core.database import wait_and_migrate
from service.ingest.headers import is_credential
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings
from tests.support.payloads import waha_ack
from tests.support.procs import Process, free_port, serve
from tests.support.samples import sample

Client = Callable[..., Awaitable[TestClient]]
LOOPS = ["asyncio", "uvloop"]


async def raw_post(
    port: int, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 POST written byte for byte (aiohttp's client will not send non-UTF-8)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % path.encode()
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        writer.write(head + body)
        async with asyncio.timeout(20):
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    raw_headers, _, payload = rest.partition(b"\r\n\r\n")
    fields = {}
    for line in raw_headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        fields[name.decode().strip().lower()] = value.decode().strip()
    return int(status_line.split()[1]), fields, payload


def waha_event(event_id: str, n: int) -> bytes:
    return json.dumps(
        {"id": event_id, "event": "message.ack", "session": "default", "payload": {"n": n}}
    ).encode()


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


@pytest.mark.parametrize("loop", LOOPS)
async def test_poison_beside_32_legitimate_clients(
    dsn: str, conn: asyncpg.Connection, loop: str
) -> None:
    legit_token = await add_channel(dsn, "legit", "wamm")
    wamm_token = await add_channel(dsn, "odd", "wamm")
    waha_token = await add_channel(dsn, "w", "waha")
    port = free_port()
    proc = await serve(dsn, port, ACKLOG_LOOP=loop).start()
    assert any(f"event loop: {loop})" in line for line in proc.lines), proc.lines
    duration, statuses, acked = 3.0, dict[int, int](), list[bytes]()
    ids = itertools.count()
    deadline = time.monotonic() + duration

    async def legit(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            body = b'{"event":"msg_state","msg_data":{"msg_id":%d,"state":"delivered"}}' % next(ids)
            async with session.post(
                f"http://127.0.0.1:{port}/hooks/legit?token={legit_token}", data=body
            ) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    acked.append(body)

    poison: list[tuple[str, list[tuple[bytes, bytes]], bytes]] = []
    for i in range(int(duration * 20)):
        kind = i % 4
        if kind == 0:
            poison.append(
                (f"/hooks/odd?token={wamm_token}", [(b"X-Weird", b"caf\xe9")], b'{"p":%d}' % i)
            )
        elif kind == 1:
            ctype = b"application/json; charset=\xff\xfe"
            poison.append(
                (f"/hooks/odd?token={wamm_token}", [(b"Content-Type", ctype)], b'{"p":%d}' % i)
            )
        elif kind == 2:
            body = waha_event(f"evt_\u0000{i}", i)
            poison.append((f"/hooks/w?token={waha_token}", [], body))
        else:
            body = waha_event(f"evt_{i}_" + "x" * 3100, i)
            poison.append((f"/hooks/w?token={waha_token}", [], body))

    async def poisoner() -> list[int]:
        answers = []
        for path, headers, body in poison:  # ~20/s, spread over the run
            status, _, _ = await raw_post(port, path, headers, body)
            answers.append(status)
            await asyncio.sleep(1 / 20)
        return answers

    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            poisoned, *_ = await asyncio.gather(poisoner(), *(legit(session) for _ in range(32)))
    finally:
        await proc.stop()
    print(f"\n[{loop}] legitimate answers {statuses}; poison answers {set(poisoned)}")
    assert statuses.get(503, 0) == 0 and set(statuses) == {200}, statuses
    assert poisoned == [200] * len(poison)
    stored = {e.body: e for e in await read(conn, limit=1_000_000)}
    assert all(b in stored for b in acked), "every legitimate 200 is in the log"
    for path, headers, body in poison:
        event = stored[body]  # every poison webhook is stored, byte for byte
        for name, value in headers:
            assert header_bytes(event.headers, name.decode().lower()) == value
        if headers and headers[0][0] == b"Content-Type":
            assert event.content_type is None and "content-type;base64" in event.headers
        if "/hooks/w" in path:
            assert event.dedup_key.startswith("idsha256:") and len(event.dedup_key) < 80


async def test_odd_event_ids_still_deduplicate(client: TestClient, dsn: str) -> None:
    token = await add_channel(dsn, "w", "waha")
    body = waha_event("evt_\u0000" + "y" * 4000, 1)
    answers = [await (await client.post(f"/hooks/w?token={token}", data=body)).json()]
    answers.append(await (await client.post(f"/hooks/w?token={token}", data=body)).json())
    assert answers[0]["status"] == "stored"
    assert answers[1] == {
        "status": "duplicate",
        "position": answers[1]["position"],
        "duplicate_of": answers[0]["position"],
    }


@given(event_id=st.text(min_size=1, max_size=3000))
def test_dedup_keys_are_bounded_and_nul_free(event_id: str) -> None:
    key = dedup_key(event_id, b"")
    assert "\x00" not in key and len(key) <= 210
    key.encode()  # UTF-8 encodable: no lone surrogate reaches the database
    assert key == dedup_key(event_id, b"other body"), "the id, not the body, is the key"


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str) -> TestClient:
    return await aiohttp_client(make_app(settings(), dsn))


@pytest.mark.parametrize("writers", [1, 2])
async def test_one_refused_event_fails_alone_its_neighbours_commit(
    dsn: str, conn: asyncpg.Connection, pool: asyncpg.Pool, aiohttp_client: Client, writers: int
) -> None:
    # a real database-side rejection: a CHECK constraint the poison body violates (SQLSTATE 23514)
    await conn.execute("ALTER TABLE events ADD CONSTRAINT no_poison CHECK (body <> 'poison')")
    batches: list[int] = []
    appender = Appender(pool, writers=writers, on_batch=batches.append)
    await appender.start()
    try:
        now = dt.datetime.now(dt.UTC)
        events = [
            NewEvent(
                channel="c",
                provider="wamm",
                body=b"poison" if i == 11 else b"ok %d" % i,
                received_at=now,
                dedup_key=f"k{i}",
            )
            for i in range(16)
        ]
        results = await asyncio.gather(
            *(appender.append(e) for e in events), return_exceptions=True
        )
    finally:
        await appender.stop()
    assert isinstance(results[11], EventRejected) and "23514" in str(results[11])
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 11)
    assert sum(batches) == 15 and len(batches) > 1, batches  # one batch of 16, split
    log = await read(conn)
    assert sorted(e.body for e in log) == sorted(e.body for e in events if e.body != b"poison")

    # the same through HTTP: the poison gets a clear 422, concurrent neighbours get 200
    token = await add_channel(dsn, "shop", "wamm")
    client = await aiohttp_client(make_app(settings(append_writers=writers), dsn))
    bodies = [b"poison" if i == 5 else b'{"n": %d}' % i for i in range(12)]
    resps = await asyncio.gather(
        *(client.post(f"/hooks/shop?token={token}", data=b) for b in bodies)
    )
    assert [r.status for r in resps] == [422 if b == b"poison" else 200 for b in bodies]
    refused = await resps[5].json()
    assert refused["error"] == "unstorable" and "no_poison" in refused["detail"]


@pytest.mark.parametrize("loop", LOOPS)
async def test_database_stopped_503_never_500(own_server: Any, loop: str) -> None:
    dsn = own_server.get_uri()
    await wait_and_migrate(dsn)
    token = await add_channel(dsn, "shop", "wamm")
    await add_channel(dsn, "never-cached", "wamm")
    port = free_port()
    proc = serve(dsn, port, ACKLOG_LOOP=loop, ACKLOG_AUTH_FAILURES_PER_MINUTE="1000")
    await proc.start()
    base = f"http://127.0.0.1:{port}"
    answers: list[tuple[str, int, str | None]] = []
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/hooks/shop?token={token}", data=b"{}") as resp:
                assert resp.status == 200  # the channel is cached now
            await asyncio.to_thread(own_server._stop)
            # past the channel cache's 2 s: its expiry must not turn into a 500
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                for path in (
                    f"/hooks/shop?token={token}",
                    f"/hooks/never-cached?token={token}",
                    "/hooks/shop?token=wrong",
                    "/hooks/no-such-channel?token=x",
                ):
                    async with session.post(base + path, data=b'{"down": 1}') as resp:
                        await resp.read()
                        answers.append((path, resp.status, resp.headers.get("Retry-After")))
    finally:
        await proc.stop()
        await asyncio.to_thread(own_server.ensure_postgres_running)
    statuses = {status for _, status, _ in answers}
    print(f"\n[{loop}] {len(answers)} answers while the database was down: {statuses}")
    assert statuses == {503}, [a for a in answers if a[1] != 503][:5]
    assert all(retry == "5" for _, _, retry in answers)


async def test_a_rate_limited_client_costs_no_query(
    aiohttp_client: Client, dsn: str, server_dsn: str
) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    client = await aiohttp_client(make_app(settings(auth_failures_per_minute=3), dsn))
    assert (await client.post(f"/hooks/shop?token={token}", data=b"{}")).status == 200
    for _ in range(3):
        assert (await client.post("/hooks/shop?token=bad", data=b"{}")).status == 401
    # from now on any query would fail: nobody may connect to the database any more
    name = urllib.parse.urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        statuses = []
        for path in ("/hooks/shop?token=bad", "/hooks/unknown-channel?token=bad") * 10:
            statuses.append((await client.post(path, data=b"{}")).status)
        # the refused database really is refused: a valid webhook cannot be stored (503)
        ok = await client.post(f"/hooks/shop?token={token}", data=b"{}")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert statuses == [429] * 20
    assert ok.status == 503


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "X-Api_Key",
        "X-API-KEY",
        "apikey",
        "X-Auth",
        "X-Auth-Token",
        "Private-Key",
        "X-Session-Id",
        "X-Access-Token",
        "X-Client-Secret",
        "X-Password",
        "X-Csrf-Token",
        "sid",
    ],
)
def test_credential_like_names(name: str) -> None:
    assert is_credential(name)


@pytest.mark.parametrize(
    "name",
    ["User-Agent", "Content-Type", "X-Hub-Signature-256", "X-Request-Id", "X-Webhook-Hmac"],
)
def test_ordinary_names(name: str) -> None:
    assert not is_credential(name)


@given(
    prefix=st.sampled_from(["", "x-", "X_", "my.", "Provider-"]),
    word=st.sampled_from(["Key", "token", "SECRET", "Session", "auth", "Password", "cookie"]),
    suffix=st.sampled_from(["", "-id", "_value", "s", "-v2"]),
)
def test_any_name_with_a_credential_word_is_dropped(prefix: str, word: str, suffix: str) -> None:
    assert is_credential(prefix + word + suffix)


async def test_credential_headers_are_not_stored(
    client: TestClient, dsn: str, pool: asyncpg.Pool
) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    secret_headers = {"X-Api_Key": "s1", "X-Auth": "s2", "Private-Key": "s3", "X-Session-Id": "s4"}
    resp = await client.post(
        f"/hooks/shop?token={token}",
        data=b"{}",
        headers={**secret_headers, "X-Request-Id": "r-1", "User-Agent": "wamm/1"},
    )
    assert resp.status == 200
    (event,) = await read(pool)
    assert event.headers["x-request-id"] == "r-1" and event.headers["user-agent"] == "wamm/1"
    stored = json.dumps(event.headers)
    assert not any(v in stored for v in secret_headers.values()), event.headers


@pytest.mark.parametrize("loop", LOOPS)
async def test_gzip_body_is_stored_as_received(
    dsn: str, conn: asyncpg.Connection, loop: str
) -> None:
    await add_channel(dsn, "m", "meta", secrets_=["app-secret"])
    port = free_port()
    proc: Process = await serve(dsn, port, ACKLOG_LOOP=loop).start()
    plain = waha_ack("GZ1", 2)  # any JSON: the meta decoder quarantines what it cannot read
    sent = gzip.compress(plain)
    headers = [
        (b"Content-Encoding", b"gzip"),
        (b"Content-Type", b"application/json"),
        (b"X-Hub-Signature-256", meta_signature("app-secret", sent).encode()),
    ]
    try:
        status, _, answer = await raw_post(port, "/hooks/m", headers, sent)
    finally:
        await proc.stop()
    assert status == 200, answer  # the signature is over the received (compressed) bytes
    (event,) = await read(conn)
    assert event.body == sent and event.headers["content-encoding"] == "gzip"
    # the projector sees the decompressed body
    assert providers._decoded(event.body, event.headers) == plain


def test_decoders_see_a_deflate_body_decompressed() -> None:
    import zlib

    body, _ = sample("wamm", "msg_state_delivered.json")
    plain = providers.decode("wamm", body, "application/json", {})
    packed = providers.decode("wamm", zlib.compress(body), None, {"content-encoding": "deflate"})
    assert packed == plain
    with pytest.raises(providers.DecodeError):
        providers.decode("wamm", b"not gzip", None, {"content-encoding": "gzip"})


def test_header_values_round_trip_whatever_their_bytes() -> None:
    from service.ingest.headers import kept_headers

    raw = [
        (b"X-Weird", b"caf\xe9"),
        (b"X-Text", "café".encode()),
        (b"X-Nul", b"a\x00b"),
        (b"Content-Type", b"text/plain; charset=\xff"),
        (b"X-Twice", b"1"),
        (b"x-twice", b"\xfe"),
    ]
    headers, content_type = kept_headers(raw)
    assert content_type is None
    assert header_bytes(headers, "x-weird") == b"caf\xe9"
    assert headers["x-text"] == "café"
    assert header_bytes(headers, "x-nul") == b"a\x00b"
    assert header_bytes(headers, "x-twice") == b"1, \xfe"
    assert headers["x-weird;base64"] == base64.b64encode(b"caf\xe9").decode()
    assert all("\x00" not in v for v in headers.values())


# no ";" in a name: HTTP forbids it there, and the stored "x;base64" key relies on that
_header_names = st.sampled_from(
    [b"Content-Type", b"content-type", b"User-Agent", b"X-Twice", b"x-twice", b"X-Api-Key",
     b"Authorization", b"X-Hub-Signature-256", b"X", b"x-a.b_c"]
)  # fmt: skip
_header_values = st.one_of(
    st.binary(max_size=12),
    st.text(max_size=12).map(str.encode),
    st.sampled_from([b"application/json", b"caf\xe9", b"a\x00b", b""]),
)


@given(st.lists(st.tuples(_header_names, _header_values), max_size=8))
def test_the_one_pass_headers_are_the_rule_for_any_request(
    raw: list[tuple[bytes, bytes]],
) -> None:
    """kept_headers' fast path (each name once, text values) answers as the rule does."""
    from service.ingest.headers import _kept_headers, kept_headers

    assert kept_headers(raw) == _kept_headers(raw)
    assert list(kept_headers(raw)[0]) == list(_kept_headers(raw)[0])  # the same order
