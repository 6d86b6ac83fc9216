"""Query: timeline lookups and message listings against a million messages in rm.messages.

The read models come from the projection phase (a real fold of the log). If they hold fewer
messages than asked, they are topped up by copying the folded messages and their timelines
under new keys, shifted to later positions (so listings keep one message per position).
SQL is timed on one connection, one query at a time; the HTTP API (when ``service/api/routes.py``
exists) is loaded from wrk or bench.loadgen like ingest.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
from pathlib import Path
from typing import Any

import asyncpg

from bench import servers, wrkrun
from bench.progress import log
from bench.stats import median_of, percentiles

TIMELINE_SQL = (
    "SELECT position, seq, received_at, provider_time, fact, status, raw, participant,"
    " error_code, error_text, advanced, duplicate_of"
    " FROM rm.timeline WHERE channel = $1 AND key = $2 ORDER BY position, seq"
)
_SUMMARY = (
    "channel, key, provider, direction, state, state_at, kind, chat, sender, text,"
    " first_position, first_seen_at, last_seen_at, sent_due_at, delivered_due_at,"
    " missed_sent, missed_delivered"
)
LIST_SQL = (
    f"SELECT {_SUMMARY} FROM rm.messages WHERE channel = $1"
    " ORDER BY first_position DESC, key LIMIT 50"
)
# the API's keyset predicate (projections/readmodel/query.py): newest first, then by key
CURSOR_SQL = (
    f"SELECT {_SUMMARY} FROM rm.messages WHERE channel = $1"
    " AND first_position <= $2 AND (first_position < $2 OR key > $3)"
    " ORDER BY first_position DESC, key LIMIT 50"
)


async def top_up(dsn: str, target: int) -> dict[str, Any]:
    """Make rm.messages hold at least ``target`` messages (copies under new keys)."""
    conn = await asyncpg.connect(dsn)
    try:
        folded = int(await conn.fetchval("SELECT count(*) FROM rm.messages"))
        copies = max(-(-target // max(folded, 1)) - 1, 0)
        started = time.perf_counter()
        if copies:
            shift = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
            cols = await _columns(conn, "messages")
            select = ", ".join(
                "m.key || '~' || g"
                if c == "key"
                else f"m.{c} + g * {shift}"
                if c in ("first_position", "last_position")
                else f"m.{c}"
                for c in cols
            )
            await conn.execute(
                f"INSERT INTO rm.messages ({', '.join(cols)}) SELECT {select}"
                f" FROM rm.messages m CROSS JOIN generate_series(1, {copies}) g"
                f" ORDER BY g, m.first_position LIMIT {target - folded}"
            )
            tcols = await _columns(conn, "timeline")
            tselect = ", ".join(
                "t.key || '~' || g"
                if c == "key"
                else f"t.position + g * {shift}"
                if c == "position"
                else f"t.{c}"
                for c in tcols
            )
            await conn.execute(
                f"INSERT INTO rm.timeline ({', '.join(tcols)}) SELECT {tselect}"
                f" FROM rm.timeline t CROSS JOIN generate_series(1, {copies}) g"
                f" WHERE EXISTS (SELECT 1 FROM rm.messages m"
                f" WHERE m.channel = t.channel AND m.key = t.key || '~' || g)"
            )
        await conn.execute("VACUUM ANALYZE rm.messages")
        await conn.execute("VACUUM ANALYZE rm.timeline")
        total = int(await conn.fetchval("SELECT count(*) FROM rm.messages"))
        timeline = int(await conn.fetchval("SELECT count(*) FROM rm.timeline"))
    finally:
        await conn.close()
    return {
        "folded_messages": folded,
        "copies_per_message": copies,
        "messages": total,
        "timeline_rows": timeline,
        "top_up_seconds": time.perf_counter() - started,
    }


async def _columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'rm' AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [r["column_name"] for r in rows]


async def _sample(conn: asyncpg.Connection, n: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT channel, key, first_position FROM rm.messages TABLESAMPLE SYSTEM (5)"
            " ORDER BY random() LIMIT $1",
            n,
        )
    )


async def _time(
    conn: asyncpg.Connection, sql: str, args: list[tuple[Any, ...]]
) -> dict[str, float]:
    stmt = await conn.prepare(sql)
    for a in args[:50]:  # warm the cache the way a running service has it warm
        await stmt.fetch(*a)
    lat = []
    for a in args:
        t0 = time.perf_counter()
        await stmt.fetch(*a)
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return {**percentiles(lat), "queries": len(lat)}


async def _plan(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> list[str]:
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
    return [r[0] for r in rows]


async def sql_bench(dsn: str, runs: int, per_run: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        sample = await _sample(conn, per_run)
        rng = random.Random(7)
        timeline_args = [(r["channel"], r["key"]) for r in sample]
        channels = sorted({r["channel"] for r in sample})
        list_args = [(rng.choice(channels),) for _ in sample]
        cursor_args = [(r["channel"], r["first_position"], r["key"]) for r in sample]
        out: dict[str, Any] = {}
        for name, sql, args in (
            ("timeline", TIMELINE_SQL, timeline_args),
            ("list_first_page", LIST_SQL, list_args),
            ("list_keyset_cursor", CURSOR_SQL, cursor_args),
        ):
            each = []
            for _ in range(runs):
                rng.shuffle(args)
                each.append(await _time(conn, sql, args))
            out[name] = {
                "p50_ms": median_of(each, "p50"),
                "p99_ms": median_of(each, "p99"),
                "max_ms": median_of(each, "max"),
                "queries_per_run": len(args),
                "runs": each,
                "plan": await _plan(conn, sql, args[0]),
            }
            log(
                f"  sql {name:19}: p50 {out[name]['p50_ms']:.3f} ms"
                f"  p99 {out[name]['p99_ms']:.3f} ms"
            )
        return out
    finally:
        await conn.close()


def api_available() -> bool:
    try:
        import service.api.routes  # noqa: F401
    except ImportError:
        return False
    return True


def console_available() -> bool:
    try:
        import service.console  # noqa: F401
    except ImportError:
        return False
    return True


async def http_bench(
    dsn: str, workdir: Path, runs: int, duration: float, connections: int, use_wrk: bool
) -> dict[str, Any]:
    from service.reads.params import encode_cursor

    conn = await asyncpg.connect(dsn)
    try:
        sample = await _sample(conn, 5000)
    finally:
        await conn.close()

    def q(s: str) -> str:
        return urllib.parse.quote(s, safe="")

    files = {
        "message_detail": [
            f"/v1/channels/{q(r['channel'])}/messages/{q(r['key'])}" for r in sample
        ],
        "list_with_cursor": [
            f"/v1/channels/{q(r['channel'])}/messages?limit=50"
            f"&cursor={encode_cursor(r['first_position'], r['key'])}"
            for r in sample
        ],
    }
    out: dict[str, Any] = {}
    with servers.acklog(dsn, workdir, projector=False, name="acklog-api") as server:
        for name, paths in files.items():
            path_file = workdir / f"{name}.paths"
            path_file.write_text("\n".join(paths) + "\n")
            auth = f"Bearer {servers.API_KEY}"
            await asyncio.to_thread(
                wrkrun.get_paths, server.url, path_file, auth, connections, 1.0, use_wrk=use_wrk
            )
            each = []
            for _ in range(runs):
                each.append(
                    await asyncio.to_thread(
                        wrkrun.get_paths,
                        server.url,
                        path_file,
                        auth,
                        connections,
                        duration,
                        use_wrk=use_wrk,
                    )
                )
            out[name] = {
                "rps": median_of(each, "ok_rps"),
                "p50_ms": median_of(each, "latency_ms.p50"),
                "p99_ms": median_of(each, "latency_ms.p99"),
                "max_ms": median_of(each, "latency_ms.max"),
                "errors": sum(int(r["errors"]) for r in each),
                "connections": connections,
                "runs": each,
            }
            log(
                f"  http {name:17}: {out[name]['rps']:7,.0f}/s  p50 {out[name]['p50_ms']:.2f} ms"
                f"  p99 {out[name]['p99_ms']:.2f} ms  errors {out[name]['errors']}"
            )
    return out
