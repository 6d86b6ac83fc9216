"""Issue 26: nothing leaks through the public port, tried as an attacker would.

Every test runs real ``acklog serve`` processes on loopback and talks to them over real
sockets: the full supervisor (ingest workers relaying to the API process over its unix
socket), or an ingest worker alone relaying to an upstream of the test's own (a recorder that
shows exactly what the relay sent, or a host the relay must never reach).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from eventstore.pool import connect
from tests.support.apps import add_channel
from tests.support.console_helpers import csrf_of, sign_in
from tests.support.dbproxy import hanging_proxy
from tests.support.procs import Process, free_port

KEY = "acklog_public_port_test_key_0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
NO_COOKIES = aiohttp.DummyCookieJar


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies as a browser does (also for an IP address host)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def started(dsn: str, *args: str, **env: str) -> tuple[Process, str]:
    port = free_port()
    process = Process(
        ["serve", "--port", str(port), *args],
        dsn,
        marker="acklog listening",
        ACKLOG_API_KEY=KEY,
        **env,
    )
    await process.start()
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
async def server(dsn: str) -> AsyncIterator[tuple[Process, str]]:
    process, base = await started(dsn, "--no-projector", "--no-feed")
    try:
        yield process, base
    finally:
        await process.stop()


async def raw_request(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    """Send ``data`` as it is (no client library tidies it) and read the whole answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(20):
            return await reader.read()
    finally:
        writer.close()


# -- 1. one sign-in opens the console to nobody else -----------------------------------------


async def test_a_sign_in_through_the_public_port_opens_nothing_to_others(
    server: tuple[Process, str],
) -> None:
    _, base = server
    async with browser() as operator, browser() as stranger:
        signed = await sign_in(operator, base, KEY)
        assert signed.status == 303, "the operator signs in"
        async with operator.get(f"{base}/ui/", allow_redirects=False) as page:
            assert page.status == 200
        for path in ("/ui/", "/ui/events", "/ui/quarantine", "/ui/feed", "/ui/projector"):
            async with stranger.get(f"{base}{path}", allow_redirects=False) as answer:
                assert answer.status in (303, 401), (path, answer.status)
                if answer.status == 303:
                    assert answer.headers["Location"].startswith("/ui/login")
        # and the stranger's own sign-in is not refused as "stale" by someone else's cookie
        theirs = await sign_in(stranger, base, KEY)
        assert theirs.status == 303, await theirs.text()
        async with operator.get(f"{base}/ui/", allow_redirects=False) as page:
            assert page.status == 200, "a second sign-in leaves the first session alone"


# -- the relay holds no state and talks to its upstream only ----------------------------------


