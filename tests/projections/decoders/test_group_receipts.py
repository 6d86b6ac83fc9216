"""Group receipts counted per message: distinct participants at each receipt, for any
order, any repeats and any batching of the webhooks (the fold's own path, pure), and in the
API answers over a real app and database."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.events import StoredEvent
from projections import fold
from projections.facts import RANK
from projections.rules.message_state import MessageState
from projections.rules.rows import Key, ReceiptKey
from tests.conftest import API_AUTH, API_KEY
from tests.support.apps import add_channel
from tests.support.console_helpers import sign_in
from tests.support.payloads import meta_status

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STATUSES = ["sent", "delivered", "read", "played", "failed"]
receipts = st.tuples(st.sampled_from(STATUSES), st.sampled_from(["p0", "p1", "p2", "p3", None]))


def _events(items: list[tuple[str, str | None]]) -> list[StoredEvent]:
    return [
        StoredEvent(
            position=i + 1,
            received_at=T0 + dt.timedelta(seconds=i),
            channel="c",
            provider="meta",
            content_type="application/json",
            headers={},
            body=meta_status("wamid.g", status, participant=participant),
            dedup_key=f"k{i}",
            duplicate_of=None,
        )
        for i, (status, participant) in enumerate(items)
    ]


def _fold(events: list[StoredEvent], cuts: list[int]) -> MessageState:
    """Fold in batches cut at ``cuts``, each batch seeing what the previous ones wrote."""
    messages: dict[Key, MessageState] = {}
    stored: dict[ReceiptKey, MessageState] = {}
    bounds = [0, *sorted(set(c % (len(events) + 1) for c in cuts)), len(events)]
    for lo, hi in itertools.pairwise(bounds):
        if lo == hi:
            continue
        batch = fold.fold(fold.decode(events[lo:hi]), messages, {}, stored, {})
        messages.update(batch.messages)
        stored.update(batch.receipts)
    return messages[("c", "wamid.g")]


def _counts(m: MessageState) -> tuple[int, int, int, int]:
    return m.participants, m.delivered_to, m.read_by, m.played_by


@settings(max_examples=300)
@given(
    items=st.lists(receipts, min_size=1, max_size=14),
    cuts=st.lists(st.integers(0, 20), max_size=4),
    data=st.data(),
)
def test_counts_are_distinct_participants_in_any_order_and_batching(
    items: list[tuple[str, str | None]], cuts: list[int], data: st.DataObject
) -> None:
    best: dict[str, int] = {}
    for status, participant in items:
        if participant is not None:
            rank = RANK["not_sent" if status == "failed" else status]
            best[participant] = max(best.get(participant, -1), rank)
    expected = (
        len(best),
        sum(r >= RANK["delivered"] for r in best.values()),
        sum(r >= RANK["read"] for r in best.values()),
        sum(r >= RANK["played"] for r in best.values()),
    )
    assert _counts(_fold(_events(items), [])) == expected
    repeats = data.draw(st.lists(st.sampled_from(items), max_size=6))
    mixed = data.draw(st.permutations(items + repeats))
    assert _counts(_fold(_events(mixed), cuts)) == expected
    # the state stays the furthest any participant (or the message's own ack) got
    furthest = max(RANK["not_sent" if s == "failed" else s] for s, _ in items)
    assert _fold(_events(mixed), cuts).rank == furthest


# -- the API -------------------------------------------------------------------------------


async def _get(api_client: TestClient, path: str) -> Any:
    resp = await api_client.get(path, headers=API_AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_list_and_detail_count_receipts(
    api_client: TestClient, dsn: str, project: Callable[[], Awaitable[int]]
) -> None:
    token = await add_channel(dsn, "g", "meta")
    for status, participant in [
        ("delivered", "p1"),
        ("read", "p1"),
        ("read", "p1"),  # a retry
        ("delivered", "p2"),
        ("delivered", "p3"),
        ("played", "p3"),
    ]:
        resp = await api_client.post(
            f"/hooks/g?token={token}",
            data=meta_status("wamid.group", status, participant=participant),
            headers={"Content-Type": "application/json"},
        )
        assert resp.status == 200
    resp = await api_client.post(
        f"/hooks/g?token={token}",
        data=meta_status("wamid.alone", "read"),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200
    await project()
    page = await _get(api_client, "/v1/channels/g/messages")
    by_id = {m["message_id"]: m for m in page["items"]}
    counts = {"participants": 3, "delivered_to": 3, "read_by": 2, "played_by": 1}
    assert by_id["wamid.group"]["receipt_counts"] == counts
    assert by_id["wamid.group"]["state"] == "played"  # the furthest any participant got
    assert by_id["wamid.alone"]["receipt_counts"] is None
    detail = await _get(api_client, by_id["wamid.group"]["link"])
    assert detail["receipt_counts"] == counts
    assert [r["participant"] for r in detail["receipts"]] == ["p1", "p2", "p3"]
    # the console says the same, on the message page and in the list
    base = f"http://{api_client.server.host}:{api_client.server.port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        await sign_in(browser, base, API_KEY)
        async with browser.get(f"{base}/ui/channels/g/messages/wamid.group") as page:
            text = await page.text()
        assert "delivered to 3, read by 2, played by 1" in text, text
        async with browser.get(f"{base}/ui/channels/g") as page:
            assert "read by 2 of 3" in await page.text()
