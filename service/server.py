"""Serving the app with limits aiohttp lacks: a header-read timeout and a connection cap.

aiohttp bounds header sizes and counts but will wait forever for a client that sends its
request head one byte a minute, and accepts any number of connections. The guard wraps
aiohttp's protocol factory: a connection must finish its first request head within
``header_timeout`` seconds, and past ``max_connections`` new connections are closed at once
(the provider retries; established ones keep working).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any, cast

import msgspec
from aiohttp import web

log = logging.getLogger(__name__)


class GuardedProtocol(asyncio.Protocol):
    """Delegates to aiohttp's handler; drops slow or excess connections."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's TCP transports do not subclass asyncio's
        self._transport = cast(asyncio.Transport, transport)
        self._guard.active += 1
        if self._guard.active > self._guard.max_connections:
            self._guard.refused += 1
            self._transport.abort()
            return
        self._timer = asyncio.get_running_loop().call_later(
            self._guard.header_timeout, self._too_slow
        )
        self._inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._guard.timed_out += 1
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            # the blank line that ends the request head may straddle two reads
            window = self._tail + data
            if b"\r\n\r\n" in window:
                self._timer.cancel()
                self._timer = None
            self._tail = window[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.active -= 1
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(Exception):
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionGuard:
    def __init__(
        self, factory: Callable[[], Any], *, max_connections: int, header_timeout: float
    ) -> None:
        self._factory = factory
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.active = 0
        self.refused = 0
        self.timed_out = 0

    def __call__(self) -> GuardedProtocol:
        return GuardedProtocol(self._factory(), self)


class Serving(msgspec.Struct):
    """What ``start`` set up, so it can be closed in the right order."""

    runner: web.AppRunner
    server: asyncio.Server | None
    guard: ConnectionGuard
    metrics_runner: web.AppRunner | None = None
    unix_site: web.UnixSite | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.unix_site is not None:
            await self.unix_site.stop()
        if self.server is not None:
            await self.server.wait_closed()
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        await self.runner.cleanup()


def metrics_only_app() -> web.Application:
    """``/metrics`` alone, for ``ACKLOG_METRICS_PORT`` (scrapes kept off the webhook port)."""
    from service.app import metrics_view

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics_view)])
    return app


async def start(
    app: web.Application,
    host: str,
    port: int | None,
    *,
    max_connections: int,
    header_timeout: float,
    keepalive_timeout: float = 75.0,
    metrics_port: int | None = None,
    reuse_port: bool = False,
    unix_path: str | None = None,
) -> Serving:
    """Serve ``app`` on ``host:port`` behind the guard; ``reuse_port`` lets several processes
    share the port (the kernel spreads connections); ``unix_path`` adds a unix socket (the
    ingest workers' relay to the API process: a trusted local peer, so no guard)."""
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=keepalive_timeout,
        max_headers=100,
        max_field_size=8190,
        max_line_size=8190,
    )
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(
        runner.server, max_connections=max_connections, header_timeout=header_timeout
    )
    server = None
    if port is not None:  # None: the unix socket only
        server = await asyncio.get_running_loop().create_server(
            guard,
            host,
            port,
            backlog=min(max_connections, 4096),
            reuse_address=True,
            reuse_port=reuse_port or None,
        )
    serving = Serving(runner=runner, server=server, guard=guard)
    if unix_path is not None:
        serving.unix_site = web.UnixSite(runner, unix_path)
        await serving.unix_site.start()
    if metrics_port is not None:
        serving.metrics_runner = web.AppRunner(metrics_only_app(), access_log=None)
        await serving.metrics_runner.setup()
        await web.TCPSite(serving.metrics_runner, host, metrics_port).start()
    return serving


async def serve_forever(
    app: web.Application,
    host: str,
    port: int | None,
    *,
    max_connections: int,
    header_timeout: float,
    metrics_port: int | None = None,
    reuse_port: bool = False,
    unix_path: str | None = None,
    on_ready: Callable[[], None],
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (cleanup_ctx runs)."""
    serving = await start(
        app,
        host,
        port,
        max_connections=max_connections,
        header_timeout=header_timeout,
        metrics_port=metrics_port,
        reuse_port=reuse_port,
        unix_path=unix_path,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    on_ready()
    try:
        await stop.wait()
    finally:
        await serving.close()
