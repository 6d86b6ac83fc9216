"""``acklog subscriptions …`` as a user runs them: what they print, exit codes, refusals."""

from __future__ import annotations

import json

import asyncpg

from eventstore.append import write_batch
from projections.feed import store
from projections.feed import subscriptions as subs
from projections.feed.outbox import Outbox
from tests.support.payloads import event, meta_status
from tests.support.procs import command_output as acklog


async def test_subscription_lifecycle(dsn: str, conn: asyncpg.Connection) -> None:
    code, out = await acklog(
        dsn, "subscriptions", "add", "crm", "--url", "http://127.0.0.1:9/hook",
        "--channel", "shop", "--events", "message.state_changed",
    )  # fmt: skip
    assert code == 0, out
    assert "whsec_" in out
    code, out = await acklog(dsn, "subscriptions", "add", "crm", "--url", "http://127.0.0.1:9/")
    assert code == 2 and "exists" in out
    code, out = await acklog(dsn, "subscriptions", "list", "--json")
    (listed,) = json.loads(out)
    assert (listed["name"], listed["channels"], listed["status"]) == ("crm", ["shop"], "active")
    assert "whsec_" not in out  # secrets are never listed
    code, out = await acklog(dsn, "subscriptions", "pause", "crm")
    assert code == 0 and "paused" in out
    code, out = await acklog(dsn, "subscriptions", "resume", "crm")
    assert code == 0 and "active" in out
    code, out = await acklog(dsn, "subscriptions", "rotate-secret", "crm", "--overlap", "60")
    assert code == 0 and "whsec_" in out
    sub = await subs.get(conn, "crm")
    assert len(await subs.signing_secrets(conn, sub.id)) == 2
    code, out = await acklog(dsn, "subscriptions", "remove", "crm")
    assert code == 0
    code, out = await acklog(dsn, "subscriptions", "remove", "crm")
    assert code == 2 and "no subscription" in out


async def test_add_refuses_private_addresses_and_bad_urls(dsn: str) -> None:
    for url in ("http://10.1.2.3/hook", "http://169.254.169.254/", "file:///etc/passwd"):
        code, out = await acklog(dsn, "subscriptions", "add", "x", "--url", url)
        assert code == 2 and "error:" in out, (url, out)


async def test_redeliver_and_rebuild_the_feed(dsn: str, conn: asyncpg.Connection) -> None:
    positions = await write_batch(conn, [event(meta_status(f"w{i}", "sent")) for i in range(4)])
    await Outbox("").catch_up(conn)
    await subs.add(conn, "crm", "http://127.0.0.1:9/hook")
    sub = await subs.get(conn, "crm")
    assert sub.cursor == await store.last_seq(conn)  # a new subscription starts at the end
    third = positions[2].position
    code, out = await acklog(
        dsn, "subscriptions", "redeliver", "crm", "--from-position", str(third)
    )
    assert code == 0, out
    sub = await subs.get(conn, "crm")
    owed = await store.after(conn, sub.cursor, limit=100)
    assert min(e.position for e in owed) == third
    before = {e.id for e in await store.after(conn, 0, limit=100)}
    code, out = await acklog(dsn, "subscriptions", "rebuild-feed")
    assert code == 0, out
    await Outbox("").catch_up(conn)
    assert {e.id for e in await store.after(conn, 0, limit=100)} == before


async def test_attempts_are_pruned_to_the_latest_per_subscription(
    conn: asyncpg.Connection,
) -> None:
    """Every delivery leaves an attempt row: pruning keeps the ``keep`` latest of each
    subscription, in bounded chunks, and leaves other subscriptions alone."""
    a, _ = await subs.add(conn, "a", "http://127.0.0.1:9/a")
    b, _ = await subs.add(conn, "b", "http://127.0.0.1:9/b")
    for seq in range(1, 31):
        await subs.record_attempt(conn, a.id, seq, 1, "failed", 500, "answered 500", 0.01)
    for seq in range(1, 6):
        await subs.record_attempt(conn, b.id, seq, 1, "failed", 500, "answered 500", 0.01)
    assert await subs.prune_attempts(conn, a.id, keep=10, limit=15) == 15  # one chunk
    assert await subs.prune_attempts(conn, a.id, keep=10, limit=15) == 5
    assert await subs.prune_attempts(conn, a.id, keep=10) == 0
    kept = await subs.recent_attempts(conn, a.id, limit=100)
    assert [x.seq for x in kept] == list(range(30, 20, -1))  # the 10 latest
    assert await subs.prune_attempts(conn, b.id, keep=10) == 0
    assert len(await subs.recent_attempts(conn, b.id, limit=100)) == 5
