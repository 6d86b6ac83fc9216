"""``/hooks/{channel}``: authenticate, append the raw bytes, answer only after COMMIT.

The hot path decodes nothing but the provider's event id (for deduplication, and for the
answer of a provider that wants it echoed); decoding is the projector's job. What a provider
needs (its signature, its answer) comes from its ``PROVIDER``: nothing here names one. It is kept lean on purpose (issue 11): no
timer per request unless the body is still arriving (the appender bounds the commit wait
once per batch), metric children looked up once, headers filtered by a cached rule per name,
answers encoded by hand.

Every "the database did not take it" path answers 503 with ``Retry-After`` (never 500): the
channel lookup, the refresh after a failed authentication, and the append. An event whose
data the database refuses (``EventRejected``) fails alone with 422; its batch neighbours
commit (``eventstore.append``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import zlib
from typing import Any

from aiohttp import web

from eventstore.append import Appender
from eventstore.channels import NAME_RE, Channel
from eventstore.errors import EventRejected, StoreUnavailable, store_boundary
from eventstore.events import NewEvent, dedup_key
from projections import providers
from projections.providers.base import Receipt
from service.core import logs
from service.core.config import SETTINGS
from service.http.clientaddr import client_address
from service.http.limiter import LIMITER
from service.http.responses import error
from service.ingest.auth import authenticate, covers_url, token_matches
from service.ingest.channels import CHANNELS
from service.ingest.headers import kept_headers
from service.ingest.readiness import APPENDS
from service.metrics import registry as metrics

log = logging.getLogger(__name__)

APPENDER = web.AppKey("appender", Appender)

RETRY_AFTER = "5"

_counters: dict[tuple[str, str, str], Any] = {}
_latency: dict[str, Any] = {}
_db_up: list[bool | None] = [None]


def _count(provider: str, channel: str, outcome: str) -> None:
    key = (provider, channel, outcome)
    child = _counters.get(key)
    if child is None:
        child = _counters[key] = metrics.webhooks_received.labels(provider, channel, outcome)
    child.inc()
    if outcome in logs.REFUSED_STATUS:  # one log line per refused webhook, rate-limited
        logs.REFUSED.note(provider, channel, outcome)


def _database_up(up: bool) -> None:
    if _db_up[0] is not up:
        _db_up[0] = up
        metrics.database_up.set(1 if up else 0)


def signed_url(request: web.Request) -> str:
    """The URL the provider called, as it signs it (public base URL when behind a proxy)."""
    public = request.app[SETTINGS].public_url
    if public:
        return public.rstrip("/") + str(request.rel_url)
    return str(request.url)


def unavailable(provider: str, channel: str, exc: BaseException) -> web.Response:
    """503 with Retry-After: the database did not take it; the provider retries."""
    # once per outage (then DEBUG until a commit succeeds): a busy endpoint would log a
    # line per webhook; acklog.refused still counts them, rate-limited
    level = logging.DEBUG if _db_up[0] is False else logging.WARNING
    log.log(level, "database unavailable, answering 503 until it is back: %s", exc)
    _count(provider, channel, "unavailable")
    _database_up(False)
    return error(
        503,
        "unavailable",
        "the event could not be stored; retry later",
        headers={"Retry-After": RETRY_AFTER},
    )


def _refuse(request: web.Request, channel: Channel | None, name: str, reason: str) -> web.Response:
    """An authentication failure: 401, or 429 once the client has failed too often."""
    limiter = request.app[LIMITER]
    client = client_address(request)
    provider = channel.provider if channel else "unknown"
    label = channel.name if channel else "unknown"
    wait = limiter.blocked_for(client)
    limiter.failed(client)
    if wait:
        _count(provider, label, "rate_limited")
        return error(
            429,
            "too_many_failures",
            "too many failed authentications from this address; retry later",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    if channel is None:
        _count(provider, label, "not_found")
        return error(404, "unknown_channel", f"no channel named {name[:64]!r}")
    _count(provider, label, "unauthorized")
    return error(401, "unauthorized", reason, headers={"WWW-Authenticate": "Bearer"})


async def _lookup(request: web.Request, name: str, *, fresh: bool = False) -> Channel | None:
    """The channel, from the cache when it is fresh; a rate-limited client never costs a query
    (it gets the stale entry, or None). Raises ``StoreUnavailable`` when the database is down
    and nothing is cached."""
    cache = request.app[CHANNELS]
    channel, current = cache.peek(name)
    if current and not fresh:
        return channel
    if request.app[LIMITER].blocked_for(client_address(request)):
        return channel
    try:
        with store_boundary():
            async with asyncio.timeout(request.app[SETTINGS].commit_timeout):
                return await (cache.refresh(name) if fresh else cache.get(name))
    except StoreUnavailable:
        if channel is None or fresh:
            raise
        return channel  # stale but known: the append will tell whether the database is back


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds ``limit`` (checked before and while reading)."""
    content = request.content
    if content.is_eof():  # the whole body arrived with the head: no wait, no timer
        body = content.read_nowait()
        return body if len(body) <= limit else None
    async with asyncio.timeout(request.app[SETTINGS].read_timeout):
        buf = bytearray()
        async for chunk in content.iter_chunked(64 * 1024):
            buf += chunk
            if len(buf) > limit:
                return None
    return bytes(buf)


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding, for the event id only (the stored bytes stay as
    received); bounded by ``limit``, and the raw body when it does not decompress."""
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15}.get(encoding.strip().lower())
    if wbits is None:
        return body
    try:
        return zlib.decompressobj(wbits).decompress(body, limit)
    except zlib.error:
        return body


async def receive(request: web.Request) -> web.Response:
    started = time.perf_counter()
    received_at = dt.datetime.now(dt.UTC)
    app = request.app
    settings = app[SETTINGS]
    name = request.match_info["channel"]
    try:
        channel = await _lookup(request, name) if NAME_RE.match(name) else None
    except StoreUnavailable as exc:
        return unavailable("unknown", "unknown", exc)
    if channel is None:
        return _refuse(request, None, name, "unknown channel")
    provider = channel.provider
    if request.content_length is not None and request.content_length > settings.max_body:
        body = None
    else:
        try:
            body = await _read_body(request, settings.max_body)
        except TimeoutError:
            _count(provider, channel.name, "bad_request")
            return error(408, "request_timeout", "the body was not received in time")
    if body is None:
        _count(provider, channel.name, "too_large")
        return error(
            413, "too_large", f"body exceeds {settings.max_body} bytes", limit=settings.max_body
        )
    if channel.allow_cidrs and not channel.allows(client_address(request)):
        _count(provider, channel.name, "unauthorized")
        return error(403, "forbidden", "client address is not in the channel's allow-list")

    headers = request.headers

    def check(channel: Channel) -> str | None:
        return authenticate(
            channel,
            query_token=request.query.get("token"),
            authorization=headers.get("Authorization"),
            headers=headers,
            body=body,
            url=signed_url(request) if covers_url(channel, headers) else "",
        )

    reason = check(channel)
    if reason is not None:
        # The cache may predate a token or secret just added: look once more before refusing.
        # Clients that keep failing are rate-limited first, so this costs no database load.
        try:
            fresh = await _lookup(request, name, fresh=True)
        except StoreUnavailable as exc:
            return unavailable(provider, channel.name, exc)
        if fresh is not None and fresh is not channel:
            channel, reason = fresh, check(fresh)
        if reason is not None:
            return _refuse(request, channel, name, reason)
    if not body:
        # no provider posts an empty body: nothing to keep, and a clear answer
        _count(provider, channel.name, "bad_request")
        return error(400, "empty_body", "the webhook has no body; nothing was stored")

    encoding = headers.get("Content-Encoding")
    plain = _decoded(body, encoding, settings.max_body) if encoding else body
    event_id = providers.event_id(provider, plain)
    stored_headers, content_type = kept_headers(request.raw_headers)
    event = NewEvent(
        channel=channel.name,
        provider=provider,
        body=body,
        received_at=received_at,
        content_type=content_type,
        headers=stored_headers,
        dedup_key=dedup_key(event_id, body),
    )
    try:
        appended = await app[APPENDER].append(event)
    except EventRejected as exc:
        log.error("event refused by the database (channel %s): %s", channel.name, exc)
        _count(provider, channel.name, "rejected")
        return error(422, "unstorable", f"the database refused this event: {exc}"[:500])
    except StoreUnavailable as exc:
        app[APPENDS].failed(f"{type(exc).__name__}: {exc}"[:200])
        return unavailable(provider, channel.name, exc)
    _database_up(True)
    app[APPENDS].stored()
    first = appended.duplicate_of
    _count(provider, channel.name, "stored" if first is None else "duplicate")
    latency = _latency.get(provider)
    if latency is None:
        latency = _latency[provider] = metrics.ingest_latency.labels(provider)
    latency.observe(time.perf_counter() - started)
    answer = providers.get(provider).answer
    if answer is not None:
        reply = answer(Receipt(event_id, appended.position, first))
        return web.Response(body=reply.body, status=reply.status, content_type=reply.content_type)
    if first is not None:
        return _answer(
            b'{"status":"duplicate","position":%d,"duplicate_of":%d}' % (appended.position, first)
        )
    return _answer(b'{"status":"stored","position":%d,"duplicate_of":null}' % appended.position)


def _answer(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def verify(request: web.Request) -> web.Response:
    """The subscription handshake (``hub.mode=subscribe``): echo ``hub.challenge`` when the
    verify token is one of the channel's."""
    name = request.match_info["channel"]
    try:
        channel = await _lookup(request, name) if NAME_RE.match(name) else None
    except StoreUnavailable as exc:
        return unavailable("unknown", "unknown", exc)
    if channel is None:
        return _refuse(request, None, name, "unknown channel")
    mode = request.query.get("hub.mode")
    token = request.query.get("hub.verify_token", "")
    challenge = request.query.get("hub.challenge")
    if mode != "subscribe" or challenge is None:
        return error(
            400,
            "bad_request",
            "GET is only for the verification handshake: hub.mode=subscribe, hub.verify_token"
            " and hub.challenge are required; webhooks are POSTed",
        )
    if not token_matches(channel, token):
        return _refuse(request, channel, name, "hub.verify_token is not a token of this channel")
    return web.Response(text=challenge, content_type="text/plain")


def routes() -> list[web.RouteDef]:
    return [web.post("/hooks/{channel}", receive), web.get("/hooks/{channel}", verify)]
