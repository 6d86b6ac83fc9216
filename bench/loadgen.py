"""The bench's own load generator, run as a separate process (``python -m bench.loadgen``).

A lean HTTP/1.1 client on asyncio protocols (keep-alive, one request in flight per
connection, requests pre-encoded) so that the client costs little of the machine's two
cores. Two modes, always bounded in time, loopback only:

* ``closed``: N connections, each sends its next request as soon as the last is answered
  (what wrk does); latency is request to answer.
* ``paced``: an open loop at a fixed rate (wrk2-like): request *i* is due at ``start + i/rate``
  and its latency runs from when it was due, so a stalled server cannot hide its queue
  (no coordinated omission). Connections are opened as needed, up to ``--connections``.

Requests are the webhook mix (``--mix``, ids varied with ``--prefix``) or GETs of the paths
in a file (``--paths``). One JSON object on stdout: counts by status, latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import urllib.parse
from array import array
from collections.abc import Callable
from typing import Any

from bench.stats import percentiles


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends bytes and returns the status code."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._need: int | None = None
        self._status = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._waiter is not None:
            if self._need is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self._buf[:end]).lower()
                self._status = int(head[9:12])
                i = head.find(b"\r\ncontent-length:")
                length = int(head[i + 17 : head.find(b"\r\n", i + 2)]) if i >= 0 else 0
                self._need = end + 4 + length
            if len(self._buf) < self._need:
                return
            del self._buf[: self._need]
            self._need = None
            waiter, self._waiter = self._waiter, None
            if not waiter.done():
                waiter.set_result(self._status)

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter


Source = Callable[[int], bytes]


def mix_source(host: str, prefix: str) -> Source:
    """Request ``n`` of the webhook mix, as bytes on the wire."""
    from bench.db import channel_name, token
    from bench.mix import Mix

    mix = Mix()
    heads = {}
    for t in mix.templates:
        path = f"/hooks/{channel_name(t.provider)}?token={urllib.parse.quote(token(t.provider))}"
        heads[t.provider] = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {t.provider}-webhooks/1.0\r\n"
            f"Content-Type: {t.content_type}\r\nContent-Length: "
        ).encode()

    def make(n: int) -> bytes:
        t, body = mix.body(n, prefix)
        return heads[t.provider] + str(len(body)).encode() + b"\r\n\r\n" + body

    return make


def paths_source(host: str, paths_file: str, authorization: str | None) -> Source:
    with open(paths_file, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    wire = [f"GET {p} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode() for p in paths]

    def make(n: int) -> bytes:
        return wire[n % len(wire)]

    return make


class Recorder:
    def __init__(self) -> None:
        self.latencies = array("d")
        self.statuses: dict[int, int] = {}
        self.errors = 0

    def record(self, status: int, seconds: float) -> None:
        self.latencies.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def summary(self, duration: float, **extra: Any) -> dict[str, Any]:
        lat = sorted(self.latencies)
        done = len(lat)
        ok = self.statuses.get(200, 0)
        return {
            "requests": done,
            "ok": ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors + done - ok,
            "duration": duration,
            "rps": done / duration if duration else 0.0,
            "ok_rps": ok / duration if duration else 0.0,
            "latency_ms": {k: v * 1000 for k, v in percentiles(lat).items()},
            **extra,
        }


async def _connect(host: str, port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(HttpConnection, host, port)
    return proto


async def closed_loop(
    host: str, port: int, source: Source, connections: int, duration: float
) -> dict[str, Any]:
    rec = Recorder()
    counter = iter(range(10**12))
    conns = await asyncio.gather(*(_connect(host, port) for _ in range(connections)))
    start = time.perf_counter()
    deadline = start + duration

    async def worker(conn: HttpConnection) -> None:
        while time.perf_counter() < deadline:
            data = source(next(counter))
            t0 = time.perf_counter()
            try:
                status = await conn.request(data)
            except ConnectionError:
                rec.errors += 1
                conn = await _connect(host, port)
                continue
            rec.record(status, time.perf_counter() - t0)

    # every request sent is awaited: the count of 200s is exact, nothing is left in flight
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return rec.summary(elapsed, mode="closed", connections=connections)


async def paced(
    host: str, port: int, source: Source, rate: float, connections: int, duration: float
) -> dict[str, Any]:
    """Open loop: request i is due at start + i/rate; late starts count in its latency."""
    rec = Recorder()
    idle: list[HttpConnection] = []
    opened = 0
    waiting = asyncio.Event()
    behind = 0  # due requests that found no free connection (the client's own limit)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    total = int(rate * duration)

    async def one(n: int, due: float, conn: HttpConnection) -> None:
        nonlocal opened
        try:
            status = await conn.request(source(n))
        except ConnectionError:
            rec.errors += 1
            opened -= 1
            return
        rec.record(status, loop.time() - due)
        idle.append(conn)
        waiting.set()

    unsent = 0
    for n in range(total):
        due = start + n / rate
        if loop.time() > start + duration + 0.5:
            unsent = total - n  # the server fell so far behind that the run is over
            break
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        while not idle:
            if opened < connections:
                opened += 1
                idle.append(await _connect(host, port))
                break
            behind += 1
            waiting.clear()
            await waiting.wait()
        task = asyncio.create_task(one(n, due, idle.pop()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    elapsed = loop.time() - start
    for c in idle:
        if c.transport is not None:
            c.transport.close()
    return rec.summary(
        elapsed,
        mode="paced",
        offered_rps=rate,
        connections_used=opened,
        client_behind=behind,
        unsent=unsent,
    )


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("--url", required=True, help="http://127.0.0.1:PORT (loopback only)")
    p.add_argument("--mode", choices=("closed", "paced"), default="closed")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=1000.0, help="requests/s (paced)")
    p.add_argument("--mix", action="store_true", help="POST the webhook mix")
    p.add_argument("--prefix", default="1", help="digits that make this run's ids unique")
    p.add_argument("--paths", help="GET these paths (one per line), in turn")
    p.add_argument("--authorization", help="Authorization header for --paths")
    return p.parse_args(argv)


async def main(argv: list[str]) -> dict[str, Any]:
    args = parse(argv)
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the load generator only targets loopback addresses")
    hostport = f"{host}:{port}"
    if args.paths:
        source = paths_source(hostport, args.paths, args.authorization)
    else:
        source = mix_source(hostport, args.prefix)
    if args.mode == "paced":
        return await paced(host, port, source, args.rate, args.connections, args.duration)
    return await closed_loop(host, port, source, args.connections, args.duration)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(main(sys.argv[1:]))), flush=True)
