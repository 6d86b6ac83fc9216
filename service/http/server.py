"""Serving the app with limits aiohttp lacks: header-read timeouts and connection caps.

aiohttp bounds header sizes and counts and closes idle keep-alive connections
(``keepalive_timeout``), but waits for a client that sends a request head one byte at a
time for as long as the connection is otherwise busy, and accepts any number of connections
from anyone. The guard wraps aiohttp's protocol factory (it works with asyncio's and
uvloop's transports alike):

- every request head, the first on a connection or the tenth on a keep-alive one, must be
  complete ``header_timeout`` seconds after its first byte arrived (after the connection
  opened, for the first), else the connection is closed. A request reaching the app (the
  outermost middleware) is the sign that its head is complete, so aiohttp's parser stays
  the only one; idle time between requests is aiohttp's ``keepalive_timeout``;
- past ``max_connections`` open connections, or past ``per_client`` from one client address
  (IPv6 counted per /64), new connections are closed at once; the provider retries and the
  open ones keep working. Trusted proxies are exempt from the per-client cap: they carry
  many clients' traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
from aiohttp import web

from service.core import lifetime, logs
from service.core.config import SETTINGS, Settings
from service.http.clientaddr import trusted_proxies
from service.metrics import registry as metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_connections: int = 1024
    per_client: int = 512
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_connections=settings.max_connections,
            per_client=settings.per_client_connections,
            header_timeout=settings.header_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            trusted_proxies=settings.trusted_proxies,
        )


def client_key(peername: Any) -> str | None:
    """What the per-client cap counts: the IPv4 address, or the IPv6 /64 (None: no address)."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    host = peername[0]
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class GuardedProtocol(asyncio.Protocol):
    """Delegates to aiohttp's handler; drops slow or excess connections."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._client: str | None = None
        #: loop time the current request head began (None: no head pending)
        self.head_since: float | None = None
        #: a request is being handled: bytes now are its body, not a new head
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's TCP transports do not subclass asyncio's
        self._transport = cast(asyncio.Transport, transport)
        guard = self._guard
        guard.active += 1
        if guard.active > guard.limits.max_connections:
            guard.refused += 1
            metrics.connections_closed.labels("max_connections").inc()
            self._transport.abort()
            return
        peer = transport.get_extra_info("peername")
        client = client_key(peer)
        if client is not None and not (guard.proxies.networks and guard.proxies.trusts(peer[0])):
            self._client = client
            count = guard.per_client.get(client, 0) + 1
            guard.per_client[client] = count
            if count > guard.limits.per_client:
                guard.refused_per_client += 1
                metrics.connections_closed.labels("per_client").inc()
                self._transport.abort()
                return
        self.head_since = guard.loop.time()
        guard.watch(self._inner, self)
        self._inner.connection_made(transport)

    def too_slow(self) -> None:
        self.head_since = None
        self._guard.timed_out += 1
        metrics.connections_closed.labels("header_timeout").inc()
        if self._transport is not None:
            self._transport.abort()

    def head_arrived(self) -> None:
        self._busy = True
        self.head_since = None

    def request_done(self) -> None:
        self._busy = False

    def data_received(self, data: bytes) -> None:
        if self.head_since is None and not self._busy:
            # the first bytes of the next request head on a keep-alive connection
            self.head_since = self._guard.loop.time()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        guard = self._guard
        guard.active -= 1
        if self._client is not None:
            left = guard.per_client[self._client] - 1
            if left:
                guard.per_client[self._client] = left
            else:
                del guard.per_client[self._client]
        self.head_since = None
        guard.protocols.pop(self._inner, None)
        with contextlib.suppress(Exception):
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionGuard:
    """The limits' bookkeeping. Header deadlines are checked by one sweep every quarter of
    ``header_timeout`` (at most 1 s) rather than a timer per request: a keep-alive request
    then costs one clock read, and a slow head is closed at most one sweep after its deadline."""

    def __init__(self, limits: Limits) -> None:
        #: aiohttp's protocol factory (the runner's server), set once the runner is set up
        self.factory: Callable[[], Any] | None = None
        self.limits = limits
        self.proxies = trusted_proxies(limits.trusted_proxies)
        self.loop = asyncio.get_running_loop()
        self.active = 0
        self.per_client: dict[str, int] = {}
        self.protocols: dict[object, GuardedProtocol] = {}
        self.refused = 0
        self.refused_per_client = 0
        self.timed_out = 0
        self._interval = min(max(limits.header_timeout / 4, 0.05), 1.0)
        self._sweeper: asyncio.TimerHandle | None = None
        #: requests inside the app now; ``idle`` is set when there are none
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.draining = False

    def __call__(self) -> GuardedProtocol:
        assert self.factory is not None
        return GuardedProtocol(self.factory(), self)

    def watch(self, inner: object, guarded: GuardedProtocol) -> None:
        self.protocols[inner] = guarded
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._interval, self._sweep)

    def _sweep(self) -> None:
        deadline = self.loop.time() - self.limits.header_timeout
        slow = [
            p
            for p in self.protocols.values()
            if p.head_since is not None and p.head_since <= deadline
        ]
        for guarded in slow:
            guarded.too_slow()
        self._sweeper = None
        if self.protocols:
            self._sweeper = self.loop.call_later(self._interval, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The outermost middleware: a request reaching the app has a complete head. It also
        counts the requests in flight, so a shutdown can wait for them (``drain``)."""
        self.in_flight += 1
        self.idle.clear()
        guarded = self.protocols.get(request.protocol)
        if guarded is not None:
            guarded.head_arrived()
        try:
            response = await handler(request)
            if self.draining:
                response.force_close()  # answered; no next request on this connection
            return response
        finally:
            if guarded is not None:
                guarded.request_done()
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until every request that reached the app is answered.

        aiohttp's own graceful shutdown stops reading from connections first, so a request
        whose body was still arriving would never complete; draining before it lets those
        requests finish, and their connections close once answered."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.idle.wait()


