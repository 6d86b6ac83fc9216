"""The ingest hot path, step by step: microseconds each step of ``receive`` costs per webhook.

Each step is the call ``service/ingest/hooks.py`` makes, on a mocked request carrying a webhook of
the mix (``aiohttp.test_utils.make_mocked_request``), timed in a loop in this process. The sum
is the handler's own share of a webhook; the rest of the server's CPU per webhook is aiohttp,
the event loop, sockets and the group commit.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from bench.db import channel_name, token
from bench.mix import Mix
from bench.stats import median
from eventstore.channels import Channel, token_hash
from eventstore.events import NewEvent, dedup_key
from projections import providers
from service.core.config import SETTINGS, Settings
from service.http.clientaddr import client_address
from service.http.responses import json_response
from service.ingest import hooks as ingest
from service.ingest.auth import authenticate
from service.ingest.headers import kept_headers
from service.metrics import registry as metrics


def _requests() -> list[tuple[web.Request, Channel, bytes]]:
    app = web.Application()
    app[SETTINGS] = Settings()
    out = []
    mix = Mix()
    for n in range(len(mix.deck)):
        t, body = mix.body(n, "3")
        path = f"/hooks/{channel_name(t.provider)}?token={urllib.parse.quote(token(t.provider))}"
        headers = CIMultiDict(
            {
                "Host": "127.0.0.1:8080",
                "User-Agent": f"{t.provider}-webhooks/1.0",
                "Content-Type": t.content_type,
                "Content-Length": str(len(body)),
            }
        )
        request = make_mocked_request("POST", path, headers=headers, app=app)
        channel = Channel(
            name=channel_name(t.provider),
            provider=t.provider,
            token_hashes=(token_hash(token(t.provider)),),
        )
        out.append((request, channel, body))
    return out


def _time(
    fn: Callable[[web.Request, Channel, bytes], object],
    items: list[tuple[web.Request, Channel, bytes, dict[str, Any]]],
) -> float:
    """Median of 5 passes over the mix, µs per call. aiohttp caches ``request.url``, ``query``
    and more on first use: each call gets the request's cache as it was when it arrived."""
    passes = []
    for _ in range(5):
        started = time.perf_counter()
        for request, channel, body, cache in items:
            request._cache = cache.copy()
            fn(request, channel, body)
        passes.append((time.perf_counter() - started) / len(items) * 1e6)
    return median(passes)


def _metrics(request: web.Request, channel: Channel, body: bytes) -> None:
    metrics.webhooks_received.labels(channel.provider, channel.name, "stored").inc()
    metrics.ingest_latency.labels(channel.provider).observe(0.004)


def run() -> dict[str, float]:
    steps: dict[str, Callable[[web.Request, Channel, bytes], object]] = {
        "kept_headers (filter and copy the headers)": lambda r, c, b: kept_headers(r.raw_headers),
        "signed_url (absolute URL, for Twilio signatures)": lambda r, c, b: ingest.signed_url(r),
        "client_address + allow-list": lambda r, c, b: c.allows(client_address(r)),
        "authenticate (signature headers, token SHA-256, compare)": lambda r, c, b: authenticate(
            c,
            query_token=r.query.get("token"),
            authorization=r.headers.get("Authorization"),
            headers=r.headers,
            body=b,
            url="",  # signed_url, timed above, is only read for Twilio signatures
        ),
        "providers.event_id (parse for WhatsGate/WAHA ids)": lambda r, c, b: providers.event_id(
            c.provider, b
        ),
        "NewEvent + dedup_key (body SHA-256)": lambda r, c, b: NewEvent(
            channel=c.name,
            provider=c.provider,
            body=b,
            received_at=dt.datetime.now(dt.UTC),
            content_type=r.headers.get("Content-Type"),
            headers={},
            dedup_key=dedup_key(None, b),
        ),
        "metrics (received counter + latency histogram)": _metrics,
        "json_response (answer body and headers)": lambda r, c, b: json_response(
            {"status": "stored", "position": 123456, "duplicate_of": None}
        ),
    }
    items = [(r, c, b, dict(r._cache)) for r, c, b in _requests() * 4]
    out = {name: _time(fn, items) for name, fn in steps.items()}
    return out
