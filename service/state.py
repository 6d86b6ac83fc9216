"""Typed application state keys (aiohttp's ``web.AppKey``)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from eventstore.append import Appender
from projections.runner import Clock, Projector
from service.apikey import ApiKey
from service.auth import FailureLimiter
from service.channels import ChannelCache
from service.config import Settings

SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
#: the query API's own pool: an API query never waits for, nor holds, an ingest connection
API_POOL = web.AppKey("api_pool", asyncpg.Pool)
APPENDER = web.AppKey("appender", Appender)
CHANNELS = web.AppKey("channels", ChannelCache)
LIMITER = web.AppKey("limiter", FailureLimiter)
#: wrong API keys per client address, one count for ``/v1`` and the console's sign-in alike
KEY_FAILURES = web.AppKey("key_failures", FailureLimiter)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
PROJECTOR = web.AppKey("projector", Projector)
API_KEY = web.AppKey("api_key", ApiKey)