class Recorder:
    """An upstream of the test's own: records each request's headers and path, answers with
    identity of its own (a cookie, an auth challenge), and can hold answers back."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.release = asyncio.Event()
        self.holding = 0
        self.held = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.raw_path, dict(request.headers)))
        if request.path == "/hold":
            async with self.held:
                self.holding += 1
                self.held.notify_all()
            await self.release.wait()
        response = web.json_response({"ok": True})
        response.set_cookie("upstream_session", "secret-of-the-first-client")
        response.headers["WWW-Authenticate"] = 'Bearer realm="upstream"'
        return response


@pytest.fixture
async def relay(dsn: str) -> AsyncIterator[tuple[Recorder, str, int]]:
    """An ingest worker alone, relaying to a ``Recorder``."""
    recorder = Recorder()
    runner = web.AppRunner(recorder.app())
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    port = free_port()
    process = Process(
        ["serve", "--role", "ingest", "--port", str(port)],
        dsn,
        marker="ingest worker listening",
        ACKLOG_API_UPSTREAM=f"http://127.0.0.1:{upstream_port}",
        ACKLOG_RELAY_PER_CLIENT="3",
    )
    await process.start()
    try:
        yield recorder, f"http://127.0.0.1:{port}", port
    finally:
        recorder.release.set()
        await process.stop()
        await runner.cleanup()


#: every header a client could identify itself with
IDENTITY = {
    "Cookie": "acklog_console=first.client; upstream_session=secret-of-the-first-client",
    "Authorization": "Bearer first-client-key",
    "Proxy-Authorization": "Basic Zmlyc3Q6Y2xpZW50",
    "X-Api-Key": "first-client-key",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "first.example",
    "Forwarded": "for=10.1.2.3;proto=https",
}


async def test_the_relay_keeps_no_identity_between_clients(
    relay: tuple[Recorder, str, int],
) -> None:
    recorder, base, _ = relay
    # one ClientSession for both, with its own jar off: what B sends is only what B wrote
    async with aiohttp.ClientSession(cookie_jar=NO_COOKIES()) as client:
        async with client.get(f"{base}/ui/a", headers=IDENTITY) as first:
            assert first.status == 200
            assert "upstream_session" in first.headers.get("Set-Cookie", "")
        async with client.get(f"{base}/ui/b") as second:
            assert second.status == 200
    (path_a, sent_a), (path_b, sent_b) = recorder.seen
    assert (path_a, path_b) == ("/ui/a", "/ui/b")
    lower_b = {k.lower(): v for k, v in sent_b.items()}
    for name in IDENTITY:
        if name.lower() == "x-forwarded-proto":
            continue
        assert name.lower() not in lower_b, f"{name} reached upstream on another client's request"
    assert all("first" not in v and "secret" not in v for v in lower_b.values()), lower_b
    # the client's own forwarding claims are not believed (no trusted proxy): the relay's own
    lower_a = {k.lower(): v for k, v in sent_a.items()}
    assert lower_a["x-forwarded-proto"] == "http" and lower_b["x-forwarded-proto"] == "http"
    assert "forwarded" not in lower_a and "x-forwarded-host" not in lower_a
    assert "proxy-authorization" not in lower_a
    assert lower_a["x-forwarded-for"] == "127.0.0.1"


async def test_the_relay_never_fetches_another_host(relay: tuple[Recorder, str, int]) -> None:
    recorder, base, port = relay
    victim = Recorder()
    runner = web.AppRunner(victim.app())
    await runner.setup()
    victim_port = free_port()
    await web.TCPSite(runner, "127.0.0.2", victim_port).start()
    try:
        elsewhere = f"127.0.0.2:{victim_port}"
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{base}//{elsewhere}/x") as answer:
                assert answer.status == 200
        absolute = await raw_request(
            port,
            f"GET http://{elsewhere}/y HTTP/1.1\r\nHost: {elsewhere}\r\nConnection: close\r\n\r\n".encode(),
        )
        assert absolute.startswith(b"HTTP/1.1 "), absolute[:100]
        assert victim.seen == [], "the relay fetched a host other than its upstream"
        paths = [path for path, _ in recorder.seen]
        assert f"//{elsewhere}/x" in paths
    finally:
        await runner.cleanup()


async def test_one_client_holds_a_bounded_share_of_the_relay(
    relay: tuple[Recorder, str, int],
) -> None:
    recorder, base, _ = relay
    async with aiohttp.ClientSession() as client:
        held = [asyncio.create_task(client.get(f"{base}/hold")) for _ in range(3)]
        async with recorder.held:
            await recorder.held.wait_for(lambda: recorder.holding == 3)
        async with client.get(f"{base}/ui/more") as refused:
            assert refused.status == 429
            assert refused.headers["Retry-After"] == "1"
            assert (await refused.json())["error"] == "too_many_requests"
        recorder.release.set()
        for task in held:
            answer = await task
            assert answer.status == 200
            answer.release()
        async with client.get(f"{base}/ui/again") as after:
            assert after.status == 200, "the slots are given back"


# -- 4. slow senders stall nobody ---------------------------------------------------------------


async def test_slow_bodies_do_not_stall_the_query_api(server: tuple[Process, str]) -> None:
    """36 clients posting ``/ui/login`` bodies at a byte a second held the relay's 32 slots:
    on the old relay the first query waited ~10 s for one. A body is now read before it takes
    a slot, so each query is answered as if they were not there (5 s is the generous bound)."""
    _, base = server
    port = int(base.rsplit(":", 1)[1])
    slow: list[asyncio.StreamWriter] = []

    async def trickle() -> None:
        while True:  # a byte a second on every slow connection, until the test ends
            await asyncio.sleep(1)
            for writer in slow:
                writer.write(b"k")

    dribbling = asyncio.create_task(trickle())
    try:
        for _ in range(36):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\nk"
            )
            await writer.drain()
            slow.append(writer)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            for _ in range(5):
                async with client.get(f"{base}/v1/channels", headers=AUTH) as answer:
                    assert answer.status == 200
            async with client.get(f"{base}/ui/login") as page:
                assert page.status == 200
    finally:
        dribbling.cancel()
        for writer in slow:
            writer.close()


# -- 5. a hung database: 503 with Retry-After on every query path, then recovery ---------------


QUERY_TIMEOUT = 2.0


async def test_a_hung_database_answers_503_on_every_query_path(dsn: str) -> None:
    await add_channel(dsn, "shop", "wamm")
    paths_v1 = [
        "/v1/channels",
        "/v1/channels/shop/status",
        "/v1/channels/shop/messages",
        "/v1/channels/shop/messages/1",
        "/v1/events",
        "/v1/events/1",
        "/v1/quarantine",
        "/v1/feed/subscriptions",
        "/v1/feed/dead-letters",
    ]
    paths_ui = [
        "/ui/",
        "/ui/channels/shop",
        "/ui/channels/shop/messages/1",
        "/ui/events",
        "/ui/events/1",
        "/ui/quarantine",
        "/ui/projector",
        "/ui/feed",
    ]
    async with hanging_proxy(dsn) as proxy:
        process, base = await started(
            proxy.dsn,
            "--no-projector",
            "--no-feed",
            ACKLOG_API_QUERY_TIMEOUT=str(QUERY_TIMEOUT),
        )
        try:
            async with browser() as client:
                assert (await sign_in(client, base, KEY)).status == 303
                async with client.get(f"{base}/ui/") as page:
                    assert page.status == 200
                proxy.hang()

                async def hung(path: str) -> None:
                    headers = AUTH if path.startswith("/v1") else {}
                    began = time.monotonic()
                    async with client.get(
                        f"{base}{path}", headers=headers, allow_redirects=False
                    ) as answer:
                        took = time.monotonic() - began
                        assert answer.status == 503, (path, answer.status, await answer.text())
                        assert answer.headers.get("Retry-After"), path
                        assert took < QUERY_TIMEOUT + 5, (path, took)

                # as many at once as one client may have relayed (ACKLOG_RELAY_PER_CLIENT)
                slots = asyncio.Semaphore(8)

                async def one(path: str) -> None:
                    async with slots:
                        await hung(path)

                await asyncio.gather(*(one(p) for p in paths_v1 + paths_ui))
                proxy.resume()

                async def back(path: str) -> None:
                    headers = AUTH if path.startswith("/v1") else {}
                    async with client.get(
                        f"{base}{path}", headers=headers, allow_redirects=False
                    ) as answer:
                        assert answer.status in (200, 404), (path, answer.status)

                for path in paths_v1 + paths_ui:
                    await back(path)
        finally:
            proxy.resume()
            await process.stop()


# -- 6. the low ones -----------------------------------------------------------------------------


async def test_wrong_keys_are_slowed_down_on_v1_and_the_console_alike(
    dsn: str,
) -> None:
    process, base = await started(
        dsn, "--no-projector", "--no-feed", ACKLOG_AUTH_FAILURES_PER_MINUTE="5"
    )
    try:
        async with browser() as client:
            statuses = []
            for i in range(8):
                async with client.get(
                    f"{base}/v1/channels", headers={"Authorization": f"Bearer wrong-{i}"}
                ) as answer:
                    statuses.append(answer.status)
            assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
            async with client.get(f"{base}/v1/channels") as answer:
                assert answer.status == 429 and answer.headers["Retry-After"]
            # the console's sign-in counts the same failures: it cannot be used to go around
            async with client.get(f"{base}/ui/login") as form:
                token = csrf_of(await form.text())
            async with client.post(
                f"{base}/ui/login",
                data={"csrf": token, "key": "another-guess", "next": "/ui/"},
                headers={"Origin": base},
                allow_redirects=False,
            ) as answer:
                assert answer.status == 429
    finally:
        await process.stop()


async def test_credentials_never_reach_the_log(dsn: str) -> None:
    process, base = await started(
        dsn, "--no-projector", "--no-feed", ACKLOG_ACCESS_LOG="1", ACKLOG_LOG_LEVEL="DEBUG"
    )
    port = int(base.rsplit(":", 1)[1])
    try:
        answer = await raw_request(
            port,
            b"GET /v1/channels HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\rAuthorization: Bearer "
            + KEY.encode()
            + b"\r\nConnection: close\r\n\r\n",
        )
        assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]
        cookie = "acklog_console=abcdefgh.0123456789"
        answer = await raw_request(
            port,
            f"GET /v1/channels HTTP/1.1\r\nHost: 127.0.0.1\r\nX-B: b\rCookie: {cookie}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{base}/v1/channels", headers=AUTH) as ok:
                assert ok.status == 200
        await process.wait_lines(lambda lines: sum("400" in line for line in lines) >= 1)
    finally:
        await process.stop()
    text = "\n".join(process.lines)
    assert "Invalid header" in text or "Bad" in text or "400" in text, "the bad request was logged"
    assert KEY not in text
    assert KEY[len("acklog_") :] not in text
    assert "0123456789" not in text


async def test_the_console_session_is_secure_behind_a_tls_proxy_and_ends_on_sign_out(
    dsn: str,
) -> None:
    process, base = await started(
        dsn, "--no-projector", "--no-feed", ACKLOG_TRUSTED_PROXIES="127.0.0.1"
    )
    try:
        async with aiohttp.ClientSession(cookie_jar=NO_COOKIES()) as plain:
            async with plain.get(f"{base}/ui/login") as form:
                assert "secure" not in form.headers.get("Set-Cookie", "").lower()
        tls = {"X-Forwarded-Proto": "https"}
        async with aiohttp.ClientSession(cookie_jar=NO_COOKIES()) as behind_tls:
            async with behind_tls.get(f"{base}/ui/login", headers=tls) as form:
                assert "; secure" in form.headers["Set-Cookie"].lower()
                login_cookie = form.cookies["acklog_console_login"].value
                token = csrf_of(await form.text())
            async with behind_tls.post(
                f"{base}/ui/login",
                data={"csrf": token, "key": KEY, "next": "/ui/"},
                headers={
                    **tls,
                    "Origin": base,
                    "Cookie": f"acklog_console_login={login_cookie}",
                },
                allow_redirects=False,
            ) as signed:
                assert signed.status == 303
                assert "; secure" in signed.headers["Set-Cookie"].lower()
                session_cookie = signed.cookies["acklog_console"].value
        copied = {"Cookie": f"acklog_console={session_cookie}"}
        async with aiohttp.ClientSession(cookie_jar=NO_COOKIES()) as client:
            async with client.get(f"{base}/ui/", headers=copied, allow_redirects=False) as page:
                assert page.status == 200
                csrf = csrf_of(await page.text())
            async with client.post(
                f"{base}/ui/logout",
                data={"csrf": csrf},
                headers={**copied, "Origin": base},
                allow_redirects=False,
            ) as out:
                assert out.status == 303
            # a copy of the cookie kept elsewhere dies with the session
            async with client.get(f"{base}/ui/", headers=copied, allow_redirects=False) as page:
                assert page.status == 303 and page.headers["Location"].startswith("/ui/login")
    finally:
        await process.stop()


async def test_a_line_break_in_next_is_no_header_and_no_error(
    server: tuple[Process, str],
) -> None:
    process, base = server
    async with browser() as client:
        async with client.get(f"{base}/ui/login", params={"next": "/ui/\r\nSet-Cookie: x=1"}) as f:
            assert f.status == 200
            page = await f.text()
            assert 'name="next" value="/ui/"' in page
            token = csrf_of(page)
        async with client.post(
            f"{base}/ui/login",
            data={"csrf": token, "key": KEY, "next": "/ui/\r\nSet-Cookie: evil=1"},
            headers={"Origin": base},
            allow_redirects=False,
        ) as answer:
            assert answer.status == 303
            assert answer.headers["Location"] == "/ui/"
            assert "evil" not in answer.headers.get("Set-Cookie", "")
    assert not any("Traceback" in line for line in process.lines), process.lines[-20:]


async def test_the_console_answers_only_names_it_is_known_by(dsn: str) -> None:
    process, base = await started(
        dsn, "--no-projector", "--no-feed", ACKLOG_PUBLIC_URL="https://acklog.example.com"
    )
    try:
        async with aiohttp.ClientSession() as client:
            for host, status in (
                ("attacker.example", 400),
                ("acklog.example.com", 200),
                ("localhost:1234", 200),
                ("127.0.0.1", 200),
                ("[::1]:80", 200),
            ):
                async with client.get(f"{base}/ui/login", headers={"Host": host}) as answer:
                    assert answer.status == status, host
    finally:
        await process.stop()


async def test_an_empty_webhook_is_refused_and_stores_nothing(
    server: tuple[Process, str], dsn: str
) -> None:
    _, base = server
    token = await add_channel(dsn, "shop", "waha")
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{base}/hooks/shop?token={token}", data=b"") as answer:
            assert answer.status == 400
            body = await answer.json()
            assert body["error"] == "empty_body", body
        async with client.post(f"{base}/hooks/shop?token=wrong", data=b"") as answer:
            assert answer.status == 401, "credentials are checked first"
        async with client.post(
            f"{base}/hooks/shop?token={token}", data=json.dumps({"event": "x"})
        ) as answer:
            assert answer.status == 200
    conn = await connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM events") == 1
    finally:
        await conn.close()
