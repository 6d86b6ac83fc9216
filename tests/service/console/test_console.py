"""The web console over HTTP: login, cookies, CSRF, headers, escaping, every page answering.

Real app on a real socket, real database, real projector fold; the browser test
(``test_console_browser.py``) drives the same pages in Chromium.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from eventstore import apikeys
from eventstore.pool import connect, create_pool
from projections.runner import Projector
from service.cli.simulate import simulate
from service.console import session
from tests.support.apps import add_channel, settings
from tests.support.console_helpers import (
    HOSTILE,
    HOSTILE_ID,
    UNREADABLE,
    csrf_of,
    hostile_wamm,
    sign_in,
)
from tests.support.payloads import meta_status

KEY = "acklog_console-test-key-0123456789"
Server = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def server(aiohttp_server: Server, dsn: str) -> TestServer:
    from service.runtime.app import make_app

    app: web.Application = make_app(settings(api_key=KEY), dsn)
    return await aiohttp_server(app)


def base_of(server: TestServer) -> str:
    return f"http://{server.host}:{server.port}"


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies for an IP host, as a browser does."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


@pytest.fixture
async def seeded(server: TestServer, dsn: str) -> dict[str, Any]:
    """A simulated WAHA channel, a hostile WAMM message and a quarantined event, folded."""
    base = base_of(server)
    token = await add_channel(dsn, "wa", "waha")
    result = await simulate(base, "wa", "waha", token, "all", seed=7)
    assert result.ok
    wamm = await add_channel(dsn, "shop", "wamm")
    async with aiohttp.ClientSession() as s:
        for body in (hostile_wamm(), UNREADABLE):
            async with s.post(
                f"{base}/hooks/shop?token={wamm}",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as r:
                assert r.status == 200, await r.text()
    conn = await connect(dsn)
    try:
        await Projector(dsn).catch_up(conn)
    finally:
        await conn.close()
    outgoing = next(m for m in result.messages if m.scenario == "outgoing")
    return {"base": base, "outgoing": outgoing.key, "result": result}


async def test_root_redirects_to_the_console_and_the_console_to_its_login(
    server: TestServer, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    async with browser.get(f"{base}/", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/ui/"
    async with browser.get(f"{base}/ui/", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/login"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    async with browser.get(f"{base}/ui/events?channel=wa", allow_redirects=False) as r:
        target = r.headers["Location"]
        assert target.startswith("/ui/login?next=")
        assert urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)["next"] == [
            "/ui/events?channel=wa"
        ]


async def test_every_answer_carries_a_policy_that_forbids_inline_scripts_and_other_origins(
    server: TestServer, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    for path in ("/ui/login", "/ui/static/console.css", "/ui/static/console.js", "/ui/nope"):
        async with browser.get(base + path, allow_redirects=False) as r:
            csp = r.headers["Content-Security-Policy"]
            directives = dict((d.split()[0], d.split()[1:]) for d in csp.split(";") if d.strip())
            assert directives["default-src"] == ["'none'"], path
            assert directives["script-src"] == ["'self'"], path
            assert directives["style-src"] == ["'self'"], path
            assert directives["frame-ancestors"] == ["'none'"], path
            assert "unsafe-inline" not in csp and "http" not in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
    async with browser.get(f"{base}/ui/login") as r:
        page = await r.text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script"
    assert " style=" not in page and "<style" not in page
    assert not re.search(r"\son[a-z]+=", page), "an inline event handler"


async def test_the_sign_in_page_says_where_the_keys_are(
    server: TestServer, browser: aiohttp.ClientSession
) -> None:
    async with browser.get(f"{base_of(server)}/ui/login") as r:
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", await r.text())).split())
    assert "printed" not in text, "acklog serve prints where the key is, never the key"
    assert "ACKLOG_API_KEY" in text and ".acklog/api_key" in text and "banner says where" in text
    assert "acklog keys add" in text


async def test_signing_in_sets_a_strict_http_only_cookie_that_is_not_the_key(
    server: TestServer, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    answer = await sign_in(browser, base, KEY)
    assert answer.status == 303 and answer.headers["Location"] == "/ui/"
    cookies = [c for c in answer.headers.getall("Set-Cookie") if c.startswith(session.COOKIE + "=")]
    assert len(cookies) == 1
    flags = [p.strip().lower() for p in cookies[0].split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
    assert any(f.startswith("max-age=") for f in flags)
    assert KEY not in cookies[0]
    async with browser.get(f"{base}/ui/") as r:
        assert r.status == 200 and "<h1>Channels</h1>" in await r.text()
        assert r.headers["Cache-Control"] == "no-store"


async def test_a_wrong_key_is_refused_and_signs_nobody_in(
    server: TestServer, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    for wrong in ("not-the-key", "", KEY + "x", KEY[:-1]):
        answer = await sign_in(browser, base, wrong)
        assert answer.status == 401
        assert not any(
            c.startswith(session.COOKIE + "=") for c in answer.headers.getall("Set-Cookie", [])
        )
    async with browser.get(f"{base}/ui/", allow_redirects=False) as r:
        assert r.status == 303
    async with browser.get(f"{base}/ui/login") as form:
        page = await form.text()
    assert 'type="password"' in page and 'method="post"' in page


async def test_the_login_refuses_forged_and_cross_site_posts(
    server: TestServer, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    async with browser.get(f"{base}/ui/login") as form:
        token = csrf_of(await form.text())
    cases = [
        ({"csrf": "forged", "key": KEY}, {"Origin": base}),  # not the form's token
        ({"key": KEY}, {"Origin": base}),  # no token
        ({"csrf": token, "key": KEY}, {"Origin": "http://evil.example"}),
        ({"csrf": token, "key": KEY}, {"Sec-Fetch-Site": "cross-site", "Origin": base}),
        ({"csrf": token, "key": KEY}, {}),  # neither Origin nor Sec-Fetch-Site
    ]
    for data, headers in cases:
        async with browser.post(
            f"{base}/ui/login", data=data, headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 403, (data, headers)
            assert not any(
                c.startswith(session.COOKIE + "=") for c in r.headers.getall("Set-Cookie", [])
            )


async def test_the_key_in_a_url_signs_nobody_in(
    server: TestServer, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    for url in (f"/ui/?key={KEY}", f"/ui/login?key={KEY}", f"/ui/?api_key={KEY}"):
        async with browser.get(base + url, allow_redirects=False) as r:
            assert r.status in (200, 303)
            assert not any(
                c.startswith(session.COOKIE + "=") for c in r.headers.getall("Set-Cookie", [])
            )
    async with browser.get(f"{base}/ui/", allow_redirects=False) as r:
        assert r.status == 303


async def test_logout_needs_its_token_and_then_signs_out(
    server: TestServer, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    await sign_in(browser, base, KEY)
    async with browser.get(f"{base}/ui/") as r:
        token = csrf_of(await r.text())
    async with browser.post(
        f"{base}/ui/logout",
        data={"csrf": "forged"},
        headers={"Origin": base},
        allow_redirects=False,
    ) as r:
        assert r.status == 403
    async with browser.post(
        f"{base}/ui/logout",
        data={"csrf": token},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    ) as r:
        assert r.status == 403
    async with browser.get(f"{base}/ui/") as r:
        assert r.status == 200  # still signed in
    async with browser.post(
        f"{base}/ui/logout",
        data={"csrf": token},
        headers={"Origin": base},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/login"
        cleared = [c for c in r.headers.getall("Set-Cookie") if c.startswith(session.COOKIE + "=")]
        assert cleared and "max-age=0" in cleared[0].lower()
    async with browser.get(f"{base}/ui/", allow_redirects=False) as r:
        assert r.status == 303


async def test_a_session_is_checked_against_the_key_the_server_and_expires(dsn: str) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        key = b"k1"
        cookie = await session.issue(pool, key)
        assert await session.opened(pool, key, cookie) == session.Opened("")  # the configured key
        assert not await session.opened(pool, b"k2", cookie)  # a rotated key signs everybody out
        assert not await session.opened(pool, key, None)
        assert not await session.opened(pool, key, "")
        other = await session.issue(pool, key)
        await pool.execute("UPDATE console_sessions SET expires_at = now() - interval '1 s'")
        assert not await session.opened(pool, key, cookie), "past its lifetime"
        third = await session.issue(pool, key)  # a sign-in sweeps the expired rows
        assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 1
        await session.end(pool, key, third)
        assert not await session.opened(pool, key, third), "signed out on the server"
        assert not await session.opened(pool, key, other)
        async with pool.acquire() as conn:
            await apikeys.add(conn, "b")
        named = await session.issue(pool, key, "b")
        assert await session.opened(pool, key, named) == session.Opened("b")
    finally:
        await pool.close()


@given(st.integers(min_value=0), st.characters(codec="ascii"))
def test_any_change_to_a_session_cookie_invalidates_it(where: int, char: str) -> None:
    key = b"some-key"
    cookie = session.sign(key, "a-session-token")
    assert session.signed_token(key, cookie) == "a-session-token"
    i = where % len(cookie)
    changed = cookie[:i] + char + cookie[i + 1 :]
    if changed != cookie:
        assert session.signed_token(key, changed) is None


def _links(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'(?:href|src|action)="([^"]*)"', page)]


async def test_every_page_answers_with_no_key_in_any_url_and_a_label_on_every_control(
    seeded: dict[str, Any], browser: aiohttp.ClientSession
) -> None:
    base = seeded["base"]
    await sign_in(browser, base, KEY)
    seen: set[str] = set()
    todo = ["/ui/"]
    statuses: dict[str, int] = {}
    while todo and len(seen) < 120:
        url = todo.pop(0)
        if url in seen:
            continue
        seen.add(url)
        async with browser.get(base + url, allow_redirects=False) as r:
            statuses[url] = r.status
            page = await r.text()
        assert KEY not in page, url
        if not r.content_type.startswith("text/html"):
            continue
        _assert_labelled(page, url)
        for link in _links(page):
            assert KEY not in link
            if link.startswith("/ui/") and not link.startswith(("/ui/static/", "/ui/logout")):
                todo.append(link)
    assert set(statuses.values()) == {200}, {u: s for u, s in statuses.items() if s != 200}
    kinds = {re.sub(r"/[^/]+$", "/*", u.split("?")[0]) for u in seen}
    assert {"/ui/*", "/ui/events/*", "/ui/channels/*"} <= kinds
    assert any("/messages/" in u for u in seen)


def _assert_labelled(page: str, url: str) -> None:
    """Every visible form control has a <label for> or an aria-label."""
    labels = set(re.findall(r'<label for="([^"]+)"', page))
    for control in re.findall(r"<(?:input|select|textarea)\b[^>]*>", page):
        if 'type="hidden"' in control or " hidden" in control:
            continue
        ident = re.search(r'\bid="([^"]+)"', control)
        assert (ident and ident.group(1) in labels) or "aria-label=" in control, (url, control)
    for button in re.findall(r"<button\b[^>]*>([^<]*)</button>", page):
        assert button.strip(), (url, "a button without text")


async def test_provider_text_is_shown_as_text_everywhere(
    seeded: dict[str, Any], browser: aiohttp.ClientSession
) -> None:
    base = seeded["base"]
    await sign_in(browser, base, KEY)
    pages = [f"/ui/channels/shop/messages/{HOSTILE_ID}", "/ui/channels/shop", "/ui/events"]
    async with browser.get(f"{base}/ui/events?channel=shop") as r:
        first = re.findall(r'href="/ui/events/(\d+)"', await r.text())
    pages += [f"/ui/events/{p}" for p in first]
    for path in pages:
        async with browser.get(base + path) as r:
            assert r.status == 200, path
            page = await r.text()
        assert "<script>window.__pwned" not in page, path
        assert "<img src=x" not in page and "<b>bold</b>" not in page, path
    async with browser.get(f"{base}/ui/channels/shop/messages/{HOSTILE_ID}") as r:
        page = await r.text()
    shown = re.search(r'data-role="message-text">([^<]*)</dd>', page)
    assert shown and html.unescape(shown.group(1)) == HOSTILE


async def test_the_message_page_explains_the_state_with_its_steps_and_events(
    seeded: dict[str, Any], browser: aiohttp.ClientSession
) -> None:
    base = seeded["base"]
    await sign_in(browser, base, KEY)
    key = seeded["outgoing"]
    url = f"{base}/ui/channels/wa/messages/{urllib.parse.quote(key, safe='')}"
    async with browser.get(url) as r:
        page = await r.text()
    steps = re.findall(r'class="step ([a-z ]+)" data-status="([a-z_]+)"', page)
    assert [s for _, s in steps] == ["sending", "sent", "delivered", "read", "played"]
    assert [c.split()[0] for c, _ in steps] == ["reported"] * 4 + ["pending"]
    assert "Why is it read?" in page
    assert "out of order" in page  # simulate sends the acks read, delivered, sent
    assert "duplicate of" in page  # and retries one of them
    anomalies = re.findall(r'<span class="tag warn anomaly"[^>]*>([a-z ]+)</span>', page)
    assert anomalies == ["downgrade suppressed", "ack retried"]
    for position in re.findall(r'href="/ui/events/(\d+)">event #', page):
        async with browser.get(f"{base}/ui/events/{position}") as r:
            raw = await r.text()
        assert "Headers as stored" in raw and html.escape(key) in raw


async def test_search_filters_and_pages_stay_on_their_index(
    seeded: dict[str, Any], browser: aiohttp.ClientSession
) -> None:
    base = seeded["base"]
    await sign_in(browser, base, KEY)
    result = seeded["result"]
    failed = next(m for m in result.messages if m.scenario == "failure")
    cases = {
        f"q={urllib.parse.quote(failed.key)}": {failed.key},
        "failed=true": {failed.key},
        "state=read": {seeded["outgoing"]},
        "direction=incoming": {m.key for m in result.messages if m.direction == "incoming"},
    }
    for query, expected in cases.items():
        async with browser.get(f"{base}/ui/channels/wa?{query}") as r:
            page = await r.text()
        listed = {
            urllib.parse.unquote(k)
            for k in re.findall(
                r'<th scope="row" class="mono"><a href="/ui/channels/wa/messages/([^"]+)"', page
            )
        }
        assert listed == expected, query
    for bad in ("since=yesterday", "state=lost", "cursor=nonsense", "overdue=maybe"):
        async with browser.get(f"{base}/ui/channels/wa?{bad}") as r:
            assert r.status == 400, bad
            assert "Bad request" in await r.text()
    async with browser.get(f"{base}/ui/events?quarantine=true") as r:
        page = await r.text()
    assert "quarantined" in page and "shop" in page
    async with browser.get(f"{base}/ui/quarantine") as r:
        page = await r.text()
    assert "body is not valid JSON" in page or "JSON" in page
    async with browser.get(f"{base}/ui/projector") as r:
        page = await r.text()
    assert "Folded up to" in page
    assert "Oldest kept</dt><dd>#1</dd>" in page and "Last retention run</dt><dd>never" in page


async def test_a_missed_deadline_and_a_failure_are_drawn_and_explained(
    server: TestServer, dsn: str, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    # a deadline a provider cannot meet: every sent ack comes late
    late = await add_channel(dsn, "late", "waha", sent_deadline_s=0.0001)
    outgoing = await simulate(base, "late", "waha", late, "outgoing", seed=3)
    meta = await add_channel(dsn, "shop", "meta")
    failure = await simulate(base, "shop", "meta", meta, "failure", seed=4)
    assert outgoing.ok and failure.ok
    conn = await connect(dsn)
    try:
        await Projector(dsn).catch_up(conn)
    finally:
        await conn.close()
    await sign_in(browser, base, KEY)

    key = urllib.parse.quote(outgoing.messages[0].key, safe="")
    async with browser.get(f"{base}/ui/channels/late/messages/{key}") as r:
        page = await r.text()
    sent = re.search(r'class="step ([a-z ]+)" data-status="sent"', page)
    assert sent and "missed" in sent.group(1).split()
    assert re.search(
        r"The sent deadline \([0-9:]+ UTC\) was missed: sent came [0-9.]+ (ms|s) late", page
    )

    async with browser.get(f"{base}/ui/") as r:
        page = await r.text()
    row = page[page.index('href="/ui/channels/late"') :]
    row = row[: row.index("</tr>")]
    missed = re.findall(r"<td>(?:<span class=\"warn\">)?(\d+)", row)
    assert missed[-1] == "1", row  # the last number cell: missed acks in the last hour

    key = urllib.parse.quote(failure.messages[0].key, safe="")
    async with browser.get(f"{base}/ui/channels/shop/messages/{key}") as r:
        page = await r.text()
    steps = re.findall(r'class="step ([a-z ]+)" data-status="([a-z_]+)"', page)
    assert ("reported failure", "not_sent") in [(c.strip(), s) for c, s in steps]
    code = failure.messages[0].error_code
    assert code and f"The provider reported the failure: {code}" in page


async def test_a_list_reads_no_big_body_but_the_event_page_shows_it(
    server: TestServer, dsn: str, browser: aiohttp.ClientSession
) -> None:
    base = base_of(server)
    token = await add_channel(dsn, "shop", "wamm")
    big = hostile_wamm().replace(b"window.__pwned=1", b"x" * 100_000)
    async with browser.post(
        f"{base}/hooks/shop?token={token}", data=big, headers={"Content-Type": "application/json"}
    ) as r:
        position = (await r.json())["position"]
    await sign_in(browser, base, KEY)
    for path in ("/ui/events", "/ui/events?channel=shop", "/ui/events/live"):
        async with browser.get(base + path) as r:
            page = await r.text()
        assert f"{len(big):,} bytes: open the event to decode it" in page, path
        assert "x" * 1000 not in page
    async with browser.get(f"{base}/ui/events/rows?after={position - 1}") as r:
        assert "open the event to decode it" in (await r.json())["html"]
    async with browser.get(f"{base}/ui/events/{position}") as r:
        page = await r.text()
    assert f"message in {HOSTILE_ID}" in page and "x" * 1000 in page


async def test_a_meta_message_known_only_by_its_statuses_is_found_by_the_recipient(
    server: TestServer, browser: aiohttp.ClientSession, dsn: str
) -> None:
    """Meta echoes no message we send: its statuses are all there is, and they name the
    customer in ``recipient_id``. The chat is kept from them, so the number finds it."""
    base = base_of(server)
    token = await add_channel(dsn, "cloud", "meta")
    async with aiohttp.ClientSession() as s:
        for status in ("sent", "delivered"):
            async with s.post(
                f"{base}/hooks/cloud?token={token}",
                data=meta_status("wamid.only-statuses", status),
                headers={"Content-Type": "application/json"},
            ) as r:
                assert r.status == 200, await r.text()
    conn = await connect(dsn)
    try:
        await Projector(dsn).catch_up(conn)
        assert await conn.fetchval("SELECT chat FROM rm.messages") == "16505551234"
    finally:
        await conn.close()
    await sign_in(browser, base, KEY)
    for spelling in ("16505551234", "+1 650 555 1234", "5551234"):
        async with browser.get(f"{base}/ui/channels/cloud", params={"q": spelling}) as r:
            page = await r.text()
        assert "wamid.only-statuses" in page, spelling


async def test_the_projector_page_lists_every_shard(
    server: TestServer, dsn: str, browser: aiohttp.ClientSession
) -> None:
    from eventstore.append import write_batch
    from projections.readmodel import checkpoints
    from tests.support.payloads import event

    conn = await connect(dsn)
    try:
        await write_batch(conn, [event(meta_status(f"wamid.s{i}", "sent")) for i in range(20)])
        await checkpoints.claim(conn, 2)
        await Projector(dsn, shard=0, shards=2).catch_up(conn)
        await Projector(dsn, shard=1, shards=2).catch_up(conn, upto=5)
    finally:
        await conn.close()
    await sign_in(browser, base_of(server), KEY)
    async with browser.get(f"{base_of(server)}/ui/projector") as r:
        page = await r.text()
    assert "<dt>Shard 0</dt>" in page and "messages.0/2</span>: #20" in page
    assert "<dt>Shard 1</dt>" in page and "messages.1/2</span>: #5" in page
    assert "Folded up to</dt><dd>#5 " in page  # the least of the shards' checkpoints
    assert "15 events" in page  # lag: head - min