#: seconds a shutdown waits for requests in flight (within ``acklog serve``'s 30 s grace)
DRAIN_SECONDS = 20.0
#: seconds after the drain for closing (connections, the pool) before the process exits anyway
STOP_MARGIN = 5.0

#: set when the server begins to shut down, before the drain: endless answers (SSE streams,
#: relayed or not) end then, so the drain never waits for them
SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)


def shutting_down(request: web.Request) -> asyncio.Event:
    """The event set when this request's server begins to shut down (one that is never set
    for an app not served by :func:`start`, e.g. in tests)."""
    event = request.config_dict.get(SHUTTING_DOWN)
    return event if event is not None else asyncio.Event()


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

    async def close(self, drain: float = DRAIN_SECONDS) -> None:
        self.runner.app[SHUTTING_DOWN].set()
        self.guard.close()
        if self.server is not None:
            self.server.close()
        if self.unix_site is not None:
            await self.unix_site.stop()
        if self.server is not None:
            await self.server.wait_closed()
        await self.guard.drain(drain)
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        await self.runner.cleanup()


def metrics_only_app() -> web.Application:
    """``/metrics`` alone, for ``ACKLOG_METRICS_PORT`` (scrapes kept off the webhook port)."""
    app = web.Application()
    app.add_routes([web.get("/metrics", metrics.metrics_view)])
    return app


async def start(
    app: web.Application,
    host: str,
    port: int | None,
    *,
    limits: Limits | None = None,
    metrics_port: int | None = None,
    reuse_port: bool = False,
    unix_path: str | None = None,
) -> Serving:
    """Serve ``app`` on ``host:port`` behind the guard; ``reuse_port`` lets several processes
    share the port (the kernel spreads connections); ``unix_path`` adds a unix socket (the
    ingest workers' relay to the API process: a trusted local peer, so no guard). ``limits``
    default to the app's settings."""
    limits = limits or Limits.of(app[SETTINGS])
    access_log = app[SETTINGS].access_log
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger(logs.ACCESS_LOGGER) if access_log else None,
        access_log_class=logs.AccessLogger,
        keepalive_timeout=limits.keepalive_timeout,
        max_headers=100,
        max_field_size=8190,
        max_line_size=8190,
        # the stored body is the bytes received (a gzip body stays gzip): signatures are over
        # those bytes, and decoding is the projector's job
        auto_decompress=False,
    )
    guard = ConnectionGuard(limits)
    app.middlewares.insert(0, guard.middleware)  # before setup: the app is frozen there
    app[SHUTTING_DOWN] = asyncio.Event()
    await runner.setup()
    assert runner.server is not None
    guard.factory = runner.server
    server = None
    if port is not None:  # None: the unix socket only
        server = await asyncio.get_running_loop().create_server(
            guard,
            host,
            port,
            backlog=min(limits.max_connections, 4096),
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
    metrics_port: int | None = None,
    reuse_port: bool = False,
    unix_path: str | None = None,
    on_ready: Callable[[], None],
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (cleanup_ctx runs)."""
    serving = await start(
        app, host, port, metrics_port=metrics_port, reuse_port=reuse_port, unix_path=unix_path
    )
    stop = asyncio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not received:  # the drain's bound, then exit even if closing hangs (core.lifetime)
            lifetime.leave_after(DRAIN_SECONDS + STOP_MARGIN, "the server")
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    on_ready()
    try:
        await stop.wait()
        log.info("%s received: shutting down (answering pending webhooks first)", received[0])
    finally:
        await serving.close()
