"""Console pages against the query phase's database (a folded 1M-event log, 1M messages).

Each page is fetched one request at a time by a signed-in client (the login form, then the
session cookie), after a warm-up, so the figures are the latency a person sees: p50, p99
and max per page over ``per_run`` requests, the median of ``runs`` runs. Message pages and
searches use keys and phone digits sampled from ``rm.messages``.

Alone: ``python -m bench.console --dsn DSN`` on a database the projection phase left.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import servers
from bench.progress import log
from bench.stats import median_of, percentiles


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


async def _paths(dsn: str, n: int) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        sample = await conn.fetch(
            "SELECT channel, key, chat, first_position FROM rm.messages TABLESAMPLE SYSTEM (5)"
            " ORDER BY random() LIMIT $1",
            n,
        )
        head = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    finally:
        await conn.close()
    rng = random.Random(11)
    channels = sorted({r["channel"] for r in sample})
    digits = [re.sub(r"\D", "", r["chat"] or "")[-8:] for r in sample if r["chat"]]
    return {
        "channels": ["/ui/"] * n,
        "messages_first_page": [f"/ui/channels/{_q(rng.choice(channels))}" for _ in sample],
        "message": [f"/ui/channels/{_q(r['channel'])}/messages/{_q(r['key'])}" for r in sample],
        "search_phone": [
            f"/ui/channels/{_q(r['channel'])}?q={d}"
            for r, d in zip(sample, digits or ["0"], strict=False)
        ],
        "failed_filter": [f"/ui/channels/{_q(rng.choice(channels))}?failed=true" for _ in sample],
        "events_newest": [f"/ui/events?before={rng.randint(100, head + 1)}" for _ in sample],
        "events_channel": [f"/ui/events?channel={_q(rng.choice(channels))}" for _ in sample],
        "events_duplicates": ["/ui/events?duplicate=true"] * n,
        "event": [f"/ui/events/{rng.randint(1, max(head, 1))}" for _ in sample],
        "quarantine": ["/ui/quarantine"] * n,
        "projector": ["/ui/projector"] * n,
    }


async def _sign_in(s: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 60  # the API process may still be starting (503 meanwhile)
    while True:
        async with s.get(f"{base}/ui/login") as r:
            token = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        if token or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if token is None:
        raise RuntimeError(f"no console login form at {base} (last answer {r.status})")
    async with s.post(
        f"{base}/ui/login",
        data={"csrf": token.group(1), "key": servers.API_KEY, "next": "/ui/"},
        headers={"Origin": base},
        allow_redirects=False,
    ) as r:
        if r.status != 303:
            raise RuntimeError(f"console sign-in answered {r.status}")


async def _time(s: aiohttp.ClientSession, base: str, paths: list[str]) -> dict[str, Any]:
    lat, failed = [], []
    for path in paths:
        t0 = time.perf_counter()
        async with s.get(base + path, allow_redirects=False) as r:
            await r.read()
            if r.status != 200:
                failed.append(f"{r.status} {path[:120]}")
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return {**percentiles(lat), "requests": len(lat), "errors": len(failed), "failed": failed}


async def page_bench(dsn: str, workdir: Path, runs: int, per_run: int = 40) -> dict[str, Any]:
    pages = await _paths(dsn, per_run)
    out: dict[str, Any] = {}
    with servers.acklog(dsn, workdir, projector=False, name="acklog-console") as server:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            await _sign_in(s, server.url)
            for name, paths in pages.items():
                await _time(s, server.url, paths[:5])  # warm-up
                each = [await _time(s, server.url, paths) for _ in range(runs)]
                out[name] = {
                    "p50_ms": median_of(each, "p50"),
                    "p99_ms": median_of(each, "p99"),
                    "max_ms": median_of(each, "max"),
                    "errors": sum(int(r["errors"]) for r in each),
                    "requests_per_run": len(paths),
                    "runs": each,
                }
                log(
                    f"  console {name:20}: p50 {out[name]['p50_ms']:7.2f} ms"
                    f"  p99 {out[name]['p99_ms']:7.2f} ms  errors {out[name]['errors']}"
                )
                for failure in sorted({f for r in each for f in r["failed"]})[:3]:
                    log(f"    failed: {failure}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--per-run", type=int, default=40)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="acklog-bench-console-") as work:
        asyncio.run(page_bench(args.dsn, Path(work), args.runs, args.per_run))


if __name__ == "__main__":
    main()
