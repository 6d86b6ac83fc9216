"""Ingest workers forward every non-webhook path to the API process, streaming answers back.

``acklog serve`` runs its ingest workers on the public port with ``SO_REUSEPORT``, so the
kernel hands any connection to any worker. The query API, console and ``/metrics`` run in a
process of their own (invariant 12: never on the ingest event loop, never on its pool); a
worker that receives such a request relays it over a unix socket (or TCP) to that process.

The relay is a pipe, never a client with a memory (issue 26):

- it keeps no state between requests: no cookie jar (a ``DummyCookieJar``), no credentials
  of its own, no headers it remembers; what identifies a client travels in that client's
  request and answer only;
- it only ever talks to its upstream: the target is the request's path and query joined to
  the upstream URL as text, so ``//other-host/x`` or an absolute-form target is a path there,
  never a host to fetch;
- a request body (the API takes small forms and JSON) is read whole, within
  ``ACKLOG_READ_TIMEOUT`` and ``ACKLOG_MAX_BODY``, *before* the request takes one of the
  ``MAX_IN_FLIGHT`` slots, and one client address holds at most ``ACKLOG_RELAY_PER_CLIENT``
  of them (429 past that): slow or many requests from one client never stall the others;
- forwarding headers are the relay's own: ``X-Forwarded-For`` gets the peer appended and
  ``X-Forwarded-Proto`` is set to the scheme the client really used (the TLS proxy's word
  only when the peer is a trusted proxy), whatever the client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import web
from yarl import URL

from service.core.config import SETTINGS
from service.http.clientaddr import client_address, client_scheme
from service.http.responses import error
from service.http.server import shutting_down

log = logging.getLogger(__name__)

#: relayed requests per ingest worker at once (the connector's limit)
MAX_IN_FLIGHT = 32
CHUNK = 64 * 1024

#: hop-by-hop headers (RFC 9110 §7.6.1) are the relay's own, never passed on
_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # forwarding headers: the relay writes its own (a client's claim is not passed on)
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
    )
)

SESSION = web.AppKey("proxy_session", aiohttp.ClientSession)
BASE = web.AppKey("proxy_base", str)
#: relayed requests in flight per client address (entries removed at zero: bounded)
IN_FLIGHT = web.AppKey("proxy_in_flight", dict[str, int])


def parse_upstream(upstream: str) -> tuple[URL, aiohttp.BaseConnector]:
    """``unix:/path/api.sock`` or ``http://host:port``: the base URL and a connector."""
    if upstream.startswith("unix:"):
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(
            path=upstream[len("unix:") :], limit=MAX_IN_FLIGHT
        )
        return URL("http://acklog-api"), connector
    return URL(upstream.rstrip("/")), aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)


def add_forwarding(app: web.Application, upstream: str | None) -> None:
    """Every path the app does not route itself goes to ``upstream`` (404 without one)."""
    if upstream is None:
        app.router.add_route("*", "/{tail:.*}", _no_api)
        return

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        base, connector = parse_upstream(upstream)
        app[BASE] = str(base)
        app[IN_FLIGHT] = {}
        app[SESSION] = aiohttp.ClientSession(
            connector=connector,
            # one session serves every client: it must remember nothing of any of them
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            # connect includes the wait for one of the MAX_IN_FLIGHT slots: a relay never queues forever
            timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_connect=5, sock_read=120),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)


async def _no_api(request: web.Request) -> web.Response:
    return error(
        404, "not_found", "this is an ingest-only process: the query API is served elsewhere"
    )


def _passed(headers: object) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = list(headers.items())  # type: ignore[attr-defined]
    return [(k, v) for k, v in items if k.lower() not in _HOP]


def target(base: str, request: web.Request) -> URL:
    """The upstream URL: the request's path and query appended to ``base`` as text, so no
    form of request target (``//host/x``, ``http://host/x``) can name another host."""
    rel = request.rel_url
    query = rel.raw_query_string
    return URL(f"{base}{rel.raw_path}{'?' + query if query else ''}", encoded=True)


async def forward(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    body: bytes | None = None
    if request.body_exists:
        # read whole before taking a slot: a slow body holds a connection, never a slot
        try:
            async with asyncio.timeout(settings.read_timeout):
                body = await request.read()
        except TimeoutError:
            return error(408, "request_timeout", "the request body did not arrive in time")
    client = client_address(request)
    in_flight = app[IN_FLIGHT]
    if in_flight.get(client, 0) >= settings.relay_per_client:
        return error(
            429,
            "too_many_requests",
            "too many requests from this address at once; retry shortly",
            headers={"Retry-After": "1"},
        )
    in_flight[client] = in_flight.get(client, 0) + 1
    try:
        return await _relay(request, body)
    finally:
        left = in_flight[client] - 1
        if left:
            in_flight[client] = left
        else:
            del in_flight[client]


async def _relay(request: web.Request, body: bytes | None) -> web.StreamResponse:
    session = request.app[SESSION]
    url = target(request.app[BASE], request)
    headers = _passed(request.headers)
    # the address this worker saw, appended as every proxy does: the API process keys its
    # limits on it (``service.http.clientaddr``), so relayed clients never share one key
    headers.append(("X-Forwarded-For", request.remote or "unknown"))
    headers.append(("X-Forwarded-Proto", client_scheme(request)))
    try:
        upstream = await session.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("the API process did not answer %s: %s", request.path, exc)
        return error(
            503,
            "api_unavailable",
            "the query API process is not answering; retry later",
            headers={"Retry-After": "5"},
        )
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in _passed(upstream.headers):
            response.headers.add(name, value)
        await response.prepare(request)
        pump = asyncio.create_task(_pump(upstream, response))
        try:
            if upstream.content_type == "text/event-stream":
                # an endless answer: this worker's shutdown ends it (the client resumes with
                # Last-Event-ID), or the drain would wait for it until SIGKILL
                stop = asyncio.create_task(shutting_down(request).wait())
                try:
                    await asyncio.wait((pump, stop), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                if pump.done():
                    await pump
            else:
                await pump
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # the head is sent: all that can be done is to cut the answer short, closing the
            # connection without the body's end (raising would log aiohttp's ERROR traceback)
            log.warning("the API process broke off %s: %s", request.path, exc)
            if request.transport is not None:
                request.transport.close()
            return response
        finally:
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        with contextlib.suppress(ConnectionError):  # the client left: nothing to end
            await response.write_eof()
    return response


async def _pump(upstream: aiohttp.ClientResponse, response: web.StreamResponse) -> None:
    """Upstream's body to the client; a client that left ends it quietly."""
    async for chunk in upstream.content.iter_chunked(CHUNK):
        try:
            await response.write(chunk)
        except ConnectionError:
            return
