"""Erasure of one person's phone number (docs/erasure.md), end to end on a real app and a real
PostgreSQL: webhooks of two people from seven providers go in through ``/hooks``, are folded
and derived into the feed, then ``POST /v1/erasures`` erases the first. The proof searches,
for every spelling of the number (and its hex, for bytea), a ``pg_dump`` of the database, every
API answer, every console page, the feed as streamed and as delivered, and ``/metrics``; the
second person's number stays everywhere it was. ``verify`` passes, a rebuild brings nothing
back, and every UPDATE of the log outside the audited path is still refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from projections import erasure, rebuild
from projections.feed import subscriptions as subs
from projections.feed.outbox import Outbox
from projections.runner import Projector
from service.cli.backup import find_tool, libpq_target
from service.core import logs
from service.core.config import FeedSettings
from service.feed.delivery import Delivery
from service.runtime.app import make_app
from tests.support import console_helpers
from tests.support.apps import add_channel, settings
from tests.support.payloads import meta_status
from tests.support.procs import command_output as acklog
from tests.support.procs import free_port
from tests.support.samples import sample

Client = Callable[..., Awaitable[TestClient]]
KEY = "erase-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}

#: person A, typed the way a user would; person B stays
A_TYPED = "+55 11 98888-7777"
A9, A8 = "5511988887777", "551188887777"
B9, B8 = "5521977776666", "552177776666"


def spellings(d9: str, d8: str) -> list[str]:
    """Every spelling of a Brazilian mobile a provider or a person uses."""
    area, local = d9[2:4], d9[4:]
    return [
        d9,
        d8,
        f"+{d9}",
        f"whatsapp:+{d9}",
        f"{d9}@c.us",
        f"{d8}@c.us",
        f"{d9}@s.whatsapp.net",
        f"+55 {area} {local[:5]}-{local[5:]}",
        f"({area}) {local[:5]}-{local[5:]}",
        f"{local[:5]}-{local[5:]}",
        local,
        local[1:],
    ]


A_SPELLINGS = spellings(A9, A8)

#: (provider, sample, the number in it that is the customer's, the form to put there)
CASES = [
    ("meta", "status_read.json", "972987654321", 9),  # wa_id, recipient_id
    ("meta", "message_text_docs.json", "16505551234", 9),  # contacts wa_id, from
    ("waha", "message_text.json", "11111111111", 8),  # …@c.us and the message id true_…@c.us_…
    ("evolution", "messages_upsert_incoming_text.json", "59171146267", 9),  # @s.whatsapp.net
    ("twilio", "incoming_image_whatsapp.json", "31612345678", 9),  # From=whatsapp%3A%2B…
    ("zapi", "received_text.json", "5544999999999", 9),  # phone
    ("greenapi", "incomingMessageReceived_text.json", "79001234568", 9),  # chatId, sender
]


def wamm_text(msg_id: int, phone: str, text: str) -> bytes:
    """A WAMM incoming message (console_helpers' shape) from ``phone`` saying ``text``."""
    body = json.loads(console_helpers.hostile_wamm())
    body["msg_data"].update(msg_id=msg_id, phone=phone, msg_text=text, chat_name="chat")
    return json.dumps(body).encode()


_HEX = re.compile(r"\\x([0-9a-f]+)")
_WAMID = re.compile(r"wamid\.([A-Za-z0-9+/_-]{8,})")


def expand(text: str) -> str:
    """``text`` with what it encodes beside it: bytea in hex (pg_dump), URL-encoding (Twilio's
    bodies, links), and the record inside each Meta ``wamid.`` (base64: it holds the number)."""
    parts = [text] + [bytes.fromhex(h).decode("latin-1") for h in _HEX.findall(text)]
    joined = urllib.parse.unquote("\n".join(parts))
    records = []
    for token in _WAMID.findall(joined):
        alt = b"-_" if "-" in token or "_" in token else None
        with contextlib.suppress(ValueError):
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=alt)
            records.append(raw.decode("latin-1"))
    return "\n".join([joined, *records])


def found(text: str, spelling: str) -> bool:
    return spelling in expand(text)


def leaks(text: str) -> list[str]:
    expanded = expand(text)
    return [s for s in A_SPELLINGS if s in expanded]


def wamid(digits: str, old: bytes) -> bytes:
    """A Meta message id as Meta makes them: base64 of a record holding the recipient's
    number (``old``, the sample's id, keeps ids distinct and stable)."""
    tail = hashlib.sha1(old).hexdigest()[:20].upper().encode()
    record = b"\x1c\x18" + bytes([len(digits)]) + digits.encode() + b"\x15\x02\x00\x12\x18\x14"
    return b"wamid." + base64.b64encode(record + tail + b"\x00")


