"""``/hooks/{channel}``: authenticate, append the raw bytes, answer only after COMMIT.

The hot path decodes nothing but what the answer needs (WhatsGate's event id, WAHA's for
deduplication); decoding is the projector's job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import asyncpg
from aiohttp import web

from eventstore.append import AppenderClosed
from eventstore.events import NewEvent
from projections import providers
from service import metrics
from service.auth import authenticate, token_matches
from service.channels import NAME_RE, Channel
from service.clientaddr import client_address
from service.readiness import APPENDS
from service.responses import error, json_response
from service.state import APPENDER, CHANNELS, LIMITER, SETTINGS

log = logging.getLogger(__name__)

#: Exceptions that mean "the database did not take it": answer 503, the provider retries.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    AppenderClosed,
)

_SECRET_WORDS = ("authorization", "cookie", "token", "secret", "password", "apikey", "api-key")
_MAX_HEADERS_KEPT = 64
_MAX_HEADER_VALUE = 1024


def kept_headers(request: web.Request) -> dict[str, str]:
    """Request headers worth keeping with the event; credentials never are (invariant 10)."""
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        lname = name.lower()
        if any(word in lname for word in _SECRET_WORDS):
            continue
        if len(out) >= _MAX_HEADERS_KEPT:
            break
        out[lname] = value[:_MAX_HEADER_VALUE]
    return out


def signed_url(request: web.Request) -> str:
    """The URL the provider called, as it signs it (public base URL when behind a proxy)."""
    public = request.app[SETTINGS].public_url
    if public:
        return public.rstrip("/") + str(request.rel_url)
    return str(request.url)


def _count(provider: str, channel: str, outcome: str) -> None:
    metrics.webhooks_received.labels(provider, channel, outcome).inc()


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


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds ``limit`` (checked before and while reading)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def receive(request: web.Request) -> web.Response:
    started = time.perf_counter()
    received_at = dt.datetime.now(dt.UTC)
    settings = request.app[SETTINGS]
    name = request.match_info["channel"]
    channel = await request.app[CHANNELS].get(name) if NAME_RE.match(name) else None
    if channel is None:
        return _refuse(request, None, name, "unknown channel")
    provider = channel.provider
    try:
        async with asyncio.timeout(settings.read_timeout):
            body = await _read_body(request, settings.max_body)
    except TimeoutError:
        _count(provider, channel.name, "bad_request")
        return error(408, "request_timeout", "the body was not received in time")
    if body is None:
        _count(provider, channel.name, "too_large")
        return error(
            413, "too_large", f"body exceeds {settings.max_body} bytes", limit=settings.max_body
        )
    if not channel.allows(client_address(request)):
        _count(provider, channel.name, "unauthorized")
        return error(403, "forbidden", "client address is not in the channel's allow-list")

    def check(channel: Channel) -> str | None:
        return authenticate(
            channel,
            query_token=request.query.get("token"),
            authorization=request.headers.get("Authorization"),
            headers=request.headers,
            body=body,
            # only Twilio signs the URL; building it costs ~4 µs per webhook otherwise
            url=signed_url(request) if "X-Twilio-Signature" in request.headers else "",
        )

    reason = check(channel)
    if reason is not None and not request.app[LIMITER].blocked_for(client_address(request)):
        # The cache may predate a token or secret just added: look once more before refusing.
        # Clients that keep failing are rate-limited first, so this costs no database load.
        fresh = await request.app[CHANNELS].refresh(name)
        if fresh is not None:
            channel, reason = fresh, check(fresh)
    if reason is not None:
        return _refuse(request, channel, name, reason)

    event_id = providers.event_id(provider, body)
    event = NewEvent(
        channel=channel.name,
        provider=provider,
        body=body,
        received_at=received_at,
        content_type=request.headers.get("Content-Type"),
        headers=kept_headers(request),
    ).with_dedup_key(event_id)
    try:
        async with asyncio.timeout(settings.commit_timeout):
            appended = await request.app[APPENDER].append(event)
    except UNAVAILABLE as exc:
        log.warning("append failed, answering 503: %s", exc)
        _count(provider, channel.name, "unavailable")
        metrics.database_up.set(0)
        request.app[APPENDS].failed(f"{type(exc).__name__}: {exc}"[:200])
        return error(
            503,
            "unavailable",
            "the event could not be stored; retry later",
            headers={"Retry-After": "5"},
        )
    metrics.database_up.set(1)
    request.app[APPENDS].stored()
    _count(provider, channel.name, "duplicate" if appended.duplicate_of else "stored")
    metrics.ingest_latency.labels(provider).observe(time.perf_counter() - started)
    if provider == "whatsgate":
        # WhatsGate retries until it sees its own event id echoed back.
        echoed: int | str | None = event_id
        if event_id is not None and event_id.isdigit():
            echoed = int(event_id)
        return json_response({"result": "OK", "id": echoed})
    return json_response(
        {
            "status": "duplicate" if appended.duplicate_of else "stored",
            "position": appended.position,
            "duplicate_of": appended.duplicate_of,
        }
    )


async def verify(request: web.Request) -> web.Response:
    """Meta's subscription handshake: echo ``hub.challenge`` when the verify token is ours."""
    name = request.match_info["channel"]
    channel = await request.app[CHANNELS].get(name) if NAME_RE.match(name) else None
    if channel is None:
        return _refuse(request, None, name, "unknown channel")
    mode = request.query.get("hub.mode")
    token = request.query.get("hub.verify_token", "")
    challenge = request.query.get("hub.challenge")
    if mode != "subscribe" or challenge is None:
        return error(
            400,
            "bad_request",
            "GET is only for Meta's verification: hub.mode=subscribe, hub.verify_token and"
            " hub.challenge are required; webhooks are POSTed",
        )
    if not token_matches(channel, token):
        return _refuse(request, channel, name, "hub.verify_token is not a token of this channel")
    return web.Response(text=challenge, content_type="text/plain")


def routes() -> list[web.RouteDef]:
    return [web.post("/hooks/{channel}", receive), web.get("/hooks/{channel}", verify)]
