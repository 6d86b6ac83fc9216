"""The query API (``/v1``) over the real app, real sockets and a real PostgreSQL.

Data comes in the way production data does: sample webhooks POSTed to ``/hooks/{channel}``,
then folded by the projector. No mocks.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import stat
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from eventstore import channels as registry
from eventstore import read
from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from projections.readmodel import query
from projections.runner import Projector
from service.api import openapi
from service.api import routes as api
from service.core import apikey
from service.runtime.app import make_app
from tests.support.apps import add_channel, settings
from tests.support.samples import sample

Client = Callable[..., Awaitable[TestClient]]
KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}

WAHA_ID = "true_11111111111@c.us_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
WEIRD_ID = "true_weird/id?x=1&y=%20 ü#frag"
META_WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="


class Clock:
    """The app's clock, moved by the test (the overdue filter reads it)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(aiohttp_client: Client, dsn: str, clock: Clock) -> TestClient:
    return await aiohttp_client(make_app(settings(api_key=KEY), dsn, clock=clock))


@pytest.fixture
async def projector(dsn: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    conn = await connect(dsn)
    p = Projector(dsn)

    async def fold() -> int:
        return await p.catch_up(conn)

    yield fold
    await conn.close()


async def post(client: TestClient, channel: str, token: str, body: bytes, ctype: str) -> int:
    resp = await client.post(
        f"/hooks/{channel}?token={token}", data=body, headers={"Content-Type": ctype}
    )
    assert resp.status == 200, await resp.text()
    position: int = (await resp.json())["position"]
    return position


async def get(client: TestClient, path: str, status: int = 200, **query: Any) -> Any:
    resp = await client.get(path, params={k: str(v) for k, v in query.items()}, headers=AUTH)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def seed_waha(client: TestClient, dsn: str) -> dict[str, int]:
    """One WAHA channel with a message in each interesting state, a group receipt, a failure,
    a connection status, and a message id full of URL-reserved characters."""
    token = await add_channel(dsn, "wa", "waha")
    pos: dict[str, int] = {}
    for name in (
        "session_status_working.json",
        "message_text.json",  # WAHA_ID: outgoing, sent
        "message_ack_read.json",  # read
        "message_ack_error_noweb.json",  # not_sent, with a failure
        "message_ack_status_broadcast_read.json",  # a group receipt
    ):
        body, ctype = sample("waha", name)
        pos[name] = await post(client, "wa", token, body, ctype)
    body, ctype = sample("waha", "message_media_image.json")
    body = body.replace(WAHA_ID.encode(), WEIRD_ID.encode())
    # sent by us (fromMe), no ack yet: still sending
    body = body.replace(b'"hasMedia": true', b'"fromMe": true, "hasMedia": true')
    pos["sending"] = await post(client, "wa", token, body, ctype)
    return pos


async def seed_wamm(client: TestClient, token: str, ids: range) -> list[str]:
    body, ctype = sample("wamm", "msg_incoming_text.json")
    for n in ids:
        await post(client, "shop", token, body.replace(b"1234567", str(n).encode()), ctype)
    return [str(n) for n in ids]


# -- auth and the document ----------------------------------------------------------------

ALL_PATHS = [
    "/v1/channels",
    "/v1/channels/wa/status",
    "/v1/channels/wa/messages",
    f"/v1/channels/wa/messages/{quote(WAHA_ID)}",
    "/v1/events",
    "/v1/events/1",
    "/v1/quarantine",
    "/v1/nope",
]


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer", "Bearer  "]
)
async def test_every_api_path_needs_the_key(
    client: TestClient, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    resp = await client.get(path, headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert await resp.json() == {
        "error": "unauthorized",
        "detail": "send the API key as 'Authorization: Bearer <key>'",
    }


async def test_key_scheme_is_case_insensitive(client: TestClient) -> None:
    resp = await client.get("/v1/channels", headers={"Authorization": f"bearer {KEY}"})
    assert resp.status == 200


async def test_generated_key_is_kept_in_the_data_dir(
    aiohttp_client: Client, dsn: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    client = await aiohttp_client(make_app(settings(data_dir=data_dir), dsn))
    assert not (data_dir / "api_key").exists()  # nothing is written until the API is used
    assert (await client.get("/v1/channels")).status == 401
    path = data_dir / "api_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert key.startswith("acklog_") and len(key) > 40
    resp = await client.get("/v1/channels", headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 200
    # the banner's view: the same key, and a restart keeps it
    assert apikey.resolve(settings(data_dir=data_dir)) == (key, f"stored in {path}")
    assert apikey.resolve(settings(data_dir=data_dir, api_key="k")) == ("k", "ACKLOG_API_KEY")


def test_key_file_is_created_once_and_tightened(tmp_path: Path) -> None:
    key, created = apikey.load_or_create(tmp_path)
    assert created
    assert apikey.load_or_create(tmp_path) == (key, False)
    path = tmp_path / "api_key"
    path.chmod(0o644)
    assert apikey.load_or_create(tmp_path) == (key, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("\n")
    with pytest.raises(apikey.ApiKeyError):
        apikey.load_or_create(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["api_key"]  # no temp files left


async def test_openapi_is_public_and_covers_every_route(client: TestClient) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert doc["security"] == [{"bearerAuth": []}]
    routes = {"/v1" + path.replace("{message_id:.+}", "{message_id}") for path, _ in api.ROUTES}
    assert set(doc["paths"]) == routes | {"/openapi.json", "/v1/stream", "/v1/erasures"}
    erase = doc["paths"]["/v1/erasures"]["post"]  # the one POST (docs/erasure.md)
    assert {"200", "400", "401", "503"} == set(erase["responses"])
    assert erase["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []
    assert set(doc["webhooks"]) >= {"message.state_changed", "instance.status_changed"}
    for path in routes:
        op = doc["paths"][path]["get"]
        names = {p["name"] for p in op["parameters"]}
        assert {n.strip("{}") for n in path.split("/") if n.startswith("{")} <= names
        assert {"200", "401", "503"} <= set(op["responses"])
        if op["parameters"]:
            assert "400" in op["responses"] and "404" in op["responses"]
        for response in op["responses"].values():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
    assert doc == openapi.document()


# -- channels ------------------------------------------------------------------------------


async def test_channels_with_provider_status_and_counts(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    await seed_waha(client, dsn)
    token = await add_channel(dsn, "shop", "wamm")
    await seed_wamm(client, token, range(3))
    await add_channel(dsn, "empty", "meta")
    gone = await add_channel(dsn, "gone", "zapi")
    body, ctype = sample("zapi", "disconnected.json")
    await post(client, "gone", gone, body, ctype)
    conn = await connect(dsn)
    try:
        await registry.remove(conn, "gone")  # its events stay, so it is still listed
    finally:
        await conn.close()
    await projector()

    items = {c["name"]: c for c in (await get(client, "/v1/channels"))["items"]}
    assert list(items) == ["empty", "gone", "shop", "wa"]
    wa = items["wa"]
    assert wa["provider"] == "waha" and wa["registered"] is True
    assert wa["connection"]["status"] == "connected"
    assert wa["connection"]["event"] == "/v1/events/1"
    assert wa["messages"] == {"sending": 1, "sent": 1, "read": 2, "not_sent": 1}
    assert wa["total_messages"] == 5
    assert wa["links"] == {
        "status": "/v1/channels/wa/status",
        "messages": "/v1/channels/wa/messages",
    }
    assert items["shop"]["messages"] == {"received": 3}
    assert wa["health"]["health"] == "ok" and wa["health"]["status"] == "connected"
    assert items["gone"]["health"]["health"] == "not_connected"
    empty_health = items["empty"].pop("health")
    assert empty_health["health"] == "unknown" and empty_health["thresholds"] == {
        "flap_changes": 5,
        "flap_window_s": 300.0,
        "silent_acks_s": 900.0,
        "silent_traffic_s": 21600.0,
    }
    assert items["empty"] == {
        "name": "empty",
        "provider": "meta",
        "registered": True,
        "connection": None,
        "messages": {},
        "total_messages": 0,
        "links": {"status": "/v1/channels/empty/status", "messages": "/v1/channels/empty/messages"},
    }
    assert items["gone"]["registered"] is False
    assert items["gone"]["provider"] == "zapi"
    assert items["gone"]["connection"]["status"] == "disconnected"
    status = await get(client, "/v1/channels/gone/status")
    assert status["registered"] is False and status["current"]["status"] == "disconnected"


async def test_channel_status_and_history_newest_first(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "g", "greenapi")
    positions = []
    for name in (
        "statusInstanceChanged_online.json",
        "stateInstanceChanged_notAuthorized.json",
        "statusInstanceChanged_online.json",
    ):
        body, ctype = sample("greenapi", name)
        positions.append(await post(client, "g", token, body, ctype))
    await projector()

    status = await get(client, "/v1/channels/g/status")
    assert status["channel"] == "g" and status["provider"] == "greenapi"
    assert status["current"]["status"] == "connected"
    assert status["current"]["position"] == positions[-1]
    assert [h["status"] for h in status["history"]] == ["connected", "qr_required", "connected"]
    assert [h["position"] for h in status["history"]] == positions[::-1]
    assert status["history"][1]["event"] == f"/v1/events/{positions[1]}"
    short = await get(client, "/v1/channels/g/status", limit=1)
    assert short["history"] == status["history"][:1]
    # three reports, three changes (the first one included), all within the flap window
    assert status["health"]["changes_in_window"] == 3
    assert status["health"]["health"] == "ok" and status["health"]["flapping"] is False

    await add_channel(dsn, "quiet", "wamm")
    quiet = await get(client, "/v1/channels/quiet/status")
    assert quiet.pop("health")["health"] == "unknown"
    assert quiet == {
        "channel": "quiet",
        "provider": "wamm",
        "registered": True,
        "current": None,
        "history": [],
    }


# -- messages ------------------------------------------------------------------------------


async def test_message_filters(
    client: TestClient, dsn: str, clock: Clock, projector: Callable[[], Awaitable[int]]
) -> None:
    await seed_waha(client, dsn)
    await projector()
    path = "/v1/channels/wa/messages"

    page = await get(client, path)
    assert page["next_cursor"] is None
    states = {m["message_id"]: m["state"] for m in page["items"]}
    assert states[WAHA_ID] == "sent"
    assert states[WEIRD_ID] == "sending"
    assert sorted(states.values()) == ["not_sent", "read", "read", "sending", "sent"]
    positions = [m["first_position"] for m in page["items"]]
    assert positions == sorted(positions, reverse=True)
    weird = next(m for m in page["items"] if m["message_id"] == WEIRD_ID)
    assert weird["link"] == f"/v1/channels/wa/messages/{quote(WEIRD_ID)}"
    assert weird["direction"] == "outgoing" and weird["kind"] is not None

    read = await get(client, path, state="read")
    assert {m["state"] for m in read["items"]} == {"read"} and len(read["items"]) == 2
    assert (await get(client, path, direction="incoming"))["items"] == []
    assert len((await get(client, path, direction="outgoing"))["items"]) == 5

    # overdue on the injected clock: sending > 60 s, then sent > 10 min
    assert (await get(client, path, overdue="true"))["items"] == []
    clock.now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    overdue = await get(client, path, overdue="true")
    assert [m["message_id"] for m in overdue["items"]] == [WEIRD_ID]
    assert overdue["items"][0]["overdue"] is True
    clock.now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=11)
    overdue = await get(client, path, overdue="true")
    assert {m["message_id"] for m in overdue["items"]} == {WEIRD_ID, WAHA_ID}
    assert (await get(client, path, overdue="true", state="sent"))["items"][0][
        "message_id"
    ] == WAHA_ID
    others = await get(client, path, overdue="false")
    assert {m["state"] for m in others["items"]} == {"read", "not_sent"}
    assert not any(m["overdue"] for m in others["items"])


async def test_since_and_until_on_first_seen(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    early = await seed_wamm(client, token, range(1, 4))
    await asyncio.sleep(0.05)
    cut = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.05)
    late = await seed_wamm(client, token, range(4, 6))
    await projector()
    path = "/v1/channels/shop/messages"
    iso = cut.isoformat()
    assert [m["message_id"] for m in (await get(client, path, since=iso))["items"]] == late[::-1]
    assert [m["message_id"] for m in (await get(client, path, until=iso))["items"]] == early[::-1]
    z = cut.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert len((await get(client, path, since=z))["items"]) == 2
    naive = cut.replace(tzinfo=None).isoformat()  # no offset: UTC
    assert len((await get(client, path, until=naive))["items"]) == 3
    both = await get(client, path, since=(cut - dt.timedelta(hours=1)).isoformat(), until=iso)
    assert len(both["items"]) == 3


async def test_pages_stay_exact_while_new_events_arrive(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "shop", "wamm")
    original = await seed_wamm(client, token, range(100, 125))
    await projector()
    path = "/v1/channels/shop/messages"

    page1 = await get(client, path, limit=10)
    assert len(page1["items"]) == 10 and page1["next_cursor"]
    # meanwhile: new messages arrive and old ones change state
    await seed_wamm(client, token, range(200, 215))
    body, ctype = sample("wamm", "msg_state_delivered.json")
    for n in (101, 110, 120):
        await post(client, "shop", token, body.replace(b"1234567", str(n).encode()), ctype)
    await projector()

    seen = [m["message_id"] for m in page1["items"]]
    cursor = page1["next_cursor"]
    while cursor:
        page = await get(client, path, limit=10, cursor=cursor)
        seen += [m["message_id"] for m in page["items"]]
        cursor = page["next_cursor"]
    assert seen == original[::-1]  # no duplicate, no skip, same order
    everything = await get(client, path, limit=500)
    assert len(everything["items"]) == 40 and everything["next_cursor"] is None
    # a full page followed by nothing has no cursor left to follow
    exact = await get(client, path, limit=40)
    assert exact["next_cursor"] is None


async def test_cursor_keeps_order_within_one_event(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    """A batched webhook creates several messages at one position: the key breaks the tie."""
    token = await add_channel(dsn, "m", "meta")
    body, ctype = sample("meta", "CONSTRUCTED_batch_three_statuses_out_of_order.json")
    bodies = [body.replace(b"wamid.xyzxyz", f"wamid.{c}".encode(), 1) for c in "cab"]
    for b in bodies:
        await post(client, "m", token, b, ctype)
    await projector()
    one_by_one = []
    cursor: str | None = None
    for _ in range(50):  # a page per message: far fewer than 50; a cursor loop fails here
        query: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = await get(client, "/v1/channels/m/messages", **query)
        one_by_one += [m["message_id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    else:
        pytest.fail("the cursor never ran out: pagination loops")
    everything = await get(client, "/v1/channels/m/messages")
    assert one_by_one == [m["message_id"] for m in everything["items"]]
    assert len(set(one_by_one)) == len(one_by_one)


async def test_message_detail(
    client: TestClient, dsn: str, clock: Clock, projector: Callable[[], Awaitable[int]]
) -> None:
    pos = await seed_waha(client, dsn)
    await projector()

    sent = await get(client, f"/v1/channels/wa/messages/{quote(WAHA_ID)}")
    assert sent["message_id"] == WAHA_ID and sent["channel"] == "wa"
    assert sent["provider"] == "waha" and sent["direction"] == "outgoing"
    assert sent["state"] == "sent"
    assert list(sent["milestones"]) == ["sending", "sent"]  # in the order they are reached
    milestone = sent["milestones"]["sent"]
    assert milestone["position"] == pos["message_text.json"]
    assert milestone["event"] == f"/v1/events/{pos['message_text.json']}"
    assert sent["content"]["text"] == "Hi there!"
    acks = sent["missed_acks"]
    assert acks["delivered_due_at"] is not None and acks["missed_delivered"] is False
    assert acks["overdue"] is False and acks["overdue_for"] is None
    assert [(t["fact"], t["status"]) for t in sent["timeline"]] == [
        ("message", "sending"),
        ("status", "sent"),
    ]
    assert [t["seq"] for t in sent["timeline"]] == [0, 1]
    assert sent["timeline_truncated"] is False
    # every timeline entry links to the raw event it came from
    for entry in sent["timeline"]:
        event = await get(client, entry["event"])
        assert event["position"] == entry["position"]
        assert event["decoded"]["ok"] is True

    failed = await get(
        client,
        f"/v1/channels/wa/messages/{quote('true_8613700000000@c.us_3EB0D971A974F4AC7F77C5')}",
    )
    assert failed["state"] == "not_sent"
    assert len(failed["failures"]) == 1
    assert failed["failures"][0]["event"] == f"/v1/events/{pos['message_ack_error_noweb.json']}"

    group = await get(
        client, f"/v1/channels/wa/messages/{quote('true_status@broadcast_AAAAAAAAAAAAAAAAA')}"
    )
    assert [r["participant"] for r in group["receipts"]] == ["321321@c.us"]
    assert group["receipts"][0]["state"] == "read"
    assert set(group["receipts"][0]["milestones"]) == {"read"}
    assert group["timeline"][0]["participant"] == "321321@c.us"

    # the id with '/', '?', '&', '%', ' ', 'ü' and '#' round-trips through its link
    listed = await get(client, "/v1/channels/wa/messages", state="sending")
    weird = await get(client, listed["items"][0]["link"])
    assert weird["message_id"] == WEIRD_ID and weird["state"] == "sending"
    assert weird["content"]["media"] is not None
    raw_slash = await get(
        client,
        "/v1/channels/wa/messages/"
        + WEIRD_ID.replace("?", "%3F").replace("#", "%23").replace("%20", "%2520"),
    )
    assert raw_slash["message_id"] == WEIRD_ID
    clock.now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    overdue = (await get(client, listed["items"][0]["link"]))["missed_acks"]
    assert overdue["overdue"] is True and overdue["overdue_for"] == "sent"
    assert overdue["sent_due_at"] is not None and overdue["sent_by"] is None


async def test_meta_wamid_with_padding(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "m", "meta")
    body, ctype = sample("meta", "message_text_docs.json")
    await post(client, "m", token, body, ctype)
    await projector()
    detail = await get(client, f"/v1/channels/m/messages/{quote(META_WAMID)}")
    assert detail["direction"] == "incoming" and detail["state"] == "received"
    assert detail["missed_acks"]["sent_due_at"] is None


# -- events and quarantine -----------------------------------------------------------------


async def test_events_as_received_with_their_decoding(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "wg", "waha")
    body, ctype = sample("waha", "message_ack_error_noweb.json")
    first = await post(client, "wg", token, body, ctype)
    again = await post(client, "wg", token, body, ctype)
    broken, _ = sample("qikchat", "status_read.published.txt")
    bad = await post(client, "wg", token, broken, "application/json")
    binary = await post(client, "wg", token, b"\xff\xfe\x00binary", "application/octet-stream")
    other = await add_channel(dsn, "other", "wamm")
    wamm_body, _ = sample("wamm", "msg_incoming_text.json")
    await post(client, "other", other, wamm_body, "application/json")

    event = await get(client, f"/v1/events/{first}")
    assert event["body"] == body.decode() and event["encoding"] == "utf-8"
    assert event["channel"] == "wg" and event["provider"] == "waha"
    assert event["content_type"] == ctype
    assert event["headers"]["content-type"] == ctype
    assert "authorization" not in event["headers"]
    assert event["dedup_key"] == "id:evt_01je7rhjkgcds9be5m10qh3cmf"
    assert event["duplicate_of"] is None
    assert event["received_at"].endswith(("Z", "+00:00"))
    assert event["decoded"]["ok"] is True and event["decoded"]["error"] is None
    assert [f["type"] for f in event["decoded"]["facts"]] == ["status"]
    assert event["decoded"]["facts"][0]["status"] == "not_sent"
    assert event["decoded"]["facts"][0]["key"] == "true_8613700000000@c.us_3EB0D971A974F4AC7F77C5"
    assert (await get(client, f"/v1/events/{again}"))["duplicate_of"] == first
    failed = await get(client, f"/v1/events/{bad}")
    assert failed["decoded"] == {
        "ok": False,
        "facts": [],
        "error": failed["decoded"]["error"],
    }
    assert "not valid JSON" in failed["decoded"]["error"]
    raw = await get(client, f"/v1/events/{binary}")
    assert raw["encoding"] == "base64"
    assert base64.b64decode(raw["body"]) == b"\xff\xfe\x00binary"

    page = await get(client, "/v1/events", limit=2)
    assert [e["position"] for e in page["items"]] == [1, 2] and page["next_after"] == 2
    page = await get(client, "/v1/events", after=2, limit=2)
    assert [e["position"] for e in page["items"]] == [3, 4] and page["next_after"] == 4
    page = await get(client, "/v1/events", after=4, limit=2)
    assert [e["channel"] for e in page["items"]] == ["other"] and page["next_after"] is None
    only = await get(client, "/v1/events", channel="wg")
    assert [e["position"] for e in only["items"]] == [first, again, bad, binary]
    assert only["next_after"] is None


async def test_quarantine_lists_undecodable_events(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "q", "qikchat")
    broken, ctype = sample("qikchat", "status_read.published.txt")
    good, _ = sample("qikchat", "status_read.json")
    positions = []
    for n in range(3):
        positions.append(await post(client, "q", token, broken + b" " * n, ctype))
        await post(client, "q", token, good, ctype)
    z = await add_channel(dsn, "z", "zapi")
    zbody, zctype = sample("zapi", "connected.published.txt")
    zpos = await post(client, "z", z, zbody, zctype)
    await projector()

    page = await get(client, "/v1/quarantine", limit=2)
    assert [e["position"] for e in page["items"]] == positions[:2]
    assert page["next_after"] == positions[1]
    entry = page["items"][0]
    assert entry["channel"] == "q" and entry["provider"] == "qikchat"
    assert "not valid JSON" in entry["reason"]
    assert entry["event"] == f"/v1/events/{positions[0]}"
    rest = await get(client, "/v1/quarantine", after=page["next_after"], limit=2)
    assert [e["position"] for e in rest["items"]] == [positions[2], zpos]
    assert rest["next_after"] is None
    only = await get(client, "/v1/quarantine", channel="z")
    assert [e["position"] for e in only["items"]] == [zpos]


# -- errors --------------------------------------------------------------------------------

BAD_PARAMETERS = [
    ("/v1/channels/wa/status", {"limit": "0"}, "limit"),
    ("/v1/channels/wa/status", {"limit": "501"}, "limit"),
    ("/v1/channels/wa/status", {"limit": "ten"}, "limit"),
    ("/v1/channels/wa/messages", {"state": "lost"}, "state"),
    ("/v1/channels/wa/messages", {"direction": "sideways"}, "direction"),
    ("/v1/channels/wa/messages", {"overdue": "maybe"}, "overdue"),
    ("/v1/channels/wa/messages", {"since": "yesterday"}, "since"),
    ("/v1/channels/wa/messages", {"until": "2024-13-01"}, "until"),
    ("/v1/channels/wa/messages", {"since": "2024-05-02", "until": "2024-05-01"}, "until"),
    ("/v1/channels/wa/messages", {"cursor": "not-a-cursor"}, "cursor"),
    (
        "/v1/channels/wa/messages",
        {"cursor": base64.urlsafe_b64encode(b'[1,"a\\u0000"]').decode()},
        "cursor",
    ),
    (
        "/v1/channels/wa/messages",
        {"cursor": base64.urlsafe_b64encode(b'[-1,"a"]').decode()},
        "cursor",
    ),
    ("/v1/channels/wa/messages", {"limit": "-3"}, "limit"),
    ("/v1/channels/wa/messages", {"limit": "1e3"}, "limit"),
    ("/v1/events", {"after": "-1"}, "after"),
    ("/v1/events", {"after": "99999999999999999999"}, "after"),
    ("/v1/events", {"limit": "101"}, "limit"),
    ("/v1/events", {"channel": "no/such"}, "channel"),
    ("/v1/events/abc", {}, "position"),
    ("/v1/events/0", {}, "position"),
    ("/v1/events/9223372036854775808", {}, "position"),
    ("/v1/quarantine", {"after": "x"}, "after"),
    ("/v1/quarantine", {"limit": "1000"}, "limit"),
    ("/v1/quarantine", {"channel": ""}, "channel"),
    ("/v1/channels", {"x": "1"}, "x"),
    ("/v1/channels/wa/messages", {"stat": "read"}, "stat"),
    ("/v1/events/1", {"limit": "1"}, "limit"),
    ("/v1/channels/wa/messages", {"anomaly": "nope"}, "anomaly"),
    ("/v1/channels/wa/messages", {"anomaly": "ack_retried%00"}, "anomaly"),
]


@pytest.mark.parametrize(("path", "query", "parameter"), BAD_PARAMETERS)
async def test_bad_parameters_are_400_and_named(
    client: TestClient, dsn: str, path: str, query: dict[str, str], parameter: str
) -> None:
    await add_channel(dsn, "wa", "waha")
    body = await get(client, path, 400, **query)
    assert body["error"] == "bad_request"
    assert body["parameter"] == parameter
    assert parameter in body["detail"]


NOT_FOUND = [
    ("/v1/channels/nope/status", "unknown_channel"),
    ("/v1/channels/nope/messages", "unknown_channel"),
    ("/v1/channels/nope/messages/x", "unknown_channel"),
    ("/v1/channels/..%2F..%2Fetc/messages", "unknown_channel"),
    ("/v1/channels/a';DROP TABLE events;--/status", "unknown_channel"),
    ("/v1/channels/wa/messages/nope", "unknown_message"),
    ("/v1/channels/wa/messages/a%00b", "unknown_message"),
    ("/v1/channels/wa/messages/%ED%A0%80", "unknown_message"),
    ("/v1/events/424242", "unknown_event"),
    ("/v1/events?channel=nope", "unknown_channel"),
    ("/v1/quarantine?channel=nope", "unknown_channel"),
    ("/v1/nope", "not_found"),
]


@pytest.mark.parametrize(("path", "code"), NOT_FOUND)
async def test_unknown_things_are_404(client: TestClient, dsn: str, path: str, code: str) -> None:
    await add_channel(dsn, "wa", "waha")
    resp = await client.get(path, headers=AUTH)
    assert resp.status == 404
    assert (await resp.json())["error"] == code


async def test_database_outage_is_503(client: TestClient, dsn: str, server_dsn: str) -> None:
    assert (await client.get("/v1/channels", headers=AUTH)).status == 200
    name = urllib.parse.urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    for path in ("/v1/channels", "/v1/channels/wa/messages", "/v1/events/1", "/v1/quarantine"):
        resp = await client.get(path, headers=AUTH)
        assert resp.status == 503, (path, await resp.text())
        assert resp.headers["Retry-After"] == "5"
        assert (await resp.json())["error"] == "unavailable"


# -- plans ---------------------------------------------------------------------------------


def _scans(plan: Any) -> list[tuple[str, str]]:
    """(node type, relation) of every scan in an EXPLAIN (FORMAT JSON) plan."""
    found: list[tuple[str, str]] = []
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.append((plan["Node Type"], plan["Relation Name"]))
        for value in plan.values():
            found += _scans(value)
    elif isinstance(plan, list):
        for item in plan:
            found += _scans(item)
    return found


async def test_queries_use_indexes(dsn: str, pool: asyncpg.Pool) -> None:
    """A few thousand messages and events: listings and timelines never scan a table."""
    wamm, ctype = sample("wamm", "msg_incoming_text.json")
    state, _ = sample("wamm", "msg_state_delivered.json")
    now = dt.datetime.now(dt.UTC)
    events = []
    for c in ("a", "b", "c"):
        for n in range(1500):
            body = (wamm if n % 3 else state).replace(b"1234567", str(n).encode())
            events.append(
                NewEvent(
                    channel=c, provider="wamm", body=body, received_at=now, content_type=ctype
                ).with_dedup_key(None)
            )
    group, gctype = sample("waha", "message_ack_status_broadcast_read.json")
    for n in range(1500):  # group receipts: 30 members of 50 messages
        body = group.replace(b"321321@c.us", f"{n % 30}@c.us".encode()).replace(
            b"AAAAAAAAAAAAAAAAA", f"{n // 30:017d}".encode()
        )
        events.append(
            NewEvent(
                channel="d", provider="waha", body=body, received_at=now, content_type=gctype
            ).with_dedup_key(None)
        )
    async with pool.acquire() as conn:
        await write_batch(conn, events)
    conn = await connect(dsn)
    try:
        await Projector(dsn).catch_up(conn)
        for table in ("events", "rm.messages", "rm.timeline", "rm.receipts"):
            await conn.execute(f"ANALYZE {table}")
        assert await conn.fetchval("SELECT count(*) FROM rm.messages") == 4550
        assert await conn.fetchval("SELECT count(*) FROM rm.receipts") == 1500

        async def scans(sql: str, *args: object) -> list[tuple[str, str]]:
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
            return _scans(plan if isinstance(plan, list) else json.loads(plan))

        def filt(**kw: Any) -> query.MessageFilter:
            return query.MessageFilter(channel="b", now=now, **kw)

        queries: list[tuple[str, list[object]]] = [
            query.list_messages_sql(filt()),
            query.list_messages_sql(filt(state="delivered")),
            query.list_messages_sql(filt(after=(2000, "7"))),
            query.list_messages_sql(filt(state="received", after=(2000, "7"), limit=500)),
            query.list_messages_sql(filt(direction="incoming", since=now)),
            query.list_messages_sql(filt(anomaly="ack_for_unseen", after=(2000, "7"))),
            (query.MESSAGE_SQL, ["b", "77"]),
            (query.RECEIPTS_SQL, ["d", "true_status@broadcast_00000000000000007"]),
            (query.TIMELINE_SQL, ["b", "77", 1001]),
            (registry.PROVIDER_SQL, ["b"]),
            (read.CHANNEL_PROVIDER_SQL, ["b"]),
            (query.PROVIDER_SQL, ["b"]),
            (query.HISTORY_SQL, ["b", 50]),
            (query.INSTANCE_SQL, ["b"]),
            (read.LOG_CHANNELS_SQL, []),
            (query.quarantine_sql(None), [0, 51]),
        ]
        for sql, args in queries:
            found = await scans(sql, *args)
            assert found, sql
            seq = [rel for node, rel in found if node == "Seq Scan"]
            assert not seq, (sql, found)
    finally:
        await conn.close()


async def test_anomalies_in_listing_detail_and_filter(
    client: TestClient, dsn: str, projector: Callable[[], Awaitable[int]]
) -> None:
    await seed_waha(client, dsn)
    await projector()
    path = "/v1/channels/wa/messages"
    page = await get(client, path)
    anomalies = {m["message_id"]: m["anomalies"] for m in page["items"]}
    group, failed, read = (
        "true_status@broadcast_AAAAAAAAAAAAAAAAA",
        "true_8613700000000@c.us_3EB0D971A974F4AC7F77C5",
        "true_11111111111@c.us_4CC5EDD64BC22EBA6D639F2AF571346C",
    )
    assert anomalies == {
        WEIRD_ID: [],
        WAHA_ID: [],
        group: ["read_without_delivered", "ack_for_unseen"],  # a member's read, nothing sent
        failed: ["ack_for_unseen"],
        read: ["read_without_delivered", "ack_for_unseen"],
    }
    detail = await get(client, f"{path}/{quote(read)}")
    assert detail["anomalies"] == ["read_without_delivered", "ack_for_unseen"]
    unseen = await get(client, path, anomaly="ack_for_unseen")
    assert [m["message_id"] for m in unseen["items"]] == [group, failed, read]
    rwd = await get(client, path, anomaly="read_without_delivered", limit=1)
    assert [m["message_id"] for m in rwd["items"]] == [group] and rwd["next_cursor"]
    rest = await get(client, path, anomaly="read_without_delivered", cursor=rwd["next_cursor"])
    assert [m["message_id"] for m in rest["items"]] == [read]
    assert (await get(client, path, anomaly="ack_retried"))["items"] == []

    # the same read retried by the provider: a new event, the same ack
    conn = await connect(dsn)
    try:
        token = await registry.add_token(conn, "wa")
    finally:
        await conn.close()
    body, ctype = sample("waha", "message_ack_read.json")
    await post(client, "wa", token, body, ctype)
    await projector()
    retried = await get(client, path, anomaly="ack_retried")
    assert [m["message_id"] for m in retried["items"]] == [read]
