"""Ingest workers forward every non-webhook path to the API process, streaming both ways.

``acklog serve`` runs its ingest workers on the public port with ``SO_REUSEPORT``, so the
kernel hands any connection to any worker. The query API, console and ``/metrics`` run in a
process of their own (invariant 12: never on the ingest event loop, never on its pool); a
worker that receives such a request relays it over a unix socket (or TCP) to that process.
Relaying is cheap and bounded: the body is passed through in chunks (never buffered whole),
at most ``MAX_IN_FLIGHT`` requests per worker are relayed at once (others wait for a slot
without holding anything of ingest's), and the API process bounds every answer's size.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from yarl import URL

from service.http.responses import error

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
    )
)

SESSION = web.AppKey("proxy_session", aiohttp.ClientSession)
BASE = web.AppKey("proxy_base", URL)


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
        app[BASE] = base
        app[SESSION] = aiohttp.ClientSession(
            connector=connector,
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


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    url = request.app[BASE].join(URL(request.raw_path, encoded=True))
    headers = _passed(request.headers)
    # the address this worker saw, appended as every proxy does: the API process keys its
    # limits on it (``service.http.clientaddr``), so relayed clients never share one key
    headers.append(("X-Forwarded-For", request.remote or "unknown"))
    body = request.content if request.body_exists else None
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
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # the head is sent: all that can be done is to cut the answer short
            log.warning("the API process broke off %s: %s", request.path, exc)
            raise ConnectionResetError("upstream broke off") from exc
        await response.write_eof()
    return response