class App:
    def __init__(self, client: TestClient, dsn: str) -> None:
        self.client = client
        self.dsn = dsn
        self.tokens: dict[str, str] = {}

    async def post(self, channel: str, provider: str, body: bytes, ctype: str) -> None:
        if channel not in self.tokens:
            self.tokens[channel] = await add_channel(self.dsn, channel, provider)
        resp = await self.client.post(
            f"/hooks/{channel}?token={self.tokens[channel]}",
            data=body,
            headers={"Content-Type": ctype},
        )
        assert resp.status == 200, await resp.text()

    async def get(self, path: str, **kw: Any) -> str:
        resp = await self.client.get(path, headers=AUTH, **kw)
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.text()

    async def fold(self) -> None:
        conn = await connect(self.dsn)
        try:
            await Projector(self.dsn).catch_up(conn)
            await Outbox(self.dsn).catch_up(conn)
        finally:
            await conn.close()


@pytest.fixture
async def app(aiohttp_client: Client, dsn: str) -> App:
    return App(await aiohttp_client(make_app(settings(api_key=KEY), dsn)), dsn)


async def ingest_two_people(app: App) -> None:
    for person, (d9, d8) in (("a", (A9, A8)), ("b", (B9, B8))):
        for provider, name, old, form in CASES:
            body, ctype = sample(provider, name)
            body = body.replace(old.encode(), (d9 if form == 9 else d8).encode())
            if provider == "meta":  # its message ids embed the recipient's number
                body = re.sub(rb"wamid\.[A-Za-z0-9+/=_-]+", lambda m, d=d9: wamid(d, m[0]), body)
            await app.post(f"{provider}-{person}", provider, body, ctype)
    # each person writes the other's number, formatted, in a message's text
    await app.post(
        "wamm-x", "wamm", wamm_text(1, A9, "call B on +55 21 97777-6666"), "application/json"
    )
    await app.post(
        "wamm-x",
        "wamm",
        wamm_text(2, B9, "A: +55 (11) 98888-7777, +55 11 98888-7777"),
        "application/json",
    )
    await app.fold()


