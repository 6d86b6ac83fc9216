"""Issue 24: named API keys rotate without a restart, through real ``acklog serve`` processes.

Key B is added while A works, both work; A is revoked and a running server refuses it within
seconds (awaited by polling against a deadline), B goes on working, and the console session
signed in with A ends with it. The checker keeps its last good view when the database does
not answer, so an outage never opens anything.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import aiohttp

from eventstore import apikeys
from eventstore.pool import connect, create_pool
from service.core.apikey import CONFIGURED, REFRESH_TIMEOUT, ApiKey
from tests.service.runtime.test_cli import UTC
from tests.support.apps import settings
from tests.support.console_helpers import sign_in
from tests.support.dbproxy import hanging_proxy
from tests.support.procs import Process, free_port
from tests.support.procs import command_output as acklog

KEY = "acklog_configured_test_key_0123456789abcdef"


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    """Await ``check()`` until it is true. A server tells nobody when it has re-read its
    keys, so the request is repeated every 100 ms, for at most ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 (no event to await: see above)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {timeout:g}s") from None


async def added(dsn: str, name: str) -> str:
    code, out = await acklog(dsn, "keys", "add", name)
    assert code == 0, out
    key = out.splitlines()[0]  # the key alone on stdout's first line, the note after it
    assert key.startswith("acklog_") and f"API key {name} added" in out, out
    return key


async def test_a_key_rotates_without_a_restart(dsn: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Process(
        ["serve", "--port", str(port), "--no-projector", "--no-feed"],
        dsn,
        marker="acklog listening",
        ACKLOG_API_KEY=KEY,
    )
    await server.start()
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with (
            aiohttp.ClientSession() as client,
            aiohttp.ClientSession(cookie_jar=jar) as console_a,
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as console_b,
        ):

            async def status(key: str) -> int:
                headers = {"Authorization": f"Bearer {key}"}
                async with client.get(f"{base}/v1/channels", headers=headers) as r:
                    return r.status

            async def page(console: aiohttp.ClientSession) -> int:
                async with console.get(f"{base}/ui/", allow_redirects=False) as r:
                    return r.status

            key_a = await added(dsn, "a")
            await until("A accepted", lambda: _is(status(key_a), 200))
            assert (await sign_in(console_a, base, key_a)).status == 303
            assert await page(console_a) == 200

            key_b = await added(dsn, "b")
            await until("B accepted", lambda: _is(status(key_b), 200))
            assert await status(key_a) == 200, "A still works while B is rolled out"
            assert await status(KEY) == 200, "the configured key keeps working"
            assert await status(key_b + "x") == 401
            assert (await sign_in(console_b, base, key_b)).status == 303
            assert await page(console_b) == 200

            code, out = await acklog(dsn, "keys", "revoke", "a")
            assert code == 0 and "API key a revoked" in out, out
            began = time.monotonic()
            await until("A refused", lambda: _is(status(key_a), 401))
            assert time.monotonic() - began < 10
            await until(
                "A's session ended", lambda: _is(page(console_a), 303)
            )  # A's session ended with A
            assert await status(key_b) == 200
            assert await page(console_b) == 200, "B's session goes on"
            assert await status(KEY) == 200

            code, out = await acklog(dsn, "keys", "list")
            assert code == 0, out
            assert re.search(rf"^a\tcreated={UTC}\trevoked={UTC}$", out, re.M), out
            assert re.search(rf"^b\tcreated={UTC}\trevoked=-$", out, re.M), out
            assert key_a not in out and key_b not in out
    finally:
        await server.stop()


async def _is(answer: Awaitable[int], expected: int) -> bool:
    return await answer == expected


async def test_keys_commands_refuse_what_they_cannot_do(dsn: str) -> None:
    code, out = await acklog(dsn, "keys", "list")
    assert code == 0 and "no named API keys yet" in out, out
    await added(dsn, "ci")
    code, out = await acklog(dsn, "keys", "add", "ci")
    assert code == 2 and "error: an API key named 'ci' exists" in out, out
    code, out = await acklog(dsn, "keys", "add", "../x")
    assert code == 2 and "invalid key name" in out, out
    code, out = await acklog(dsn, "keys", "revoke", "nosuch")
    assert code == 2 and "no active API key named 'nosuch'" in out, out
    code, out = await acklog(dsn, "keys", "revoke", "ci")
    assert code == 0, out
    code, out = await acklog(dsn, "keys", "revoke", "ci")
    assert code == 2, "revoked once"
    code, out = await acklog(dsn, "keys", "add", "ci")
    assert code == 2, "a revoked key's name is not reused"
    code, out = await acklog(dsn, "keys", "list", "--json")
    assert code == 0 and '"name":"ci"' in out and '"revoked_at":"' in out, out
    conn = await connect(dsn)
    try:
        stored = await conn.fetchval("SELECT key_hash FROM api_keys WHERE name = 'ci'")
        assert len(stored) == 32, "only a SHA-256 is stored"
    finally:
        await conn.close()


async def test_a_database_that_does_not_answer_opens_nothing(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        key_b = await apikeys.add(conn, "b")
    finally:
        await conn.close()
    async with hanging_proxy(dsn) as proxy:
        pool = await create_pool(proxy.dsn, min_size=1, max_size=2)
        try:
            checker = ApiKey(settings(api_key=KEY), ttl=0)
            assert await checker.check(f"Bearer {key_b}", pool) == "b"
            assert await checker.check(f"Bearer {KEY}", pool) == CONFIGURED
            proxy.hang()
            conn = await connect(dsn)
            try:
                key_c = await apikeys.add(conn, "c")  # added while this checker cannot see it
                await apikeys.revoke(conn, "b")
            finally:
                await conn.close()
            began = time.monotonic()
            assert await checker.check(f"Bearer {key_c}", pool) is None, "not known: refused"
            assert time.monotonic() - began < REFRESH_TIMEOUT + 2, "a read waits a bounded time"
            assert await checker.check(f"Bearer {key_b}", pool) == "b", "the last good view"
            assert await checker.check(f"Bearer {KEY}", pool) == CONFIGURED
            assert await checker.check("Bearer wrong", pool) is None
            proxy.resume()

            async def c_works() -> bool:
                return await checker.check(f"Bearer {key_c}", pool) == "c"

            await until("C accepted", c_works)
            assert await checker.check(f"Bearer {key_b}", pool) is None, "revoked, now seen"
            assert not await checker.active("b", pool)
            assert await checker.active(CONFIGURED, pool)
        finally:
            pool.terminate()