async def pg_dump(dsn: str) -> str:
    """The whole database as ``pg_dump`` writes it (plain SQL; bytea in hex)."""
    conn = await connect(dsn)
    try:
        major = conn.get_server_version().major
    finally:
        await conn.close()
    tool = find_tool("pg_dump", major)
    target, env = libpq_target(dsn)
    done = await asyncio.to_thread(
        subprocess.run,
        [tool.path, "--no-owner", target],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    assert "COPY public.events" in done.stdout
    return done.stdout


async def api_answers(app: App) -> str:
    """Every GET answer of the query API over what is stored, concatenated."""
    out = [await app.get("/v1/channels")]
    for channel in json.loads(out[0])["items"]:
        name = channel["name"]
        out.append(await app.get(f"/v1/channels/{name}/status"))
        page = await app.get(f"/v1/channels/{name}/messages", params={"limit": "100"})
        out.append(page)
        for m in json.loads(page)["items"]:
            key = urllib.parse.quote(m["message_id"], safe="")
            out.append(await app.get(f"/v1/channels/{name}/messages/{key}"))
    events = await app.get("/v1/events", params={"limit": "100"})
    out.append(events)
    for e in json.loads(events)["items"]:
        out.append(await app.get(f"/v1/events/{e['position']}"))
    for path in ("/v1/quarantine", "/v1/feed/subscriptions", "/v1/feed/dead-letters", "/metrics"):
        out.append(await app.get(path))
    out.append(await stream_all(app))
    return "\n".join(out)


async def stream_all(app: App) -> str:
    """The feed from its start on ``/v1/stream``, up to its last seq."""
    conn = await connect(app.dsn)
    try:
        last = await conn.fetchval("SELECT max(seq) FROM feed.events")
    finally:
        await conn.close()
    resp = await app.client.get("/v1/stream", params={"after": "0"}, headers=AUTH)
    text = ""
    async with asyncio.timeout(30):
        while not re.search(rf"^id: {last}\r?$", text, re.M):
            text += (await resp.content.readany()).decode()
    resp.close()
    return text


_HREF = re.compile(r'href="(/ui/[^"#]*)"')


async def console_pages(app: App) -> str:
    """Every console page reachable from /ui/ (signed in), concatenated."""
    c = app.client
    form = await c.get("/ui/login")
    token = console_helpers.csrf_of(await form.text())
    base = str(c.make_url("")).rstrip("/")
    signed = await c.post(
        "/ui/login",
        data={"csrf": token, "key": KEY, "next": "/ui/"},
        headers={"Origin": base},
        allow_redirects=False,
    )
    assert signed.status in (302, 303), await signed.text()
    seen: set[str] = set()
    todo = ["/ui/"]
    out = []
    while todo and len(seen) < 400:
        path = todo.pop()
        if path in seen or path.startswith(("/ui/static", "/ui/logout", "/ui/events/live")):
            continue
        seen.add(path)
        resp = await c.get(path.replace("&amp;", "&"))
        assert resp.status == 200, (path, resp.status)
        page = await resp.text()
        out.append(page)
        todo += [h for h in _HREF.findall(page) if h not in seen]
    assert len(seen) > 20
    return "\n".join(out)


class Receiver:
    """A feed subscriber: records every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived = asyncio.Condition()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        async with self.arrived:
            self.arrived.notify_all()
        return web.Response(status=200)


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    r = Receiver()
    server = web.Application()
    server.router.add_post("/hook", r.handle)
    runner = web.AppRunner(server, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", r.port).start()
    try:
        yield r
    finally:
        await runner.cleanup()


async def delivered_feed(dsn: str) -> str:
    """Every feed event as a new subscription from the start receives it."""
    conn = await connect(dsn)
    try:
        total = await conn.fetchval("SELECT count(*) FROM feed.events")
        async with receiving() as receiver:
            await subs.add(conn, "after-erasure", receiver.url, from_start=True)
            delivery = Delivery(
                dsn,
                FeedSettings(poll_interval=0.1, refresh_interval=0.2, allow_cidrs=("127.0.0.0/8",)),
            )
            task = asyncio.create_task(delivery.run())
            try:
                async with asyncio.timeout(30), receiver.arrived:
                    await receiver.arrived.wait_for(lambda: len(receiver.bodies) >= total)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return "\n".join(b.decode() for b in receiver.bodies)
    finally:
        await conn.close()


async def test_erasure_leaves_no_spelling_anywhere_and_keeps_the_other_person(
    app: App, dsn: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await ingest_two_people(app)
    sub, _ = await subs.add(conn, "crm", "https://crm.example/hook")
    await subs.record_attempt(
        conn, sub.id, 1, 1, "failed", 400, f"receiver said: unknown contact +{A9}", 0.1
    )
    # a copy a dead rebuild left behind holds the number too
    await conn.execute("SELECT create_read_models('rm_build_1_2')")
    await conn.execute("INSERT INTO rm_build_1_2.messages SELECT * FROM rm.messages")
    before = await pg_dump(dsn)
    assert set(leaks(before)) >= set(A_SPELLINGS)  # each spelling is there to be found
    assert found(before, B9) and found(before, B8)
    answers_before = await api_answers(app)
    assert leaks(answers_before)

    resp = await app.client.post("/v1/erasures", json={"phone": A_TYPED}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    erased = await resp.json()
    assert not leaks(json.dumps(erased))
    assert erased["type"] == "subject.erased" and erased["matched"] is True
    assert erased["events"] == len(CASES) + 2  # A's webhooks, and B's message naming A
    assert erased["feed_events"] > 0 and erased["feed_rows"] >= 2  # messages, the attempt
    assert len(erased["positions"]) == erased["events"]
    assert all(re.fullmatch("[0-9a-f]{64}", h) for h in erased["body_sha256"])
    assert erased["requested_by"] == "api:configured"
    assert erased["rebuilt_to"] is not None
    channels = {f"{p}-a" for p, *_ in CASES} | {"wamm-x"}
    assert erased["notices"] == len(channels)  # one subject.erased per channel touched

    await app.fold()  # the live projector and the outbox go on over the masked log
    after = await pg_dump(dsn)
    assert leaks(after) == []
    for spelling in (B9, B8, f"{B8}@c.us", f"{B9}@s.whatsapp.net", "+55 21 97777-6666"):
        assert found(after, spelling), spelling
    answers = await api_answers(app)
    assert leaks(answers) == []
    assert B9 in answers and B8 in answers
    pages = await console_pages(app)
    assert leaks(pages) == []
    assert B9 in pages
    await subs.remove(conn, "crm")  # its URL resolves nowhere; its attempt was checked above
    delivered = await delivered_feed(dsn)
    assert delivered and leaks(delivered) == []
    notices = [json.loads(line) for line in delivered.splitlines() if "subject.erased" in line]
    assert {n["channel"] for n in notices} == channels
    assert all(n["erasure"] == erased["id"] and n["positions"] for n in notices)
    assert {p for n in notices for p in n["positions"]} >= set(erased["positions"])
    assert sum(len(n["masked"]) for n in notices) == erased["feed_events"]

    # the read models equal a fold of the masked log, and a rebuild brings nothing back
    assert await rebuild.verify(dsn) == []
    await rebuild.rebuild(dsn)
    assert leaks(await pg_dump(dsn)) == []
    assert leaks(await api_answers(app)) == []

    # the audit stays, with no personal data; a second erasure finds nothing and says so
    again = await app.client.post("/v1/erasures", json={"phone": f"{A8}@c.us"}, headers=AUTH)
    assert again.status == 200
    nothing = await again.json()
    assert nothing["matched"] is False and nothing["events"] == 0 and nothing["positions"] == []
    assert nothing["notices"] == 0
    audit = await conn.fetch("SELECT * FROM erasures ORDER BY id")
    assert [r["events"] for r in audit] == [erased["events"], 0]
    assert leaks(str([dict(r) for r in audit])) == []
    # no line written names either person (access lines carry message ids: redacted)
    assert caplog.records
    logged = "\n".join(logs.RedactingFormatter().format(r) for r in caplog.records)
    assert leaks(logged) == [] and B9 not in logged and B8 not in logged


def test_a_phone_number_never_reaches_a_log_line() -> None:
    """Whatever a library quotes, every line leaves through ``logs.redact``."""
    line = (
        f"bad request: {{'wa_id': '{A9}', 'chatId': '{A8}@c.us'}} From=whatsapp:+{A9}"
        f" remoteJid {A9}@s.whatsapp.net text {A_TYPED} at 1700000000 position 12345"
        f" GET /v1/channels/meta/messages/{wamid(A9, b'x').decode()}"
    )
    out = logs.redact(line)
    assert leaks(out) == [], out
    assert "1700000000" in out and "12345" in out  # a Unix time and a position are not phones
    record = logging.makeLogRecord({"msg": "got %s", "args": (f"whatsapp:+{B9}",)})
    for formatter in (logs.RedactingFormatter(), logs.JsonFormatter()):
        assert B9 not in formatter.format(record)


async def test_the_command_line(dsn: str, conn: asyncpg.Connection) -> None:
    event = NewEvent(
        channel="wamm-x",
        provider="wamm",
        body=wamm_text(1, A9, "hi"),
        received_at=dt.datetime.now(dt.UTC),
        content_type="application/json",
    )
    await write_batch(conn, [event.with_dedup_key(None)])
    code, out = await acklog(dsn, "erase", "--phone", "call me maybe")
    assert code == 2 and "not a phone number" in out, out
    code, out = await acklog(dsn, "erase", "--phone", A_TYPED, "--by", "dpo@example.com")
    assert code == 0 and "masked 1 events" in out, out
    code, out = await acklog(dsn, "erase", "--phone", f"whatsapp:+{A9}", "--json")
    assert code == 1, out
    record = json.loads(out.splitlines()[-1])
    assert record["matched"] is False and record["requested_by"].startswith("cli:")
    assert await conn.fetchval("SELECT requested_by FROM erasures ORDER BY id LIMIT 1") == (
        "dpo@example.com"
    )
    assert leaks(out) == []


async def test_an_invalid_number_is_a_400_naming_phone(app: App) -> None:
    for body in ({"phone": "not a number"}, {"phone": "+99 123"}, {"phone": ""}, {}, []):
        resp = await app.client.post("/v1/erasures", json=body, headers=AUTH)
        assert resp.status == 400, body
        answer = await resp.json()
        assert answer["parameter"] == "phone"
    resp = await app.client.post("/v1/erasures", data=b"{", headers=AUTH)
    assert resp.status == 400
    resp = await app.client.post("/v1/erasures", json={"phone": A_TYPED})
    assert resp.status == 401


async def test_the_log_refuses_every_change_outside_the_audited_path(
    app: App, conn: asyncpg.Connection
) -> None:
    await app.post("wamm-x", "wamm", wamm_text(1, A9, "hello"), "application/json")
    refused = "the events log is append-only"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refused):
        await conn.execute("UPDATE events SET body = 'x'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refused):
        await conn.execute("DELETE FROM events")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refused):
        await conn.execute("TRUNCATE events")
    # a setting naming no erasure, or one from another transaction, opens nothing
    earlier = await conn.fetchval("INSERT INTO erasures (requested_by) VALUES ('t') RETURNING id")
    for setting in (str(earlier), "999", "1; DROP TABLE events", ""):
        async with conn.transaction():
            await conn.execute("SELECT set_config('acklog.erasure', $1, true)", setting)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refused):
                await conn.execute("UPDATE events SET body = 'x'")
    # inside an erasure, only body, headers and dedup key may change, never a row go
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refused):
        async with conn.transaction():
            own = await conn.fetchval(
                "INSERT INTO erasures (requested_by) VALUES ('t') RETURNING id"
            )
            await conn.execute("SELECT set_config('acklog.erasure', $1, true)", str(own))
            await conn.execute("UPDATE events SET channel = 'other'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refused):
        async with conn.transaction():
            own = await conn.fetchval(
                "INSERT INTO erasures (requested_by) VALUES ('t') RETURNING id"
            )
            await conn.execute("SELECT set_config('acklog.erasure', $1, true)", str(own))
            await conn.execute("DELETE FROM events")
    # the audit is kept
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="audit is kept"):
        await conn.execute("DELETE FROM erasures")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="audit is kept"):
        await conn.execute("TRUNCATE erasures CASCADE")
    assert await conn.fetchval("SELECT count(*) FROM events") == 1
    assert await conn.fetchval("SELECT count(*) FROM erasure_events") == 0


def meta_traffic(digits: str, n: int, first: int) -> list[NewEvent]:
    """``n`` outgoing Meta messages to ``digits``, each sent then delivered."""
    now = dt.datetime.now(dt.UTC)
    out = []
    for i in range(first, first + n):
        wid = wamid(digits, str(i).encode()).decode()
        for status in ("sent", "delivered"):
            body = meta_status(wid, status).replace(b"16505551234", digits.encode())
            event = NewEvent(
                channel="meta-x",
                provider="meta",
                body=body,
                received_at=now,
                content_type="application/json",
            )
            out.append(event.with_dedup_key(f"{wid}:{status}"))
    return out


async def test_an_erasure_while_the_projector_and_the_outbox_run(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """The live projector and the feed's outbox fold and derive the log while it is masked:
    no batch that read a body before the masking leaves the number behind it."""
    traffic = meta_traffic(A9, 400, 0) + meta_traffic(B9, 400, 1000)
    await write_batch(conn, traffic)
    head = await conn.fetchval("SELECT max(position) FROM events")
    projector, outbox = Projector(dsn, batch_size=50), Outbox(dsn, batch_size=50)
    tasks = [asyncio.create_task(projector.run()), asyncio.create_task(outbox.run())]
    try:
        await outbox.is_leader.wait()
        done = await erasure.erase(dsn, A_TYPED, "test")
        assert done.events == 800 and done.notices == 1
        async with asyncio.timeout(60):
            await outbox.wait_for(head)
            await projector.wait_for(head)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    dump = await pg_dump(dsn)
    assert leaks(dump) == []
    assert found(dump, B9)
    assert await conn.fetchval("SELECT count(*) FROM feed.events") >= 800
    assert await rebuild.verify(dsn) == []


async def test_an_erasure_whose_rebuild_died_is_rebuilt_by_the_next(
    dsn: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log is masked and committed before the rebuild: if the process dies there, the read
    models still hold the number until the next erasure, of any number, rebuilds them."""
    await write_batch(conn, meta_traffic(A9, 5, 0) + meta_traffic(B9, 5, 100))
    await Projector(dsn).catch_up(conn)
    rebuild_for_real = erasure._rebuild

    async def dies(dsn: str, workers: int | None, archives: object) -> int:
        raise RuntimeError("killed during the rebuild")

    monkeypatch.setattr(erasure, "_rebuild", dies)
    with pytest.raises(RuntimeError, match="killed"):
        await erasure.erase(dsn, A_TYPED, "test")
    assert leaks(await pg_dump(dsn))  # the log is masked, the read models not yet
    assert await conn.fetchval("SELECT rebuilt_at FROM erasures") is None

    monkeypatch.setattr(erasure, "_rebuild", rebuild_for_real)
    other = await erasure.erase(dsn, "+44 7700 900123", "test")
    assert other.matched is False and other.rebuilt_to is not None
    assert leaks(await pg_dump(dsn)) == []
    rebuilt = await conn.fetch("SELECT rebuilt_to FROM erasures ORDER BY id")
    assert [r["rebuilt_to"] for r in rebuilt] == [other.rebuilt_to, None]  # the one pending
    assert await rebuild.verify(dsn) == []
